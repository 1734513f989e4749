"""What limits the meaning of a run's numbers: judged from its summary, shown as its warnings, and
applied again by the capacity search to each probe.

- Dropped requests: the latency percentiles are of the survivors only, so they are not valid for
  the offered load (the headline says so).
- Overload: the pipeline delivered results more slowly than they were offered (the queues grew
  for the whole run): its latency depends on how long the run was, not on the load alone.
- The client behind its schedule: limits scale with the mean interval (a lag of a few ms matters
  at 200 requests/s and not at 2).
- Too few requests for a percentile; failures; a GPU busy before the start; processes sharing a
  GPU without MPS.
"""
from __future__ import annotations

import collections

from pipeline.analysis import placement
from pipeline.analysis.formatting import fmt
from pipeline.analysis.statistics import MIN_FOR_P90, MIN_FOR_P99

# The client is behind its schedule when its issue lag's p99 exceeds this share of the mean
# interval, or its max twice the mean interval; never below the floors (the scheduler noise of a
# loaded 2-core machine, where 5-10 ms of lag happen at any rate).
LAG_P99_SHARE, LAG_P99_FLOOR_S = 0.25, 0.005
LAG_MAX_SHARE, LAG_MAX_FLOOR_S = 2.0, 0.050
# Delivered below this share of the offered rate: the pipeline did not keep up.
KEEP_UP_SHARE = 0.90
MIN_FOR_RATES = MIN_FOR_P90  # completions needed before delivered-vs-offered is judged
BUSY_UTIL_PCT = 10
BUSY_MEM_MIB = 1024


def lag_limits(summary: dict) -> tuple[float, float] | None:
    """(p99, max) limits of the client's issue lag for this run's mean interval (realised, else
    nominal); None in bulk mode, where every request is due at once and there is no schedule to
    fall behind."""
    load = summary["load"]
    if load["bulk"]:
        return None
    interval = (1.0 / load["offered_rps"] if load.get("offered_rps")
                else (load.get("mean_interval_ms") or 0) / 1000.0)
    return (max(LAG_P99_SHARE * interval, LAG_P99_FLOOR_S),
            max(LAG_MAX_SHARE * interval, LAG_MAX_FLOOR_S))


def client_fell_behind(summary: dict) -> bool:
    """Whether the client issued requests later than scheduled beyond the limits."""
    limits, lag = lag_limits(summary), summary["issue_lag_s"]
    return bool(limits and lag.get("count") and (lag["p99"] > limits[0] or lag["max"] > limits[1]))


def judge(summary: dict) -> dict:
    """The verdicts the report's headline and the capacity search rest on."""
    c, load = summary["counts"], summary["load"]
    offered, delivered = load.get("offered_rps"), load.get("delivered_rps")
    judged = (offered is not None and delivered is not None
              and summary["throughput"]["requests"] >= MIN_FOR_RATES)
    return {
        "dropped": c["dropped"],
        "latency_valid_for_load": c["dropped"] == 0,
        "delivered_share": delivered / offered if judged else None,
        "kept_up": (delivered >= KEEP_UP_SHARE * offered) if judged else None,
        "client_behind": client_fell_behind(summary),
    }


def drops_headline(summary: dict) -> str | None:
    """The headline of a run that dropped requests, or None."""
    c = summary["counts"]
    if not c["dropped"]:
        return None
    if summary["run"].get("error"):
        # A stopped run leaves the requests it never admitted 'dropped' (finish.py): say why.
        return (f"latency NOT VALID for the offered load: the run ended early, and {c['dropped']} "
                f"of {c['measured']} measured requests were never admitted or dropped; the "
                f"percentiles are of the {c['ok']} that finished ok")
    return (f"latency NOT VALID for the offered load: {c['dropped']} of {c['measured']} measured "
            f"requests were dropped; the percentiles are of the {c['ok']} that finished ok")


def keep_up_text(summary: dict) -> str:
    v, load = summary["validity"], summary["load"]
    return (f"the pipeline did not keep up with the offered load: it delivered "
            f"{fmt(load['delivered_rps'])} req/s while {fmt(load['offered_rps'])} req/s were "
            f"offered ({v['delivered_share']:.0%}; below {KEEP_UP_SHARE:.0%}): queues grew all run, "
            "so its latency depends on the run's length, not only on the load")


def lag_text(summary: dict) -> str:
    p99_limit, max_limit = lag_limits(summary)
    lag = summary["issue_lag_s"]
    return (f"the client fell behind its schedule: issue lag p99 {lag['p99'] * 1e3:.1f} ms, "
            f"max {lag['max'] * 1e3:.1f} ms (limits {p99_limit * 1e3:.3g} / {max_limit * 1e3:.3g} "
            f"ms at this load: {LAG_P99_SHARE:.0%} and {LAG_MAX_SHARE:.0%} of the mean interval)")


def warnings(summary: dict) -> list[str]:
    out = []
    run = summary["run"]
    if run.get("error"):
        out.append(f"the run ended early: {run['error']}")
    out += [str(n) for n in run.get("notices") or []]
    counts = summary["counts"]
    if counts["measured"] == 0:
        out.append("no measured requests: the run was all warm-up (or empty)")
    elif counts["ok"] == 0:
        out.append("no measured request finished ok: there is no latency or throughput to report")
    headline = drops_headline(summary)
    if headline:
        out.append(headline)
    if summary["validity"]["kept_up"] is False:
        out.append(keep_up_text(summary))
    if summary["validity"]["client_behind"]:
        out.append(lag_text(summary) + "; latencies still count from the scheduled times, but "
                   "the offered load was not delivered as planned")

    n = summary["latency_s"]["count"]
    if 0 < n < MIN_FOR_P99:
        out.append(f"p99 from {n} requests is not meaningful; need >= {MIN_FOR_P99}")
    if 0 < n < MIN_FOR_P90:
        out.append(f"p90 from {n} requests is not meaningful; need >= {MIN_FOR_P90}")

    not_ok = sum(f["count"] for f in summary["failures"])
    if not_ok:
        by_status = collections.Counter()
        for f in summary["failures"]:
            by_status[f["status"]] += f["count"]
        parts = ", ".join(f"{k} {v}" for k, v in sorted(by_status.items()))
        warm = sum(f["count"] for f in summary["failures"] if f["warmup"])
        out.append(f"{not_ok} request(s) did not finish ok ({parts}"
                   + (f"; {warm} of them warm-up" if warm else "") + "): see failures")

    decode = summary.get("decode")
    saturated = summary["validity"]["kept_up"] is False or summary["load"].get("bulk")
    if decode and decode.get("starved") and saturated:
        out.append(placement.limited_text(decode))

    shared = _shared_without_mps(run)
    if shared:
        where = ", ".join(f"GPU {g} hosted {n} processes" for g, n in shared)
        why = run["mps"].removeprefix("off").lstrip(": ")
        out.append(f"{where} of this run without MPS ({why}): their CUDA contexts "
                   "time-slice the GPU (on one H200 the model ran 9% slower beside two "
                   "decode processes); " + _mps_advice(run))
    out += _busy_gpus(summary["gpus"])
    return out


def _busy_gpus(gpus: dict) -> list[str]:
    out = []
    for g in gpus["per_gpu"]:
        start = g.get("start")
        if not start:
            continue
        util, mem = start.get("util_pct"), start.get("mem_used_mib")
        if (util is not None and util > BUSY_UTIL_PCT) or (mem is not None and mem > BUSY_MEM_MIB):
            procs = start.get("processes") or []
            who = (f", {len(procs)} compute process(es) already there "
                   f"(pids {', '.join(map(str, procs))})" if procs else "")
            out.append(f"GPU {g['gpu']} was already busy before the run ({start['source']}: "
                       f"{fmt(util, '.0f')}% util, {fmt(mem, '.0f')} MiB used{who}); "
                       "other work may have shared it")
    return out


def _shared_without_mps(run: dict) -> list[tuple[str, int]]:
    """(GPU, process count) of each GPU that more than one process of a GPU run shared while MPS
    was off. Runs whose logs do not say (older ones) give none."""
    mps, counts = run.get("mps"), run.get("gpu_processes")
    if run.get("device_kind") != "cuda" or not isinstance(mps, str) or not mps.startswith("off"):
        return []
    return [(g, n) for g, n in sorted((counts or {}).items(), key=lambda kv: _gpu_order(kv[0]))
            if n > 1]


def _mps_advice(run: dict) -> str:
    if run.get("launcher") == "ray":  # Ray's actors are not MPS clients
        return "fewer processes per GPU avoid it"
    return "run with --mps on"


def _gpu_order(gpu) -> tuple[str, int]:
    """Sort key of a GPU label: an index (`1`) or a node's index (`node1:0`, Ray placements)."""
    node, _, index = str(gpu).rpartition(":")
    return node, int(index)
