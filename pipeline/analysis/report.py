"""Run statistics and the printed report, computed from the per-request records.

`summarize` turns requests.csv-style rows (times relative to t0) into one JSON-able dict;
`format_report` renders that dict and nothing else, so the printed table and report.json always
agree; `summary_from_run_dir` recomputes the same dict from a run's logs, so a report re-rendered
later (or by the sweep and compare tools) shows the numbers the live run printed.

Rules (see docs in design.md, "Timing and measurement"):
- warm-up requests are excluded from every statistic except the counts;
- latency runs from each request's scheduled time to its completion;
- the measurement window runs from the first measured request's scheduled time to the last measured
  completion, and throughput counts measured ok requests over that window;
- percentiles are nearest-rank (`percentile` below): always an observed value, never interpolated.
"""
from __future__ import annotations

import collections
import json
import math
from pathlib import Path

from pipeline.analysis.records import SINK, SINK_FIELDS, STEP_FIELDS, read_csv
from pipeline.serving.gpu_monitor import relative_time

PERCENTILE_METHOD = ("nearest-rank: the smallest observed value with at least p% of the values "
                     "at or below it (no interpolation)")
MIN_FOR_P99 = 100
MIN_FOR_P90 = 10
LAG_P99_LIMIT_S = 0.005
LAG_MAX_LIMIT_S = 0.050
BUSY_UTIL_PCT = 10
BUSY_MEM_MIB = 1024


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------

def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list: the value of rank ceil(p/100 * n)."""
    n = len(sorted_values)
    if n == 0:
        return None
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be in 0..100, got {p}")
    # Integer arithmetic where possible, so p99 of 100 values is exactly rank 99.
    if float(p).is_integer():
        rank = (int(p) * n + 99) // 100
    else:
        rank = math.ceil(round(p * n / 100, 9))
    return sorted_values[max(rank, 1) - 1]


def _stats(values, percentiles=(50, 90, 99), with_max=True) -> dict:
    values = sorted(values)
    out: dict = {"count": len(values), "mean": math.fsum(values) / len(values) if values else None}
    for p in percentiles:
        out[f"p{p}"] = percentile(values, p)
    if with_max:
        out["max"] = values[-1] if values else None
    return out


def _time(value) -> float | None:
    """A time cell as the CSV stores it: None for empty/NaN, else rounded to the microsecond."""
    if value is None or value == "":
        return None
    value = float(value)
    if math.isnan(value):
        return None
    return round(value, 6)


def _normalize_rows(rows) -> list[dict]:
    """Rows as read back from requests.csv, whether they come from the CSV or the live table."""
    out = []
    for row in sorted(rows, key=lambda r: r.get("request_id", 0)):
        r = {k: (_time(v) if k.endswith("_s") else v) for k, v in row.items()}
        r["warmup"] = bool(int(row.get("warmup") or 0))
        r["status"] = row.get("status") or "unfinished"
        r["error"] = row.get("error") or ""
        if r.get("latency_s") is None and r.get("done_s") is not None and r.get("scheduled_s") is not None:
            r["latency_s"] = round(r["done_s"] - r["scheduled_s"], 6)
        out.append(r)
    return out


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

    rows: per-request rows in the requests.csv form (records.RecordTable.finish or read_csv).
    step_names: the config's steps in order ('sink' is added). run_info: t0 (clock time the row
    times are relative to), and optionally mean_interval_ms, config (its name), nvml_baseline
    (GpuMonitor.baseline() taken before the workers started), nvml_reason, error (why the run
    ended early), notices (list of str), and any other scalars to echo in the report.
    nvml_samples: GpuMonitor.samples as they are (absolute clock `t`; made relative to t0 here),
    or samples carrying a relative `t_s` (nvml.csv); `t_s` wins when both are present.
    """
    run_info = _json_clean(dict(run_info))
    steps = list(step_names) + ([] if SINK in step_names else [SINK])
    run_info["step_names"] = [s for s in steps if s != SINK]
    rows = _normalize_rows(rows)
    samples = _normalize_samples(nvml_samples, run_info.get("t0"))

    measured = [r for r in rows if not r["warmup"]]
    ok = [r for r in measured if r["status"] == "ok"]

    by_status = collections.Counter(r["status"] for r in measured)
    counts = {"total": len(rows), "warmup": len(rows) - len(measured), "measured": len(measured),
              "ok": by_status["ok"], "error": by_status["error"], "dropped": by_status["dropped"],
              "unfinished": by_status["unfinished"],
              "warmup_not_ok": sum(1 for r in rows if r["warmup"] and r["status"] != "ok")}
    failures = collections.Counter((r["status"], r["error"], r["warmup"]) for r in rows if r["status"] != "ok")
    failed = [{"status": s, "reason": e, "warmup": w, "count": n}
              for (s, e, w), n in sorted(failures.items(), key=lambda kv: (-kv[1], kv[0]))]

    # Offered load: the rate implied by the measured requests' schedule.
    scheduled = sorted(r["scheduled_s"] for r in measured if r.get("scheduled_s") is not None)
    span = scheduled[-1] - scheduled[0] if scheduled else None
    mi = run_info.get("mean_interval_ms")
    load = {
        "mean_interval_ms": mi,
        "nominal_rps": (1000.0 / mi) if isinstance(mi, (int, float)) and mi > 0 else None,
        "bulk": bool(scheduled) and span == 0,
        "offered_rps": (len(scheduled) - 1) / span if span else None,
        "schedule_span_s": span,
    }

    # Window: first measured scheduled time -> last measured completion.
    done = [r["done_s"] for r in ok if r.get("done_s") is not None]
    window = {"start_s": scheduled[0] if scheduled else None, "end_s": max(done) if done else None}
    window["duration_s"] = (round(window["end_s"] - window["start_s"], 6)
                            if window["start_s"] is not None and window["end_s"] is not None else None)
    duration = window["duration_s"]
    out_frames = sum(int(r.get("output_frames") or 0) for r in ok)
    in_frames = sum(int(r.get("frames") or 0) for r in ok)
    throughput = {
        "requests": len(ok),
        "output_frames": out_frames,
        "requests_per_s": len(ok) / duration if duration else None,
        "output_frames_per_s": out_frames / duration if duration else None,
        "input_frames_per_s": in_frames / duration if duration else None,
    }
    load["achieved_rps"] = throughput["requests_per_s"]

    latency = _stats([r["latency_s"] for r in ok if r.get("latency_s") is not None])
    lags = [round(r["issued_s"] - r["scheduled_s"], 6) for r in measured
            if r.get("issued_s") is not None and r.get("scheduled_s") is not None]
    issue_lag = _stats(lags, percentiles=(50, 99))

    stages = []
    for name in steps:
        fields = SINK_FIELDS if name == SINK else STEP_FIELDS
        entry: dict = {"step": name}
        for f in fields:
            if f.endswith("_s"):
                values = [r[f"{name}.{f}"] for r in ok if r.get(f"{name}.{f}") is not None]
                entry[f] = _stats(values, percentiles=(50, 99), with_max=False)
        if name != SINK:
            devices = collections.Counter(str(r[f"{name}.device"]) for r in ok if r.get(f"{name}.device"))
            entry["devices"] = dict(sorted(devices.items()))
            batches = [int(r[f"{name}.batch"]) for r in ok if r.get(f"{name}.batch") is not None]
            entry["batch_mean"] = sum(batches) / len(batches) if batches else None
        stages.append(entry)

    gpus = _gpu_table(samples, window, run_info.get("nvml_baseline"))
    shares = _shares(ok, [s for s in steps if s != SINK])

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
        "issue_lag_s": issue_lag,
        "stages": stages,
        "shares": shares,
        "gpus": gpus,
    }
    summary["warnings"] = _warnings(summary)
    return _json_clean(summary)


def _shares(ok, steps) -> dict:
    """What decode and the hand-offs cost next to the model's compute, summed over ok requests.

    model compute: every non-decode step's compute_s; hand-off: every step's handoff_s (peer
    copies onto the consumer's GPU), and of it what the consumer waited for (handoff_exposed_s);
    publish: writing outputs into the producer's slots."""
    def total(field, which):
        values = [r.get(f"{s}.{field}") for r in ok for s in which]
        if ok and all(v is None for v in values):
            return None  # not measured (logs from before the field existed)
        return math.fsum(v or 0.0 for v in values)

    decode = [s for s in steps if s == steps[0]]
    model = [s for s in steps if s not in decode]
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


def client_fell_behind(summary: dict) -> bool:
    """Whether the client issued requests later than scheduled beyond the limits. In bulk mode
    every request is due at once, so the lag is only the time it takes to enqueue them all; there
    is no schedule to fall behind."""
    lag = summary["issue_lag_s"]
    return bool(not summary["load"]["bulk"] and lag.get("count")
                and (lag["p99"] > LAG_P99_LIMIT_S or lag["max"] > LAG_MAX_LIMIT_S))


def _warnings(summary: dict) -> list[str]:
    warnings = []
    if summary["run"].get("error"):
        warnings.append(f"the run ended early: {summary['run']['error']}")
    warnings += [str(n) for n in summary["run"].get("notices") or []]
    counts = summary["counts"]
    if counts["measured"] == 0:
        warnings.append("no measured requests: the run was all warm-up (or empty)")
    elif counts["ok"] == 0:
        warnings.append("no measured request finished ok: there is no latency or throughput to report")

    lag = summary["issue_lag_s"]
    if client_fell_behind(summary):
        warnings.append(f"the client fell behind its schedule: issue lag p99 {lag['p99'] * 1e3:.1f} ms, "
                        f"max {lag['max'] * 1e3:.1f} ms (limits {LAG_P99_LIMIT_S * 1e3:g} / "
                        f"{LAG_MAX_LIMIT_S * 1e3:g} ms); latencies still count from the scheduled "
                        "times, but the offered load was not delivered as planned")

    n = summary["latency_s"]["count"]
    if 0 < n < MIN_FOR_P99:
        warnings.append(f"p99 from {n} requests is not meaningful; need >= {MIN_FOR_P99}")
    if 0 < n < MIN_FOR_P90:
        warnings.append(f"p90 from {n} requests is not meaningful; need >= {MIN_FOR_P90}")

    not_ok = sum(f["count"] for f in summary["failures"])
    if not_ok:
        by_status = collections.Counter()
        for f in summary["failures"]:
            by_status[f["status"]] += f["count"]
        parts = ", ".join(f"{k} {v}" for k, v in sorted(by_status.items()))
        warm = sum(f["count"] for f in summary["failures"] if f["warmup"])
        warnings.append(f"{not_ok} request(s) did not finish ok ({parts}"
                        + (f"; {warm} of them warm-up" if warm else "") + "): see failures")

    shared = _shared_without_mps(summary["run"])
    if shared:
        where = ", ".join(f"GPU {g} hosted {n} processes" for g, n in shared)
        why = summary["run"]["mps"].removeprefix("off").lstrip(": ")
        warnings.append(f"{where} of this run without MPS ({why}): their CUDA contexts "
                        "time-slice the GPU (on one H200 the model ran 9% slower beside two "
                        "decode processes); run with --mps on")

    for g in summary["gpus"]["per_gpu"]:
        start = g.get("start")
        if not start:
            continue
        util, mem = start.get("util_pct"), start.get("mem_used_mib")
        if (util is not None and util > BUSY_UTIL_PCT) or (mem is not None and mem > BUSY_MEM_MIB):
            procs = start.get("processes") or []
            who = f", {len(procs)} compute process(es) already there (pids {', '.join(map(str, procs))})" if procs else ""
            warnings.append(f"GPU {g['gpu']} was already busy before the run ({start['source']}: "
                            f"{_fmt(util, '.0f')}% util, {_fmt(mem, '.0f')} MiB used{who}); "
                            "other work may have shared it")
    return warnings


def _shared_without_mps(run: dict) -> list[tuple[str, int]]:
    """(GPU, process count) of each GPU that more than one process of a GPU run shared while MPS
    was off. Runs whose logs do not say (older ones) give none."""
    mps, counts = run.get("mps"), run.get("gpu_processes")
    if run.get("device_kind") != "cuda" or not isinstance(mps, str) or not mps.startswith("off"):
        return []
    return [(g, n) for g, n in sorted((counts or {}).items(), key=lambda kv: int(kv[0])) if n > 1]


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

def _fmt(value, spec: str = ".2f", scale: float = 1.0) -> str:
    """The value in `spec`, after `scale`; '-' for a missing value."""
    if value is None:
        return "-"
    return format(value if scale == 1 else value * scale, spec)  # an int stays an int for "d"


def _ms(value) -> str:
    return _fmt(value, ".2f", 1e3)


def _pct(share) -> str:
    return "-" if share is None else f"{100 * share:.2f}%"


def _table(header: list[str], rows: list[list[str]], align: str | None = None,
           indent: str = "  ") -> list[str]:
    """Aligned columns; align has one letter per column, l or r (default: first l, others r)."""
    align = align or "l" + "r" * (len(header) - 1)
    widths = [max(len(str(r[c])) for r in [header] + rows) for c in range(len(header))]

    def line(cells):
        parts = [str(c).ljust(w) if a == "l" else str(c).rjust(w)
                 for c, w, a in zip(cells, widths, align)]
        return (indent + "  ".join(parts)).rstrip()

    return [line(header)] + [line(r) for r in rows]


_FIELD_LABELS = {"queue_wait_s": "queue wait", "compute_s": "compute", "handoff_s": "hand-off",
                 "handoff_exposed_s": "  exposed", "publish_s": "publish"}


def format_report(summary: dict) -> str:
    """The plain-text report of a summary (every number in it is in the summary)."""
    run, counts, load = summary["run"], summary["counts"], summary["load"]
    name = run.get("config_name") or run.get("config") or run.get("name") or "run"
    # Logs from before the model was recorded are all FLAVR's.
    unit = run.get("output_unit", "frames")
    lines = [f"{run.get('model_title', 'FLAVR')} serving benchmark: {name}"]
    extras = [f"{k}={v}" for k, v in run.items()
              if k not in ("t0", "step_names", "nvml_baseline", "error", "mps", "model_title")
              and isinstance(v, (str, int, float, bool))]
    if extras:
        lines.append("run: " + ", ".join(extras))
    if run.get("mps"):
        lines.append(f"mps: {run['mps']}")
    elif run.get("device_kind") == "cuda":  # logs of a run from before MPS was recorded
        lines.append("mps: unknown (not recorded in this run's logs)")
    lines.append("steps: " + " -> ".join(summary["steps"]))
    lines.append("")

    lines.append(f"requests    {counts['total']} total: {counts['warmup']} warm-up (excluded), "
                 f"{counts['measured']} measured: {counts['ok']} ok, {counts['error']} error, "
                 f"{counts['dropped']} dropped, {counts['unfinished']} unfinished")
    if load["bulk"]:
        offered = "bulk (all measured requests scheduled at once)"
    else:
        offered = f"offered {_fmt(load['offered_rps'])} req/s (from the schedule"
        if load["nominal_rps"] is not None:
            offered += f"; nominal {load['nominal_rps']:.2f} at mean interval {load['mean_interval_ms']:g} ms"
        offered += ")"
    lines.append(f"load        {offered}, achieved {_fmt(load['achieved_rps'])} req/s")
    w = summary["window"]
    lines.append(f"window      {_fmt(w['duration_s'], '.3f')} s, from the first measured request's scheduled "
                 "time to the last measured completion")
    t = summary["throughput"]
    lines.append(f"throughput  {_fmt(t['requests_per_s'])} requests/s, {_fmt(t['output_frames_per_s'], '.1f')} "
                 f"output {unit}/s ({t['requests']} ok measured requests, {t['output_frames']} {unit})")
    lines.append("")

    lat = summary["latency_s"]
    lines.append(f"end-to-end latency, ms (from the scheduled time; {lat['count']} requests)")
    lines += _table(["", "mean", "p50", "p90", "p99", "max"],
                    [["", _ms(lat["mean"]), _ms(lat["p50"]), _ms(lat["p90"]), _ms(lat["p99"]), _ms(lat["max"])]])
    lag = summary["issue_lag_s"]
    lines.append(f"  client issue lag (issued - scheduled): p50 {_ms(lag['p50'])}, p99 {_ms(lag['p99'])}, "
                 f"max {_ms(lag['max'])} ms")
    lines.append("")

    lines.append("per step, ms (ok measured requests)")
    rows = []
    for entry in summary["stages"]:
        first = True
        for key, label in _FIELD_LABELS.items():
            if key not in entry:
                continue
            if key == "handoff_exposed_s" and not (entry.get("handoff_s") or {}).get("mean"):
                continue  # nothing was copied: nothing to be exposed
            st = entry[key]
            rows.append([entry["step"] if first else "", label, str(st["count"]),
                         _ms(st["mean"]), _ms(st["p50"]), _ms(st["p99"])])
            first = False
    lines += _table(["step", "", "n", "mean", "p50", "p99"], rows, align="llrrrr")
    placed = []
    for entry in summary["stages"]:
        if entry.get("devices"):
            where = ", ".join(f"{d} {n}" for d, n in entry["devices"].items())
            batch = f", mean batch {entry['batch_mean']:.2f}" if entry.get("batch_mean") is not None else ""
            placed.append(f"  {entry['step']}: {where}{batch}")
    if placed:
        lines.append("requests per device")
        lines += placed
    sh = summary.get("shares") or {}
    if sh.get("model_compute_s"):
        lines.append(f"next to the model's compute ({sh['model_compute_s'] * 1e3:.1f} ms summed): "
                     f"decode {_pct(sh['decode_compute_share'])}, "
                     f"GPU-to-GPU hand-off {_pct(sh['handoff_share'])} "
                     f"(exposed {_pct(sh.get('handoff_exposed_share'))}), "
                     f"writing slots {_pct(sh['publish_share'])}")
    lines.append("")

    gpus = summary["gpus"]
    if gpus["per_gpu"]:
        lines.append(f"GPUs (NVML samples inside the window: {gpus['in_window']})")
        rows = []
        for g in gpus["per_gpu"]:
            start = g.get("start") or {}
            rows.append([str(g["gpu"]), str(g["samples"]), _fmt(g["util_mean_pct"], ".1f"),
                         _fmt(g["util_max_pct"], ".0f"), _fmt(g["mem_max_mib"], ".0f"),
                         _fmt(g["mem_total_mib"], ".0f"),
                         f"{_fmt(start.get('util_pct'), '.0f')}% {_fmt(start.get('mem_used_mib'), '.0f')} MiB"
                         if start else "-"])
        lines += _table(["gpu", "samples", "util mean %", "util max %", "mem max MiB", "mem total MiB",
                         "before run"], rows)
    else:
        reason = summary["run"].get("nvml_reason")
        lines.append("GPUs: no NVML samples" + (f" ({reason})" if reason else ""))
    lines.append("")

    if summary["failures"]:
        lines.append("failures (all requests, warm-up included)")
        lines += _table(["count", "status", "warm-up", "reason"],
                        [[str(f["count"]), f["status"], "yes" if f["warmup"] else "no", f["reason"] or "-"]
                         for f in summary["failures"]], align="rlll")
        lines.append("")

    if summary["warnings"]:
        lines.append("warnings")
        lines += [f"  - {w}" for w in summary["warnings"]]
        lines.append("")
    lines.append(f"percentiles: {summary['percentile_method']}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# From the logs
# --------------------------------------------------------------------------------------------

def summary_from_run_dir(run_dir) -> dict:
    """Recompute a run's summary from its requests.csv, nvml.csv and run.json."""
    from pipeline.serving.gpu_monitor import read_samples_csv

    run_dir = Path(run_dir)
    run_info = json.loads((run_dir / "run.json").read_text())
    rows = read_csv(run_dir / "requests.csv")
    nvml_path = run_dir / "nvml.csv"
    samples = read_samples_csv(nvml_path) if nvml_path.exists() else []
    return summarize(rows, run_info["step_names"], run_info, samples)
