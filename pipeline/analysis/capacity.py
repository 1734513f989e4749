"""Capacity under a latency SLO (MLPerf's server scenario): the rule that judges one run, and the
search that finds the highest arrival rate meeting it.

A probe is a real run at one rate. It meets the SLO only when its p99 latency is within the bound
*and* every request finished ok (a run that dropped requests has latency of survivors only) *and*
the pipeline kept up with the load (it delivered at least validity.KEEP_UP_SHARE of the realised
offered rate: a short probe whose queues grew all along can still show a p99 under the bound)
*and* the client kept to its schedule (limits scaled to the mean interval). `judge_probe` is
applied by the search as each probe ends, and again by compare.py to the logs, so both agree.

The search brackets the capacity (doubling up from a passing rate, halving down from a failing
one), then bisects geometrically until the bracket is within --rel-tol. It sets nominal rates
(1000 / mean interval); every probe uses the same arrival seed, so probes differ only in how fast
one and the same pattern is played (latency then grows with the rate almost monotonically), and
the realised/nominal ratio of that one pattern is the same for every probe: the capacity is
reported as the realised offered rate of the passing probe, never the nominal one.

A p99 needs >= 100 measured requests to mean anything (statistics.MIN_FOR_P99); each probe issues
--min-requests (default that number). When probes measure fewer, the result and the comparison
say so.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from pipeline.analysis import validity
from pipeline.analysis.statistics import MIN_FOR_P99
from pipeline.analysis.sweep_folder import (
    SWEEP_FILE,
    Interrupts,
    SweepResult,
    check_configs,
    check_logs,
    config_labels,
    finish,
    interval_for_rate,
    point_line,
    relative_run_dir,
    run_one,
    start_record,
    stderr_log,
    with_overrides,
    write_json,
)
from pipeline.analysis.sweep_plan import capacity_plan_text

# --------------------------------------------------------------------------------------------
# Meeting the SLO
# --------------------------------------------------------------------------------------------

@dataclass
class Verdict:
    passed: bool
    reasons: list[str]  # why it failed (empty when it passed)
    notices: list[str]  # what limits the probe's meaning without failing it (too short)


def judge_probe(summary: dict, slo_p99_s: float) -> Verdict:
    """Whether one run meets the SLO: p99 within the bound, every request ok, the pipeline keeping
    up with the offered load, the client on schedule."""
    reasons, notices = [], []
    error = summary["run"].get("error")
    if error:
        reasons.append(f"the run ended early: {error}")
    c = summary["counts"]
    not_ok = {k: c[k] for k in ("error", "dropped", "unfinished") if c.get(k)}
    if c.get("warmup_not_ok"):
        not_ok["warm-up not ok"] = c["warmup_not_ok"]
    if not_ok:
        parts = ", ".join(f"{k} {v}" for k, v in not_ok.items())
        reasons.append(f"{sum(not_ok.values())} request(s) did not finish ok ({parts})")
    judged = summary.get("validity") or validity.judge(summary)
    if judged["kept_up"] is False:
        load = summary["load"]
        reasons.append(f"overloaded: delivered {load['delivered_rps']:.2f} req/s, "
                       f"{judged['delivered_share']:.0%} of the {load['offered_rps']:.2f} req/s "
                       f"offered (needs >= {validity.KEEP_UP_SHARE:.0%})")
    elif judged["kept_up"] is None and not summary["load"]["bulk"] and summary["counts"]["ok"]:
        notices.append("too few completions to judge whether it kept up with the load")
    if validity.client_fell_behind(summary):
        lag = summary["issue_lag_s"]
        reasons.append(f"the client fell behind its schedule (issue lag p99 {lag['p99'] * 1e3:.1f} ms, "
                       f"max {lag['max'] * 1e3:.1f} ms): the offered load was not delivered")
    lat = summary["latency_s"]
    p99 = lat.get("p99")
    if p99 is None:
        reasons.append("no measured request finished: no p99")
    elif p99 > slo_p99_s:
        reasons.append(f"p99 {p99 * 1e3:.1f} ms > SLO {slo_p99_s * 1e3:g} ms")
    n = lat.get("count") or 0
    if 0 < n < MIN_FOR_P99:
        notices.append(f"too short: p99 from {n} requests (need >= {MIN_FOR_P99})")
    return Verdict(not reasons, reasons, notices)


def capacity_from_probes(probes: list[tuple[float, bool]]) -> tuple[float | None, float | None]:
    """(capacity, lowest failing rate) from judged probes: the highest passing rate below the
    lowest failing one. The same rule the search's final bracket follows, so a comparison
    re-rendered from the logs finds the same capacity."""
    failing = [r for r, ok in probes if not ok]
    bad = min(failing) if failing else None
    passing = [r for r, ok in probes if ok and (bad is None or r < bad)]
    return (max(passing) if passing else None), bad


def capacity_notices(probes: list[dict]) -> list[str]:
    """What limits a capacity's meaning: probes too short for their p99."""
    short = [p for p in probes if any(n.startswith("too short") for n in p.get("notices") or [])]
    if not short:
        return []
    return [f"{len(short)} of {len(probes)} probe(s) measured fewer than {MIN_FOR_P99} requests, "
            "too few for a meaningful p99: the capacity is indicative only (raise --min-requests)"]


def capacity_entry(probes: list[dict]) -> dict:
    """The capacity a set of judged probes gives: the bracket on nominal rates (the search's
    knob), reported as the realised offered rates of the probes at its ends."""
    nominal, first_bad = capacity_from_probes([(p["rate_rps"], p["passed"]) for p in probes])
    at = next((p for p in probes if p["rate_rps"] == nominal and p["passed"]), None)
    failing = next((p for p in probes if p["rate_rps"] == first_bad and not p["passed"]), None)
    realised = lambda p: (p.get("offered_rps") if p and p.get("offered_rps") is not None
                          else (p or {}).get("rate_rps"))
    return {"capacity_rps": realised(at), "capacity_nominal_rps": nominal,
            "first_failing_rps": realised(failing), "first_failing_nominal_rps": first_bad,
            "at_capacity": at, "first_failing": failing}


def probe_facts(summary: dict) -> dict:
    """What a probe record keeps of its run (as compare shows it)."""
    from pipeline.analysis.runs import run_metrics

    m = run_metrics(summary)
    return {"offered_rps": m["offered_rps"], "achieved_rps": m["achieved_rps"],
            "delivered_rps": m["delivered_rps"], "p99_ms": m["p99_ms"],
            "output_fps": m["output_fps"], "output_clips_per_s": m["output_clips_per_s"],
            "ok": m["ok"]}


# --------------------------------------------------------------------------------------------
# The search
# --------------------------------------------------------------------------------------------

def _round_rate(rate: float) -> float:
    """Probe rates to 3 significant digits: nobody needs a capacity to more, and names stay short."""
    if rate <= 0:
        return rate
    digits = 2 - int(math.floor(math.log10(rate)))
    return round(rate, digits)


@dataclass
class SearchOutcome:
    capacity: float | None  # highest passing rate below the lowest failing one
    hi: float | None  # lowest failing rate
    probes: list[tuple[float, bool]]  # (rate, passed) in probe order
    stop: str  # why the search stopped


def bisect_capacity(probe: Callable[[float], bool], lo: float | None = None, hi: float | None = None,
                    start: float = 1.0, rel_tol: float = 0.05, max_probes: int = 16,
                    min_rate: float = 0.01, max_rate: float = 1e5) -> SearchOutcome:
    """Highest rate r with probe(r) True, assuming (roughly) pass below and fail above it.

    Brackets first: probe `lo` and `hi` as given (or `start`), double up from a pass until a fail,
    halve down from a fail until a pass; then bisect geometrically until hi/lo - 1 <= rel_tol.
    Every probed rate is rounded to 3 significant digits.
    """
    probes: list[tuple[float, bool]] = []
    good, bad = None, None

    def try_rate(rate: float) -> bool:
        nonlocal good, bad
        rate = _round_rate(rate)
        ok = bool(probe(rate))
        probes.append((rate, ok))
        # A pass above a fail is noise: the bracket trusts the fail (the rule compare re-applies).
        good, bad = capacity_from_probes(probes)
        return ok

    def out(stop: str) -> SearchOutcome:
        return SearchOutcome(good, bad, probes, stop)

    firsts = [r for r in (lo, hi) if r is not None] or [start]
    for r in firsts:
        if len(probes) >= max_probes:
            return out(f"stopped after {max_probes} probes while bracketing")
        try_rate(r)
    while good is None:  # halve down from the lowest failure
        r = bad / 2
        if r < min_rate:
            return out(f"no passing rate found: {bad} req/s, the lowest tried, fails the SLO "
                       f"(halving again would go below {min_rate:g} req/s)")
        if len(probes) >= max_probes:
            return out(f"stopped after {max_probes} probes: no passing rate found")
        try_rate(r)
    while bad is None:  # double up from the highest pass
        r = good * 2
        if r > max_rate:
            return out(f"{good} req/s still passes; not bracketed below {max_rate:g} req/s "
                       "(the capacity is at least this)")
        if len(probes) >= max_probes:
            return out(f"stopped after {max_probes} probes: no failing rate found (the capacity "
                       f"is at least {good} req/s)")
        try_rate(r)
    while bad / good - 1 > rel_tol:
        if len(probes) >= max_probes:
            return out(f"stopped after {max_probes} probes with the bracket at "
                       f"[{good}, {bad}] req/s (wider than --rel-tol {rel_tol:g})")
        mid = _round_rate(math.sqrt(good * bad))
        if mid <= good or mid >= bad:  # 3 significant digits leave nothing between them
            return out(f"bracket [{good}, {bad}] req/s: no rate between them at 3 significant digits")
        try_rate(mid)
    return out(f"bracket [{good}, {bad}] req/s within relative tolerance {rel_tol:g}")



@dataclass
class CapacityResult:
    config: str
    slo_p99_ms: float
    capacity_rps: float | None  # realised offered rate of the highest passing probe
    capacity_nominal_rps: float | None  # its nominal rate (the search's knob)
    first_failing_rps: float | None
    first_failing_nominal_rps: float | None
    stop: str
    probes: list[dict] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


def search_capacity(cfg, label: str, slo_p99_ms: float, opts, sweep_dir: Path, *, lo=None, hi=None,
                    start: float = 1.0, rel_tol: float = 0.05, max_probes: int = 16,
                    min_requests: int = MIN_FOR_P99, min_duration_s: float = 0.0,
                    command: str | None = None, run_fn: Callable | None = None, log=None,
                    interrupts: Interrupts | None = None, on_probe=None) -> CapacityResult:
    """The capacity of one config under `p99 <= slo_p99_ms`; every probe is a real run."""
    from pipeline.serving.orchestrator import run as orchestrator_run

    run_fn = run_fn or orchestrator_run
    log = log or stderr_log
    interrupts = interrupts or Interrupts()
    slo_s = slo_p99_ms / 1000.0
    probes: list[dict] = []

    def probe(rate: float) -> bool:
        if interrupts.seen:
            raise KeyboardInterrupt
        mi = interval_for_rate(rate)
        videos = max(min_requests, math.ceil(rate * min_duration_s))
        run_opts = replace(opts, mean_interval_ms=mi, videos=videos)
        args = {**asdict(run_opts), "config": cfg.source, "config_label": label,
                "sweep": str(sweep_dir), "capacity_probe": len(probes), "slo_p99_ms": slo_p99_ms,
                "command": command}
        t = time.monotonic()
        result, error = run_one(run_fn, cfg, run_opts, args, interrupts)
        if result is not None:
            verdict = judge_probe(result.summary, slo_s)
        else:
            verdict = Verdict(False, [error or "the run did not finish"], [])
        probes.append({
            "rate_rps": rate, "mean_interval_ms": mi, "requests": videos,
            "run_dir": relative_run_dir(getattr(result, "run_dir", None), sweep_dir),
            "passed": verdict.passed, "reasons": verdict.reasons, "notices": verdict.notices,
            **(probe_facts(result.summary) if result is not None else {}),
            "elapsed_s": round(time.monotonic() - t, 3)})
        log(f"  probe {len(probes)}: {rate:g} req/s nominal -> "
            + ("meets" if verdict.passed else "fails") + f" the SLO: {point_line(result)}"
            + ("" if verdict.passed else f"; {'; '.join(verdict.reasons)}")
            + (f" [{'; '.join(verdict.notices)}]" if verdict.notices else ""))
        if on_probe is not None:
            on_probe(probes)
        if interrupts.after(result):
            raise KeyboardInterrupt
        return verdict.passed

    log(f"capacity of {label} under p99 <= {slo_p99_ms:g} ms ({min_requests} requests per probe"
        + (f", at least {min_duration_s:g} s" if min_duration_s else "") + ")")
    try:
        stop = bisect_capacity(probe, lo=lo, hi=hi, start=start, rel_tol=rel_tol,
                               max_probes=max_probes).stop
    except KeyboardInterrupt:
        interrupts.seen = True
        stop = "interrupted"
    found = capacity_entry(probes)
    notices = capacity_notices(probes)
    result = CapacityResult(label, slo_p99_ms, found["capacity_rps"], found["capacity_nominal_rps"],
                            found["first_failing_rps"], found["first_failing_nominal_rps"], stop,
                            probes, notices)
    cap = result.capacity_rps
    log(f"capacity of {label}: "
        + (f"{cap:.3g} req/s offered (nominal {result.capacity_nominal_rps:g})"
           if cap is not None else "none found")
        + f" ({stop})" + "".join(f"\n  notice: {n}" for n in notices))
    return result


def run_capacity(cfgs, slo_p99_ms: float, opts, name: str | None = None,
                 command: str | None = None, overrides=(), run_fn=None, log=None,
                 render: bool = True, dry_run: bool = False, **search) -> SweepResult:
    """A capacity search per config, in one `capacity-...` folder (dry_run: check everything
    and say what would run, in the result's plan; nothing starts)."""
    if not slo_p99_ms > 0:
        raise ValueError("--slo-p99-ms must be > 0")
    lo, hi = search.get("lo"), search.get("hi")
    if lo is not None and hi is not None and not lo < hi:
        raise ValueError(f"--lo {lo:g} must be below --hi {hi:g}: --lo is a rate expected to "
                         f"meet the SLO, --hi one expected to fail it")
    log = log or stderr_log
    cfgs = with_overrides(cfgs, overrides)
    plans = check_configs(cfgs, opts)
    labels = config_labels(cfgs)
    if dry_run:
        return SweepResult(None, {}, plan=capacity_plan_text(cfgs, labels, plans, slo_p99_ms,
                                                             opts, search))
    check_logs(opts, log)
    name = name or "+".join(labels)
    sweep_dir, record = start_record("capacity", "capacity", name, command, labels, cfgs,
                                     overrides, opts, {
        "slo_p99_ms": slo_p99_ms,
        "search": dict(search),
        "min_for_p99": MIN_FOR_P99,
        "capacity": [],
    })
    log(f"capacity search: {len(cfgs)} config(s); folder {sweep_dir}")
    with Interrupts() as interrupts:
        for cfg, label in zip(cfgs, labels):
            entry = {"config": label, "config_file": cfg.source, "slo_p99_ms": slo_p99_ms,
                     "capacity_rps": None, "capacity_nominal_rps": None, "first_failing_rps": None,
                     "first_failing_nominal_rps": None, "stop": "running", "probes": [],
                     "notices": []}
            record["capacity"].append(entry)

            def save(probes, entry=entry):
                entry["probes"] = probes
                write_json(sweep_dir / SWEEP_FILE, record)

            result = search_capacity(cfg, label, slo_p99_ms, opts, sweep_dir, command=command,
                                     run_fn=run_fn, log=log, interrupts=interrupts,
                                     on_probe=save, **search)
            entry.update({k: v for k, v in asdict(result).items() if k != "config"})
            write_json(sweep_dir / SWEEP_FILE, record)
            if interrupts.seen:
                break
    return finish(sweep_dir, record, interrupts, render, log)
