"""requests.csv: one row per request, written as requests complete and read back as typed rows
(records.RequestRow) or as cells."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from pipeline.analysis.records import CLIENT, SINK, RequestRow, cell_value


def write_csv(path: Path, rows, columns: list[str]) -> None:
    """rows: RequestRow or dicts of cells."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(csv_cells(row, columns))


def csv_cells(row, columns) -> dict:
    """One row (a RequestRow, or a dict of cells) as requests.csv holds it; also appended one by
    one while a run goes."""
    cells = row.cells() if isinstance(row, RequestRow) else row
    return {k: _cell(cells.get(k)) for k in columns}


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6f}"
    return value


def read_csv(path: Path) -> list[dict]:
    """Rows back as dicts of cells, numbers parsed; empty cells become None."""
    with open(path, newline="") as f:
        return [{key: cell_value(key, text) for key, text in raw.items()} for raw in csv.DictReader(f)]


def damage(path: Path, requests: int | None) -> str | None:
    """What is wrong with a finished run's requests.csv, or None: the run writes it whole at its
    end (a header, then one row per request, `requests` of them as run.json counts them), so an
    empty file, a last line cut off, or fewer rows than requests is a damaged or cut copy, not
    a run without measured requests."""
    with open(path, newline="") as f:
        text = f.read()  # read once: the checks below look at its end and then its rows
    if not text.strip():
        return "empty, not even its header"
    if not text.endswith("\n"):
        return "its last line is cut off (the file does not end with a line break)"
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    rows = 0
    for row in reader:
        rows += 1
        if len(row) != len(header):
            return (f"row {rows} has {len(row)} of the header's {len(header)} cells "
                    "(a line cut off or run together)")
    if requests and rows < requests:
        return f"{rows} rows for the {requests} requests its run.json counts (cut off)"
    return None


def step_names_of(columns_or_cells) -> list[str]:
    """The step names a requests.csv header (or row) holds, in order."""
    names = []
    for key in columns_or_cells:
        if "." in key:
            name = key.split(".", 1)[0]
            if name not in (CLIENT, SINK) and name not in names:
                names.append(name)
    return names


def read_rows(path: Path, step_names=None) -> list[RequestRow]:
    """requests.csv as typed rows."""
    cells = read_csv(path)
    if step_names is None:
        step_names = step_names_of(cells[0]) if cells else []
    return [RequestRow.from_cells(c, step_names) for c in cells]
