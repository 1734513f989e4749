"""The printed report of a run: a rendering of its summary (summary.py) and nothing else, so every
number in the text is in report.json, and a report re-rendered from the logs reads the same.

What each figure means is said once, in the report's closing notes (NOTES) and in records.py.
"""
from __future__ import annotations

from pipeline.analysis import validity
from pipeline.analysis.change import change_lines
from pipeline.analysis.formatting import fmt, ms, pct, text_table
from pipeline.analysis.statistics import (
    MIN_FOR_P90,
    MIN_FOR_P99,
    PERCENTILE_METHOD,
    percentile,
)
from pipeline.analysis.summary import summarize, summary_from_run_dir
from pipeline.analysis.truth import truth_lines

# The report's entry points: what a run's numbers are, and how they read.
__all__ = ["format_report", "summarize", "summary_from_run_dir", "percentile",
           "PERCENTILE_METHOD", "MIN_FOR_P99", "MIN_FOR_P90", "NOTES"]

_FIELD_LABELS = {"queue_wait_s": "queue wait", "handoff_exposed_s": "hand-off (exposed)",
                 "slot_wait_s": "slot wait", "stream_wait_s": "stream wait",
                 "compute_s": "compute", "publish_s": "publish", "handoff_s": "  copy time"}
_PART_LABELS = {"lag_s": "lag", "put_s": "put", **_FIELD_LABELS}

NOTES = (
    "latency: from each request's scheduled time to the completion of its last device work, "
    "stamped by the last step's runner when its GPU finished the batch (host clock on the CPU)",
    "offered: the rate of the schedule the client really sent, (n-1)/(last - first scheduled "
    "time); nominal: 1000/mean interval; delivered: completions per second from the first to the "
    "last; throughput: ok requests over the window",
    "per-step columns, along each request's path: queue wait (input ready -> taken), hand-off "
    "(exposed part of bringing inputs onto the device), slot wait (a free output slot), stream "
    "wait (queued on the GPU stream behind earlier batches), compute, publish (writing the "
    "output slot); each interval is counted once, so the columns add up to the latency; copy "
    "time is the link's busy time and overlaps them",
)


def format_report(summary: dict) -> str:
    """The plain-text report of a summary (every number in it is in the summary)."""
    lines = _header(summary)
    lines += _load(summary)
    lines += _latency(summary)
    lines += _steps(summary)
    lines += _breakdown(summary)
    lines += change_lines(summary.get("change"))
    lines += truth_lines(summary.get("truth"))
    lines += _gpus(summary)
    if summary["failures"]:
        lines.append("failures (all requests, warm-up included)")
        lines += text_table(["count", "status", "warm-up", "reason"],
                            [[str(f["count"]), f["status"], "yes" if f["warmup"] else "no",
                              f["reason"] or "-"] for f in summary["failures"]], align="rlll")
        lines.append("")
    if summary["warnings"]:
        lines.append("warnings")
        lines += [f"  - {w}" for w in summary["warnings"]]
        lines.append("")
    lines.append("notes")
    lines += [f"  - {n}" for n in NOTES]
    lines.append(f"  - percentiles: {summary['percentile_method']}")
    return "\n".join(lines) + "\n"


def _header(summary: dict) -> list[str]:
    run = summary["run"]
    name = run.get("config_name") or run.get("config") or run.get("name") or "run"
    # Logs from before the model was recorded are all FLAVR's.
    lines = [f"{run.get('model_title', 'FLAVR')} serving benchmark: {name}"]
    headline = validity.drops_headline(summary)
    if headline:
        lines.append(f"!! {headline}")
    extras = [f"{k}={v}" for k, v in run.items()
              if k not in ("t0", "step_names", "nvml_baseline", "error", "mps", "model_title",
                           "clock_error_s", "start_up_s")
              and isinstance(v, (str, int, float, bool))]
    if extras:
        lines.append("run: " + ", ".join(extras))
    if run.get("mps"):
        lines.append(f"mps: {run['mps']}")
    elif run.get("device_kind") == "cuda":  # logs of a run from before MPS was recorded
        lines.append("mps: unknown (not recorded in this run's logs)")
    bounds = run.get("clock_bounds") or {}
    if run.get("launcher", "local") != "local":
        remote = {n: b for n, b in bounds.items() if b > 0}
        lines.append("clock: every process on the main process's machine (one CLOCK_MONOTONIC)"
                     if not remote else
                     f"clock: {len(remote)} process(es) on other hosts, aligned to the main "
                     f"process's clock within {1e3 * max(remote.values()):.3f} ms (half the "
                     f"least round trip; largest: {max(remote, key=remote.get)})")
    lines.append("steps: " + " -> ".join(summary["steps"]))
    return lines + [""]


def _load(summary: dict) -> list[str]:
    counts, load = summary["counts"], summary["load"]
    # Warm-ups end before the measured schedule starts, unless the run stopped among them.
    unfinished = counts.get("warmup_not_ok", 0)
    warm = ("finished before the measured schedule" if not unfinished
            else f"{unfinished} of them not ok: see failures")
    lines = [f"requests    {counts['total']} total: {counts['warmup']} warm-up (excluded, {warm}), "
             f"{counts['measured']} measured: {counts['ok']} ok, "
             f"{counts['error']} error, {counts['dropped']} dropped, "
             f"{counts['unfinished']} unfinished"]
    if load["bulk"]:
        offered = "bulk (all measured requests scheduled at once)"
    else:
        # One arrival has no rate of its own.
        offered = ("one measured request (no offered rate" if load.get("sent") == 1
                   else f"offered {fmt(load['offered_rps'])} req/s (realised by the schedule sent")
        if load["nominal_rps"] is not None:
            offered += f"; nominal {load['nominal_rps']:.2f} at mean interval {load['mean_interval_ms']:g} ms"
        offered += ")"
    delivered = load.get("delivered_rps")
    lines.append(f"load        {offered}, achieved {fmt(load['achieved_rps'])} req/s"
                 + (f", delivered {fmt(delivered)} req/s" if delivered is not None else ""))
    w = summary["window"]
    lines.append(f"window      {fmt(w['duration_s'], '.3f')} s, from the first measured request's "
                 "scheduled time to the last measured completion")
    t = summary["throughput"]
    unit = summary["run"].get("output_unit", "frames")  # older logs are all FLAVR's
    lines.append(f"throughput  {fmt(t['requests_per_s'])} requests/s, "
                 f"{fmt(t['output_frames_per_s'], '.1f')} output {unit}/s ({t['requests']} ok "
                 f"measured requests, {t['output_frames']} {unit})")
    start_up = summary["run"].get("start_up_s")  # absent from older logs
    if start_up is not None:
        lines.append(f"start-up    {start_up:.2f} s, from starting the first process to every "
                     "process built and warmed up (before any request)")
    return lines + [""]


def _latency(summary: dict) -> list[str]:
    lat = summary["latency_s"]
    lines = [f"end-to-end latency, ms (from the scheduled time; {lat['count']} requests)"]
    lines += text_table(["", "mean", "p50", "p90", "p99", "max"],
                        [["", ms(lat["mean"]), ms(lat["p50"]), ms(lat["p90"]), ms(lat["p99"]),
                          ms(lat["max"])]])
    lag = summary["issue_lag_s"]
    lines.append(f"  client issue lag (began to issue - scheduled): p50 {ms(lag['p50'])}, "
                 f"p99 {ms(lag['p99'])}, max {ms(lag['max'])} ms")
    return lines + [""]


def _steps(summary: dict) -> list[str]:
    lines = ["per step, ms (ok measured requests)"]
    rows = []
    for entry in summary["stages"]:
        first = True
        for key, label in _FIELD_LABELS.items():
            st = entry.get(key)
            if not st or st["count"] == 0:
                continue
            if key in ("handoff_s",) and not st["mean"]:
                continue  # nothing was copied
            rows.append([entry["step"] if first else "", label, str(st["count"]),
                         ms(st["mean"]), ms(st["p50"]), ms(st["p99"])])
            first = False
    lines += text_table(["step", "", "n", "mean", "p50", "p99"], rows, align="llrrrr")
    placed = []
    for entry in summary["stages"]:
        if entry.get("devices"):
            where = ", ".join(f"{d} {n}" for d, n in entry["devices"].items())
            batch = (f", mean batch {entry['batch_mean']:.2f}"
                     if entry.get("batch_mean") is not None else "")
            placed.append(f"  {entry['step']}: {where}{batch}")
    if placed:
        lines.append("requests per device")
        lines += placed
    sh = summary.get("shares") or {}
    if sh.get("model_compute_s"):
        lines.append(f"next to the model's compute ({sh['model_compute_s'] * 1e3:.1f} ms summed): "
                     f"decode {pct(sh['decode_compute_share'])}, "
                     f"GPU-to-GPU hand-off {pct(sh['handoff_share'])} "
                     f"(exposed {pct(sh.get('handoff_exposed_share'))}), "
                     f"writing slots {pct(sh['publish_share'])}")
    lines += _decode_lines(summary)
    return lines + [""]


def _decode_lines(summary: dict) -> list[str]:
    """Decode's place next to the model (analysis/placement.py), and per-stream figures."""
    lines = []
    d = summary.get("decode")
    if d:
        model = ", ".join(f"{m['step']} {100 * m['busy']:.0f}% ({m['replicas']})"
                          for m in d["model"])
        lines.append(f"busy over the window: decode {100 * d['decode_busy']:.0f}% "
                     f"({d['decode_workers']} worker(s), {1e3 * d['decode_s_per_request']:.2f} ms "
                     f"per request), model {model}")
    st = summary.get("streams")
    if st:
        lines.append(f"streams: {st['streams']}, requests per stream {st['requests_min']}.."
                     f"{st['requests_max']} (median {st['requests_median']}), latency p50 per "
                     f"stream {1e3 * st['latency_p50_min_s']:.1f}..{1e3 * st['latency_p50_max_s']:.1f}"
                     f" ms (slowest: stream {st['worst_stream']})")
    return lines


def _breakdown(summary: dict) -> list[str]:
    b = summary.get("breakdown")
    if not b:
        return []
    lines = [f"where the time went, mean ms per request ({b['requests']} ok measured requests; "
             "adds up to the mean latency)"]
    rows, previous = [], None
    for p in b["parts"]:
        if p["mean_s"] == 0 and p["column"] in ("handoff_exposed_s", "stream_wait_s", "put_s"):
            continue  # nothing there (the CPU has no stream, nothing crossed a link)
        rows.append([p["part"] if p["part"] != previous else "", _PART_LABELS[p["column"]],
                     ms(p["mean_s"]), pct(p["mean_s"] / b["latency_mean_s"])
                     if b["latency_mean_s"] else "-"])
        previous = p["part"]
    rows.append(["sum", "", ms(b["accounted_mean_s"]), ""])
    rows.append(["latency", "mean", ms(b["latency_mean_s"]), ""])
    share = b["residual_share"]
    rows.append(["residual", "", ms(b["residual_mean_s"]),
                 "-" if share is None else f"{100 * share:.3f}%"])
    lines += text_table(["part", "", "mean", "of latency"], rows, align="llrr")
    return lines + [""]


def _gpus(summary: dict) -> list[str]:
    gpus = summary["gpus"]
    if not gpus["per_gpu"]:
        reason = summary["run"].get("nvml_reason")
        return ["GPUs: no NVML samples" + (f" ({reason})" if reason else ""), ""]
    lines = [f"GPUs (NVML samples inside the window: {gpus['in_window']})"]
    rows = []
    for g in gpus["per_gpu"]:
        start = g.get("start") or {}
        rows.append([str(g["gpu"]), str(g["samples"]), fmt(g["util_mean_pct"], ".1f"),
                     fmt(g["util_max_pct"], ".0f"), fmt(g["mem_max_mib"], ".0f"),
                     fmt(g["mem_total_mib"], ".0f"),
                     f"{fmt(start.get('util_pct'), '.0f')}% {fmt(start.get('mem_used_mib'), '.0f')} MiB"
                     if start else "-"])
    lines += text_table(["gpu", "samples", "util mean %", "util max %", "mem max MiB",
                         "mem total MiB", "before run"], rows)
    return lines + [""]
