"""Where a clip request's decode time goes (`benchmark.py --decode-only --phases`): each worker
decodes its clips once more, each timed phase by phase (pipeline/media/phases.py), then does
with the frames what the pipeline's decode worker does before handing them on ("post": the
model's input rows, FLAVR's windows of 4 as in the shipped configs, written into a slot-sized
buffer allocated once, as SlotPool.write does). No resize: the benchmark's clips are decoded at
their own size, as the shipped configs' clips already are at the model's.

This pass runs after the clips/s pass, from its own start time, so the throughput columns are
measured without it. Its clock synchronises the device at every phase boundary, so a profiled
clip ("total") takes longer than an unprofiled one ("plain": the clips/s pass's time per clip
and worker); the phases add up to at most "total", which also holds the first wait.
"""
from __future__ import annotations

import csv
import math
import os
import textwrap
from pathlib import Path

from pipeline.analysis.statistics import MIN_FOR_P90, describe
from pipeline.clock import now
from pipeline.media.phases import DECODE_PHASES, PhaseClock

PHASES = (*DECODE_PHASES, "post")
POST_MODEL = "flavr"  # whose rows "post" makes: the shipped configs' model
COLUMNS = ("backend", "codec", "size", "devices", "workers_per_device", "phase", "clips",
           "mean_ms", "p90_ms", "share_of_total")
NOTE = ("Phase timing synchronises the device at the start and at every phase boundary (in "
        "this pass only), so profiled clips ('total') take longer than unprofiled ones ('plain': "
        "the clips/s pass, per worker).")
LEGEND = ("probe: headers (cached per file); setup: decoder made or pointed at the clip, file "
          "opened, demuxer set up; decode: frames decoded (DALI: with its per-clip decoder and "
          "its own RGB conversion); copy: decoded pixels into tensors on the device; colour: to "
          "RGB in the stream's colours; other: the rest of the backend; post: FLAVR's windows "
          "written into a slot.")


def profile_clips(decoder, clips: list[str], frames: int, size: tuple[int, int],
                  device: str) -> dict[str, list[float]]:
    """Seconds per clip of each phase, in clip order, and "total": the host time around it all
    (a phase a backend does not report is absent)."""
    import torch

    from models.registry import model_class

    model = model_class(POST_MODEL)()
    (shape, dtype), = model.input_spec(model.rows_per_request(frames), *size).values()
    slot = torch.empty(shape, dtype=dtype, device=device)  # a pool's slot: allocated once
    out: dict[str, list[float]] = {}
    for path in clips:
        t0 = now()
        clock = PhaseClock(device)
        rows = model.make_rows(decoder.decode(path, frames, phases=clock))
        slot[:rows.shape[0]].copy_(rows, non_blocking=True)
        clock.mark("post")
        total = now() - t0
        for phase, seconds in clock.seconds.items():
            out.setdefault(phase, []).append(seconds)
        out.setdefault("total", []).append(total)
    return out


def summarise(results: dict) -> list[dict]:
    """One row per phase over every profiled clip of the cell's workers: clips, mean and p90 in
    ms (p90 None with fewer than MIN_FOR_P90 clips), share of the mean total; then "total" and
    "plain"."""
    pooled: dict[str, list[float]] = {}
    for r in results.values():
        for phase, seconds in (r.phases or {}).items():
            pooled.setdefault(phase, []).extend(seconds)
    if not pooled.get("total"):
        return []
    total = math.fsum(pooled["total"]) / len(pooled["total"])
    rows = []
    for phase in (*PHASES, "total"):
        if phase in pooled:
            d = describe(pooled[phase], (90,), with_max=False)
            rows.append(_row(phase, d["count"], d["mean"],
                             d["p90"] if d["count"] >= MIN_FOR_P90 else None, total))
    plain = [(r.clips_s[1] - r.clips_s[0]) / r.clips for r in results.values() if r.clips]
    if plain:
        rows.append(_row("plain", sum(r.clips for r in results.values()),
                         math.fsum(plain) / len(plain), None, total))
    return rows


def _row(phase: str, clips: int, mean_s: float, p90_s: float | None, total_s: float) -> dict:
    return {"phase": phase, "clips": clips, "mean_ms": 1e3 * mean_s,
            "p90_ms": None if p90_s is None else 1e3 * p90_s, "share_of_total": mean_s / total_s}


def write_csv(out: Path, rows: list[dict]) -> None:
    """OUT/phases.csv with every row so far, replaced whole."""
    with open(out / "phases.csv.part", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if r.get(k) is None else r[k]) for k in COLUMNS} for r in rows)
    os.replace(out / "phases.csv.part", out / "phases.csv")


def table(rows: list[dict]) -> str:
    """Per cell three lines (mean ms, p90 ms, share of the mean total), a column per phase."""
    names = (*PHASES, "total", "plain")
    head = (f"{'backend':>15} {'codec':>5} {'size':>9} {'w/dev':>5} {'':>7} "
            + " ".join(f"{n:>7}" for n in names))
    lines = ["decode phases per clip request, ms: mean, p90, share of the mean total",
             *textwrap.wrap(NOTE, len(head)), "", head, "-" * len(head)]
    cells: dict[tuple, dict] = {}
    for r in rows:
        key = (r["backend"], r["codec"], r["size"], r["workers_per_device"])
        cells.setdefault(key, {})[r["phase"]] = r
    short = False
    for (backend, codec, size, workers), by_phase in cells.items():
        for stat, label in (("mean_ms", "mean"), ("p90_ms", "p90"), ("share_of_total", "% tot")):
            values = []
            for n in names:
                v = by_phase.get(n, {}).get(stat)
                values.append(f"{'-':>7}" if v is None else
                              f"{100 * v:6.1f}%" if stat == "share_of_total" else f"{v:7.2f}")
            first = (f"{backend:>15} {codec:>5} {size:>9} {workers:>5}" if label == "mean"
                     else f"{'':>15} {'':>5} {'':>9} {'':>5}")
            lines.append(f"{first} {label:>7} " + " ".join(values))
        short |= any(r["p90_ms"] is None for n, r in by_phase.items() if n != "plain")
    lines += textwrap.wrap(LEGEND, len(head))
    if short:
        lines.append(f"p90 needs at least {MIN_FOR_P90} clips per cell ('-': fewer profiled)")
    return "\n".join(lines)
