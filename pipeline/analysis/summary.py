"""A run's numbers, computed from its per-request records: one JSON-able dict (report.json).

`summarize` turns requests.csv rows (times relative to t0) into the summary; the printed report
(report.py) renders that dict and nothing else, so the text and report.json always agree;
`summary_from_run_dir` recomputes it from a run's logs, so a report re-rendered later (or by the
sweep and compare tools) shows the numbers the live run printed.

Rules (design.md, "Timing and measurement"):
- warm-up requests are excluded from every statistic except the counts;
- latency runs from each request's scheduled time to its completion (its last device work);
- the measurement window runs from the first measured request's scheduled time to the last measured
  completion, and throughput counts measured ok requests over that window;
- the offered load is the realised rate of the schedule the client actually sent, not the nominal
  1000/mean interval (records.py's columns; statistics.event_rate);
- percentiles are nearest-rank: always an observed value, never interpolated.
"""
from __future__ import annotations

import collections
import json
import math
from pathlib import Path

from pipeline.analysis import placement, validity
from pipeline.analysis.change import change_summary
from pipeline.analysis.records import CLIENT, CLIENT_TIMES, PATH_TIMES, SINK, RequestRow
from pipeline.analysis.requests_csv import read_csv
from pipeline.analysis.statistics import PERCENTILE_METHOD, describe, event_rate
from pipeline.analysis.truth import truth_summary
from pipeline.serving.gpu_monitor import relative_time

STEP_TIMES = PATH_TIMES + ("handoff_s",)  # per-step columns with statistics in the report


def _rows(rows, steps) -> list[RequestRow]:
    """Typed rows, times as requests.csv stores them, whether they come from the CSV or the live
    table, in request-id order."""
    out = []
    for r in rows:
        cells = r.cells() if isinstance(r, RequestRow) else r
        out.append(RequestRow.from_cells(cells, steps))
    return sorted(out, key=lambda r: r.request_id)


def _time(value) -> float | None:
    if value is None or value == "":
        return None
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def _normalize_samples(samples, t0: float | None) -> list[dict]:
    out = []
    for s in samples or ():
        if "t_s" in s:
            t_s = _time(s["t_s"])
        elif t0 is not None:
            t_s = relative_time(s["t"], t0)  # as nvml.csv stores it
        else:
            raise ValueError("NVML samples with absolute times need run_info['t0']")
        out.append({"t_s": t_s, "gpu": int(s["gpu"]), "util_pct": s["util_pct"],
                    "mem_used_mib": float(s["mem_used_mib"]), "mem_total_mib": float(s["mem_total_mib"])})
    return out


def _json_clean(value):
    """Plain JSON types only (tuples -> lists, numpy scalars -> floats), as run.json will hold them."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def summarize(rows, step_names, run_info: dict, nvml_samples=None) -> dict:
    """All statistics of a run as one JSON-able dict (times in seconds).

    rows: per-request rows, records.RequestRow or requests.csv cells (read_csv). step_names: the
    config's steps in order. run_info: t0 (clock time the row times are relative to), and
    optionally mean_interval_ms, config (its name), nvml_baseline (GpuMonitor.baseline() taken
    before the workers started), nvml_reason, error (why the run ended early), notices (list of
    str), and any other scalars to echo in the report. nvml_samples: GpuMonitor.samples as they
    are (absolute clock `t`; made relative to t0 here), or samples carrying a relative `t_s`
    (nvml.csv); `t_s` wins when both are present.
    """
    run_info = _json_clean(dict(run_info))
    steps = [s for s in step_names if s != SINK]
    run_info["step_names"] = steps
    rows = _rows(rows, steps)
    samples = _normalize_samples(nvml_samples, run_info.get("t0"))

    measured = [r for r in rows if not r.warmup]
    ok = [r for r in measured if r.status == "ok"]
    by_status = collections.Counter(r.status for r in measured)
    counts = {"total": len(rows), "warmup": len(rows) - len(measured), "measured": len(measured),
              "ok": by_status["ok"], "error": by_status["error"], "dropped": by_status["dropped"],
              "unfinished": by_status["unfinished"],
              "warmup_not_ok": sum(1 for r in rows if r.warmup and r.status != "ok")}
    failures = collections.Counter((r.status, r.error, r.warmup) for r in rows if r.status != "ok")
    failed = [{"status": s, "reason": e, "warmup": w, "count": n}
              for (s, e, w), n in sorted(failures.items(), key=lambda kv: (-kv[1], kv[0]))]

    # Offered load: the rate of the schedule the client actually sent (requests it never reached
    # after a queue overflowed were not offered).
    scheduled = sorted(r.scheduled_s for r in measured if r.scheduled_s is not None)
    span = scheduled[-1] - scheduled[0] if scheduled else None
    mi = run_info.get("mean_interval_ms")
    done = [r.done_s for r in ok if r.done_s is not None]
    load = {
        "mean_interval_ms": mi,
        "nominal_rps": (1000.0 / mi) if isinstance(mi, (int, float)) and mi > 0 else None,
        # All due at once (-mi 0) takes more than one request: a lone one has no schedule to
        # share, whatever the mean interval.
        "bulk": len(scheduled) > 1 and span == 0,
        "sent": len(scheduled),
        "offered_rps": event_rate(scheduled),
        "schedule_span_s": span,
        # Completions per second from the first to the last: what the pipeline delivered while
        # loaded, free of its fill and drain time, so a short run compares it with the offer.
        "delivered_rps": event_rate(done),
    }

    window = {"start_s": scheduled[0] if scheduled else None, "end_s": max(done) if done else None}
    window["duration_s"] = (round(window["end_s"] - window["start_s"], 6)
                            if window["start_s"] is not None and window["end_s"] is not None else None)
    duration = window["duration_s"]
    out_frames = sum(int(r.output_frames or 0) for r in ok)
    in_frames = sum(int(r.frames or 0) for r in ok)
    throughput = {
        "requests": len(ok),
        "output_frames": out_frames,
        "requests_per_s": len(ok) / duration if duration else None,
        "output_frames_per_s": out_frames / duration if duration else None,
        "input_frames_per_s": in_frames / duration if duration else None,
    }
    load["achieved_rps"] = throughput["requests_per_s"]

    latency = describe([r.latency_s for r in ok if r.latency_s is not None])
    lags = [round(r.lag_s, 6) for r in measured if r.lag_s is not None]
    if not lags:  # logs from before the client's columns: issued - scheduled
        lags = [round(r.issued_s - r.scheduled_s, 6) for r in measured
                if r.issued_s is not None and r.scheduled_s is not None]
    summary = {
        "run": run_info,
        "steps": steps,
        "percentile_method": PERCENTILE_METHOD,
        "counts": counts,
        "failures": failed,
        "load": load,
        "window": window,
        "throughput": throughput,
        "latency_s": latency,
        "issue_lag_s": describe(lags, percentiles=(50, 99)),
        "stages": [_stage(name, ok) for name in steps],
        "breakdown": _breakdown(ok, steps),
        "gpus": _gpu_table(samples, window, run_info.get("nvml_baseline")),
        "shares": _shares(ok, steps),
        "decode": placement.decode_placement(ok, steps, window["duration_s"]),
        "streams": placement.per_stream(ok),
        "change": change_summary(ok, run_info),
        "truth": truth_summary(ok, run_info),
    }
    summary["validity"] = validity.judge(summary)
    summary["warnings"] = validity.warnings(summary)
    return _json_clean(summary)


def _stage(name: str, ok: list[RequestRow]) -> dict:
    entry: dict = {"step": name}
    times = [r.steps.get(name) for r in ok]
    times = [t for t in times if t is not None]
    for f in STEP_TIMES:
        entry[f] = describe([getattr(t, f) for t in times if getattr(t, f) is not None],
                            percentiles=(50, 99), with_max=False)
    devices = collections.Counter(str(t.device) for t in times if t.device)
    entry["devices"] = dict(sorted(devices.items()))
    batches = [t.batch for t in times if t.batch is not None]
    entry["batch_mean"] = sum(batches) / len(batches) if batches else None
    return entry


def _breakdown(ok: list[RequestRow], steps) -> dict | None:
    """Where the mean request's time went: the mean of every column that adds up to the latency,
    in path order, and what is left over (records.py). None for logs without those columns."""
    rows = [r for r in ok if r.latency_s is not None and r.accounted_s() is not None]
    if not rows:
        return None
    n = len(rows)
    mean = lambda values: math.fsum(values) / n
    parts = [{"part": CLIENT, "column": c, "mean_s": mean(getattr(r, c) for r in rows)}
             for c in CLIENT_TIMES]
    for name in steps:
        parts += [{"part": name, "column": c, "mean_s": mean(getattr(r.steps[name], c) for r in rows)}
                  for c in PATH_TIMES]
    latency = mean(r.latency_s for r in rows)
    residuals = [r.latency_s - r.accounted_s() for r in rows]
    residual = mean(residuals)
    return {"requests": n, "parts": parts, "latency_mean_s": latency,
            "accounted_mean_s": math.fsum(p["mean_s"] for p in parts),
            "residual_mean_s": residual,
            "residual_share": residual / latency if latency else None,
            "residual_max_abs_s": max(abs(x) for x in residuals)}


def _shares(ok: list[RequestRow], steps) -> dict:
    """What decode and the hand-offs cost next to the model's compute, summed over ok requests.

    model compute: every non-decode step's compute_s; hand-off: every step's handoff_s (peer
    copies onto the consumer's GPU), and of it what the consumer waited for (handoff_exposed_s);
    publish: writing outputs into the producer's slots. Every request of a batch carries the
    batch's times (records.py), so each adds its 1/batch share: a batch's work counts once."""
    def total(field, which):
        stamps = [r.steps[s] for r in ok for s in which if s in r.steps]
        if not stamps or all(getattr(t, field) is None for t in stamps):
            return None  # not measured (logs from before the field existed)
        return math.fsum((getattr(t, field) or 0.0) / (t.batch or 1) for t in stamps)

    decode = steps[:1]
    model = steps[1:]
    compute = total("compute_s", model)
    out = {"model_compute_s": compute, "decode_compute_s": total("compute_s", decode),
           "handoff_s": total("handoff_s", steps),
           "handoff_exposed_s": total("handoff_exposed_s", steps),
           "publish_s": total("publish_s", steps)}
    for key in ("decode_compute_s", "handoff_s", "handoff_exposed_s", "publish_s"):
        value = out[key]
        out[key.replace("_s", "_share")] = value / compute if compute and value is not None else None
    return out


def _gpu_table(samples, window, baseline) -> dict:
    lo, hi = window["start_s"], window["end_s"]
    inside = [s for s in samples if lo is None or hi is None or lo <= s["t_s"] <= hi]
    per_gpu: dict[int, list[dict]] = collections.defaultdict(list)
    for s in inside:
        per_gpu[s["gpu"]].append(s)
    at_start = _start_readings(samples, baseline)
    table = []
    for gpu in sorted(set(per_gpu) | set(at_start)):
        ss = per_gpu.get(gpu, [])
        utils = [float(s["util_pct"]) for s in ss]
        entry = {
            "gpu": gpu,
            "samples": len(ss),
            "util_mean_pct": math.fsum(utils) / len(utils) if utils else None,
            "util_max_pct": max(utils) if utils else None,
            "mem_max_mib": max(s["mem_used_mib"] for s in ss) if ss else None,
            "mem_total_mib": max(s["mem_total_mib"] for s in ss) if ss else None,
        }
        start = at_start.get(gpu)
        if start is not None:
            entry["start"] = start
        table.append(entry)
    return {"sampled": bool(samples), "in_window": len(inside), "per_gpu": table}


def _start_readings(samples, baseline) -> dict[int, dict]:
    """What each GPU looked like before the run: the baseline if taken, else its first sample."""
    out: dict[int, dict] = {}
    if baseline and baseline.get("gpus"):
        for g in baseline["gpus"]:
            out[int(g["gpu"])] = {"source": "baseline", "util_pct": g.get("util_pct"),
                                  "mem_used_mib": g.get("mem_used_mib"),
                                  "processes": [p.get("pid") for p in g.get("processes") or []]}
        return out
    for s in sorted(samples, key=lambda s: s["t_s"]):
        if s["gpu"] not in out:
            out[s["gpu"]] = {"source": "first sample", "util_pct": s["util_pct"],
                             "mem_used_mib": s["mem_used_mib"], "processes": []}
    return out


def summary_from_run_dir(run_dir) -> dict:
    """Recompute a run's summary from its requests.csv, nvml.csv and run.json."""
    from pipeline.serving.gpu_monitor import read_samples_csv

    run_dir = Path(run_dir)
    run_info = json.loads((run_dir / "run.json").read_text())
    rows = read_csv(run_dir / "requests.csv")
    nvml_path = run_dir / "nvml.csv"
    samples = read_samples_csv(nvml_path) if nvml_path.exists() else []
    return summarize(rows, run_info["step_names"], run_info, samples)
