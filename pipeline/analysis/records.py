"""Per-request timing records: the contract between the pipeline, the report and the sweep tools.

Every process that touches a request sends partial records (request id + a few fields) to the main
process, which merges them into one row per request. All times are seconds; absolute timestamps are
on `pipeline.clock.now()` and are stored relative to the run's t0 (the client's start) in the CSV.

Columns of `requests.csv` (one row per request, in request-id order):

    request_id        int    0..n-1 in issue order
    video             str    path of the clip
    frames            int    input frames used
    output_frames     int    frames of the interpolated sequence, (frames-1)*factor+1
    warmup            0/1    warm-up requests are excluded from statistics
    status            str    ok | error | dropped (never admitted: a full queue) | unfinished
    error             str    reason, empty when ok
    scheduled_s       float  when the client was due to issue it (latency counts from here)
    issued_s          float  when the client actually put it in the first queue
    done_s            float  when the sink saw its last frame ready
    latency_s         float  done_s - scheduled_s
    <step>.device     str    e.g. cuda:1 or cpu:0 (logical GPU id on CPU runs)
    <step>.replica    int    replica index within the step
    <step>.queue_wait_s float time between the upstream put and this step's get
    <step>.compute_s  float  GPU time of the step's work on the batch holding the request (CUDA events)
    <step>.handoff_s  float  time to bring the inputs onto this step's device (0 when read in place):
                             the peer copies' own time, summed over the groups of tensors
    <step>.handoff_exposed_s float  of that, the part the step waited for: from when it could have
                             started (producer done, its stream free) until the last byte landed
    <step>.publish_s  float  time to write the step's outputs into its slot for the next step
    <step>.batch      int    how many requests shared the model call

`<step>` is the step name from the config (`decode`, the model steps, and `sink`, whose only fields
are queue_wait_s and handoff_s). Empty cells mean "not reached".
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

BASE_COLUMNS = (
    "request_id", "video", "frames", "output_frames", "warmup", "status", "error",
    "scheduled_s", "issued_s", "done_s", "latency_s",
)
STEP_FIELDS = ("device", "replica", "queue_wait_s", "compute_s", "handoff_s", "handoff_exposed_s",
               "publish_s", "batch")
SINK_FIELDS = ("queue_wait_s", "handoff_s")
SINK = "sink"  # the last stage's name in records, queues and process names; no step may take it


def step_columns(step_names) -> list[str]:
    cols = []
    for name in step_names:
        fields = SINK_FIELDS if name == SINK else STEP_FIELDS
        cols += [f"{name}.{f}" for f in fields]
    return cols


@dataclass
class RecordTable:
    """Merges partial records into one row per request."""

    step_names: list[str]
    rows: dict[int, dict] = field(default_factory=dict)

    def update(self, request_id: int, values: dict) -> None:
        row = self.rows.setdefault(request_id, {"request_id": request_id})
        # A failure recorded earlier is the first cause; later hops must not overwrite it.
        settled = row.get("status") in ("error", "dropped")
        for key, value in values.items():
            if settled and key in ("status", "error"):
                continue
            row[key] = value

    def finish(self, t0: float) -> list[dict]:
        """Rows in id order with times made relative to t0 and latency filled in."""
        out = []
        for rid in sorted(self.rows):
            row = dict(self.rows[rid])
            row.setdefault("status", "unfinished")
            for key in ("scheduled_s", "issued_s", "done_s"):
                if row.get(key) is not None:
                    row[key] = row[key] - t0
            if row.get("done_s") is not None and row.get("scheduled_s") is not None:
                row["latency_s"] = row["done_s"] - row["scheduled_s"]
            out.append(row)
        return out

    def columns(self) -> list[str]:
        return list(BASE_COLUMNS) + step_columns(list(self.step_names) + [SINK])


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(csv_cells(row, columns))


def csv_cells(row: dict, columns) -> dict:
    """One row as requests.csv holds it (also appended one by one while a run goes)."""
    return {k: _cell(row.get(k)) for k in columns}


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6f}"
    return value


def read_csv(path: Path) -> list[dict]:
    """Rows back with numbers parsed; empty cells become None."""
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row = {}
            for key, text in raw.items():
                row[key] = _parse(key, text)
            rows.append(row)
    return rows


_INT_KEYS = {"request_id", "frames", "output_frames", "warmup"}


def _parse(key: str, text: str):
    if text == "" or text is None:
        return None
    if key in _INT_KEYS or key.endswith(".replica") or key.endswith(".batch"):
        return int(float(text))
    if key.endswith("_s"):
        return float(text)
    return text
