"""Load sweeps and SLO capacity searches: many real runs, and one folder saying which run is which.

    python -m pipeline.analysis.sweep -c configs/flavr-whole.yaml -c configs/flavr-split.yaml -mi 200,100,50
    python -m pipeline.analysis.sweep -c configs/flavr-split.yaml --rates 5,10,20 --repeats 3
    python -m pipeline.analysis.sweep capacity -c configs/flavr-split.yaml --slo-p99-ms 500 [--lo 5 --hi 40]

Every point is an ordinary benchmark run (`pipeline.serving.orchestrator.run`, in this process, one after
another), kept in its usual logs folder. The sweep adds one folder,
`<logs>/sweep-<yymmdd_HHMMSS>-<name>/` (`capacity-...` for a capacity search), holding sweep.json
(the exact command, and which run folder belongs to which config, load and repeat) and the
comparison that `pipeline.analysis.compare` renders from those run folders.

Load sweep: configs x loads x repeats. Repeat k uses arrival seed `--seed + k` for every config and
load, so configs are compared on identical arrival patterns and repeats on different ones. Runs go
repeat by repeat (all configs and loads, then again), so slow drift of the machine (clocks, other
tenants) spreads over the configs instead of landing on whichever ran last.

Capacity (MLPerf's server scenario): the highest Poisson arrival rate at which the p99 end-to-end
latency stays within the bound. Each probe is a real run at one rate. A probe passes only when its
p99 is within the SLO *and* every request finished ok *and* the client kept to its schedule: a
system that drops requests, or a load that was never delivered, does not meet the SLO. The search
brackets the capacity (doubling up from a passing rate, halving down from a failing one), then
bisects geometrically until the bracket is within --rel-tol. Every probe uses the same arrival seed,
so probes differ only in how fast one and the same pattern is played; latency then grows with the
rate almost monotonically and bisection is not misled by a lucky seed at one rate.

A p99 needs >= 100 measured requests to mean anything (report.MIN_FOR_P99); each probe issues
--min-requests (default that number). When probes measure fewer, the result and the comparison
report say so.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import re
import shlex
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from pipeline.analysis.compare import (  # the rules a comparison re-applies to the logs
    SWEEP_FILE,
    Verdict,
    capacity_from_probes,
    capacity_notices,
    judge_probe,
    rate_of,
    run_metrics,
)
from pipeline.analysis.report import MIN_FOR_P99, _fmt
from pipeline.config import (
    CapacitySettings,
    RunSettings,
    SweepSettings,
    add_override_flag,
    add_setting_flags,
    check_flag_value,
    check_settings,
    settings_from_args,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")


# --------------------------------------------------------------------------------------------
# Loads
# --------------------------------------------------------------------------------------------


def _start_record(prefix: str, kind: str, name: str, command, labels, cfgs, overrides, opts,
                  specific: dict):
    """A new `<prefix>-...` folder and its sweep.json, written at once so an interrupted search
    still says what it was."""
    sweep_dir = create_sweep_dir(opts.logs_root, prefix, name)
    record = {
        "kind": kind,
        "name": name,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "cwd": str(Path.cwd()),
        "configs": [{"label": l, "name": c.name, "file": c.source} for l, c in zip(labels, cfgs)],
        "overrides": list(overrides),
        "options": asdict(opts),
        "status": "running",
        **specific,
    }
    _write_json(sweep_dir / SWEEP_FILE, record)
    return sweep_dir, record

MAX_LOADS = 100  # loads in one sweep (each is a run per config and repeat)


def _numbers(text: str, flag: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise ValueError(f"{flag}: no values in {text!r}")
    if len(values) > MAX_LOADS:
        raise ValueError(f"{flag}: at most {MAX_LOADS} loads, got {len(values)}")
    return values


def parse_loads(mean_intervals: str | None, rates: str | None) -> list[float]:
    """The sweep's loads as mean intervals in ms, from `-mi 200,100,50` or `--rates 5,10,20`;
    each within the bounds of a run's -mi (config/schema.py)."""
    if (mean_intervals is None) == (rates is None):
        raise ValueError("give the loads either as -mi (mean intervals, ms) or as --rates (req/s)")
    if mean_intervals is not None:
        return [check_flag_value(v, RunSettings, "mean_interval_ms", "-mi")
                for v in _numbers(mean_intervals, "-mi")]
    values = _numbers(rates, "--rates")
    for r in values:  # the same bounds as a capacity search's rates
        check_flag_value(r, CapacitySettings, "start", "--rates")
    return [interval_for_rate(r) for r in values]


def interval_for_rate(rate: float) -> float:
    """Mean interval in ms for a rate in req/s, rounded to 0.001 ms so folder names stay readable."""
    return round(1000.0 / rate, 3)


def _round_rate(rate: float) -> float:
    """Probe rates to 3 significant digits: nobody needs a capacity to more, and names stay short."""
    if rate <= 0:
        return rate
    digits = 2 - int(math.floor(math.log10(rate)))
    return round(rate, digits)


# --------------------------------------------------------------------------------------------
# The sweep folder
# --------------------------------------------------------------------------------------------

def sweep_dir_name(kind: str, name: str, when: _dt.datetime | None = None) -> str:
    when = when or _dt.datetime.now()
    name = _UNSAFE.sub("_", name).strip("_") or "sweep"
    return f"{kind}-{when:%y%m%d_%H%M%S}-{name}"


def create_sweep_dir(logs_root, kind: str, name: str) -> Path:
    from pipeline.serving.runlog import create_run_dir

    return create_run_dir(Path(logs_root), sweep_dir_name(kind, name))


def config_labels(cfgs) -> list[str]:
    """One label per config: its name; the file name where two share a name; #k as a last resort."""
    names = [c.name for c in cfgs]
    labels = []
    for c in cfgs:
        label = c.name
        if names.count(c.name) > 1 and c.source:
            label = Path(c.source).stem
        labels.append(label)
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if labels.count(label) == 1 else f"{label}#{seen[label]}")
    return out


def _relative(run_dir: Path | None, sweep_dir: Path) -> str | None:
    """A run folder as seen from the sweep folder, so the logs root can be moved as a whole."""
    if run_dir is None:
        return None
    run_dir, sweep_dir = Path(run_dir).resolve(), Path(sweep_dir).resolve()
    try:
        return str(Path("..") / run_dir.relative_to(sweep_dir.parent))
    except ValueError:
        return str(run_dir)


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def _check_configs(cfgs, opts) -> None:
    """Validate every config against this machine before the first run starts: a typo in the
    second config must not surface an hour into the sweep. Raises ConfigError."""
    from pipeline.serving.plan import plan_run

    for cfg in cfgs:
        plan_run(cfg, opts)


def _with_overrides(cfgs, overrides):
    """Every config with the same `--set FIELD=VALUE` assignments, as benchmark.py applies them."""
    if not overrides:
        return list(cfgs)
    from pipeline.config import apply_overrides

    return [apply_overrides(c, list(overrides)) for c in cfgs]


class _Interrupts:
    """Ctrl-C / SIGTERM between or during runs ends the sweep after the current run's logs are
    written (the orchestrator stops a run cleanly on either); the sweep folder is still written."""

    def __init__(self):
        self.seen = False

    def __enter__(self):
        def handler(signum, frame):
            self.seen = True
            raise KeyboardInterrupt
        self.previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc):
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)
        return False

    def after(self, result) -> bool:
        """True when the sweep must stop after this run."""
        error = getattr(result, "error", None) or ""
        if error.startswith("interrupted"):  # the orchestrator caught the signal itself
            self.seen = True
        return self.seen


def _run_one(run_fn, cfg, opts, args_for_log, interrupts):
    """One run; returns (result or None, error text or None)."""
    try:
        result = run_fn(cfg, opts, args_for_log=args_for_log)
    except KeyboardInterrupt:
        interrupts.seen = True
        return None, "interrupted before the run could write its logs"
    except Exception as exc:  # e.g. an unreadable clip: recorded, and the sweep goes on
        return None, f"the run could not start: {type(exc).__name__}: {exc}"
    return result, result.error


def _point_line(result) -> str:
    s = result.summary if result is not None else {}
    t, lat = s.get("throughput") or {}, s.get("latency_s") or {}

    return (f"{_fmt(t.get('requests_per_s'))} req/s, p50 {_fmt(lat.get('p50'), '.1f', 1e3)} ms, "
            f"p99 {_fmt(lat.get('p99'), '.1f', 1e3)} ms ({lat.get('count', 0)} requests)")


def _eta(started: float, done: int, total: int) -> str:
    if done == 0 or done >= total:
        return ""
    left = (time.monotonic() - started) / done * (total - done)
    return f"; about {left / 60:.1f} min left" if left >= 90 else f"; about {left:.0f} s left"


# --------------------------------------------------------------------------------------------
# Load sweep
# --------------------------------------------------------------------------------------------

@dataclass
class SweepResult:
    sweep_dir: Path
    record: dict
    interrupted: bool = False


def run_sweep(cfgs, mean_intervals: list[float], repeats: int, opts, name: str | None = None,
              command: str | None = None, overrides=(), run_fn: Callable | None = None,
              log: Callable[[str], None] | None = None, render: bool = True) -> SweepResult:
    """Run every config at every load, `repeats` times, and write the sweep folder.

    cfgs: loaded Config objects. opts: the RunSettings shared by all runs (seed is the base seed;
    mean_interval_ms is set per load). overrides: FIELD=VALUE assignments applied to every config
    (benchmark.py's --set). run_fn defaults to pipeline.serving.orchestrator.run.
    """
    from pipeline.serving.orchestrator import run as orchestrator_run

    if repeats < 1:
        raise ValueError("--repeats must be >= 1")
    check_settings(replace(opts, seed=opts.seed + repeats - 1))  # the last repeat's seed too
    run_fn = run_fn or orchestrator_run
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    cfgs = _with_overrides(cfgs, overrides)
    _check_configs(cfgs, opts)
    labels = config_labels(cfgs)
    name = name or "+".join(labels)
    sweep_dir, record = _start_record("sweep", "loads", name, command, labels, cfgs, overrides, opts, {
        "loads": [{"mean_interval_ms": mi, "rate_rps": rate_of(mi)} for mi in mean_intervals],
        "repeats": repeats,
        "seeds": [opts.seed + k for k in range(repeats)],
        "runs": [],
    })
    plan = [(k, i, mi) for k in range(repeats) for i in range(len(cfgs)) for mi in mean_intervals]
    log(f"sweep: {len(cfgs)} config(s) x {len(mean_intervals)} load(s) x {repeats} repeat(s) = "
        f"{len(plan)} runs; folder {sweep_dir}")
    started = time.monotonic()
    with _Interrupts() as interrupts:
        for n, (k, i, mi) in enumerate(plan, 1):
            cfg, label = cfgs[i], labels[i]
            run_opts = replace(opts, mean_interval_ms=mi, seed=opts.seed + k)
            args = {**asdict(run_opts), "config": cfg.source, "config_label": label,
                    "sweep": str(sweep_dir), "repeat": k, "command": command}
            t = time.monotonic()
            result, error = _run_one(run_fn, cfg, run_opts, args, interrupts)
            run_dir = getattr(result, "run_dir", None)
            record["runs"].append({
                "config": label, "config_file": cfg.source, "mean_interval_ms": mi,
                "rate_rps": rate_of(mi), "repeat": k, "seed": run_opts.seed,
                "run_dir": _relative(run_dir, sweep_dir), "error": error,
                "elapsed_s": round(time.monotonic() - t, 3)})
            _write_json(sweep_dir / SWEEP_FILE, record)
            load = "bulk" if mi == 0 else f"{rate_of(mi):g} req/s (mi {mi:g} ms)"
            log(f"[{n}/{len(plan)}] {label} @ {load}, repeat {k + 1}/{repeats}: "
                + (f"error: {error}" if error else _point_line(result))
                + f" [{time.monotonic() - t:.0f} s{_eta(started, n, len(plan))}]")
            if interrupts.after(result):
                break
    return _finish(sweep_dir, record, interrupts, render, log)


def _finish(sweep_dir: Path, record: dict, interrupts, render: bool, log) -> "SweepResult":
    """Close the folder's record (complete or interrupted) and render the comparison."""
    record["status"] = "interrupted" if interrupts.seen else "complete"
    _write_json(sweep_dir / SWEEP_FILE, record)
    if render:
        _render(sweep_dir, log)
    return SweepResult(sweep_dir, record, interrupts.seen)


def _render(sweep_dir: Path, log) -> None:
    from pipeline.analysis.compare import write_comparison

    try:
        comparison = write_comparison([sweep_dir], out_dir=sweep_dir)
    except Exception as exc:  # the runs are safe in their folders; re-render with pipeline.analysis.compare
        log(f"comparison failed: {type(exc).__name__}: {exc}; "
            f"re-render with: python -m pipeline.analysis.compare {sweep_dir}")
        return
    print(comparison.markdown)


# --------------------------------------------------------------------------------------------
# Capacity under an SLO
# --------------------------------------------------------------------------------------------

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
    capacity_rps: float | None
    first_failing_rps: float | None
    stop: str
    probes: list[dict] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


def search_capacity(cfg, label: str, slo_p99_ms: float, opts, sweep_dir: Path, *, lo=None, hi=None,
                    start: float = 1.0, rel_tol: float = 0.05, max_probes: int = 16,
                    min_requests: int = MIN_FOR_P99, min_duration_s: float = 0.0,
                    command: str | None = None, run_fn: Callable | None = None, log=None,
                    interrupts: _Interrupts | None = None, on_probe=None) -> CapacityResult:
    """The capacity of one config under `p99 <= slo_p99_ms`; every probe is a real run."""
    from pipeline.serving.orchestrator import run as orchestrator_run

    run_fn = run_fn or orchestrator_run
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    interrupts = interrupts or _Interrupts()
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
        result, error = _run_one(run_fn, cfg, run_opts, args, interrupts)
        if result is not None:
            verdict = judge_probe(result.summary, slo_s)
        else:
            verdict = Verdict(False, [error or "the run did not finish"], [])
        m = run_metrics(result.summary) if result is not None else {}  # as compare shows them
        probes.append({
            "rate_rps": rate, "mean_interval_ms": mi, "requests": videos,
            "run_dir": _relative(getattr(result, "run_dir", None), sweep_dir),
            "passed": verdict.passed, "reasons": verdict.reasons, "notices": verdict.notices,
            "p99_ms": m.get("p99_ms"), "achieved_rps": m.get("achieved_rps"),
            "elapsed_s": round(time.monotonic() - t, 3)})
        log(f"  probe {len(probes)}: {rate:g} req/s -> "
            + ("meets" if verdict.passed else "fails") + f" the SLO: {_point_line(result)}"
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
        outcome = bisect_capacity(probe, lo=lo, hi=hi, start=start, rel_tol=rel_tol,
                                  max_probes=max_probes)
        stop = outcome.stop
    except KeyboardInterrupt:
        interrupts.seen = True
        stop = "interrupted"
    capacity, first_bad = capacity_from_probes([(p["rate_rps"], p["passed"]) for p in probes])
    notices = capacity_notices(probes)
    result = CapacityResult(label, slo_p99_ms, capacity, first_bad, stop, probes, notices)
    log(f"capacity of {label}: " + (f"{capacity:g} req/s" if capacity is not None else "none found")
        + f" ({stop})" + "".join(f"\n  notice: {n}" for n in notices))
    return result


def run_capacity(cfgs, slo_p99_ms: float, opts, name: str | None = None,
                 command: str | None = None, overrides=(), run_fn=None, log=None,
                 render: bool = True, **search) -> SweepResult:
    """A capacity search per config, in one `capacity-...` folder."""
    if not slo_p99_ms > 0:
        raise ValueError("--slo-p99-ms must be > 0")
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    cfgs = _with_overrides(cfgs, overrides)
    _check_configs(cfgs, opts)
    labels = config_labels(cfgs)
    name = name or "+".join(labels)
    sweep_dir, record = _start_record("capacity", "capacity", name, command, labels, cfgs,
                                      overrides, opts, {
        "slo_p99_ms": slo_p99_ms,
        "search": dict(search),
        "min_for_p99": MIN_FOR_P99,
        "capacity": [],
    })
    log(f"capacity search: {len(cfgs)} config(s); folder {sweep_dir}")
    with _Interrupts() as interrupts:
        for cfg, label in zip(cfgs, labels):
            entry = {"config": label, "config_file": cfg.source, "slo_p99_ms": slo_p99_ms,
                     "capacity_rps": None, "first_failing_rps": None, "stop": "running",
                     "probes": [], "notices": []}
            record["capacity"].append(entry)

            def save(probes, entry=entry):
                entry["probes"] = probes
                _write_json(sweep_dir / SWEEP_FILE, record)

            result = search_capacity(cfg, label, slo_p99_ms, opts, sweep_dir, command=command,
                                     run_fn=run_fn, log=log, interrupts=interrupts,
                                     on_probe=save, **search)
            entry.update({k: v for k, v in asdict(result).items() if k != "config"})
            _write_json(sweep_dir / SWEEP_FILE, record)
            if interrupts.seen:
                break
    return _finish(sweep_dir, record, interrupts, render, log)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def _common_flags(p: argparse.ArgumentParser, skip=()) -> None:
    """What every sweep command takes: configs, every run setting benchmark.py has (from the same
    declaration, config/schema.py), --set and the folder's name."""
    p.add_argument("-c", "--config", action="append", required=True,
                   help="placement config, YAML or JSON; repeat -c to compare several")
    # No progress bars inside the runs by default: the sweep prints a line per run instead.
    add_setting_flags(p, skip=skip, defaults={"progress": False})
    add_override_flag(p, every=True)
    p.add_argument("--name", default=None,
                   help="names the sweep folder; unset: the config labels joined by '+'")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.analysis.sweep",
        usage="%(prog)s -c CONFIG [-c CONFIG ...] (-mi MS,MS,... | --rates R,R,...) [options]",
        description="Run configs x loads x repeats and compare them "
                    "('python -m pipeline.analysis.sweep capacity --help': capacity under an SLO).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _common_flags(p, skip=("mean_interval_ms",))  # a sweep's loads are lists (below)
    p.add_argument("-mi", "--mean_interval_ms", dest="mean_intervals", default=None,
                   help="loads as mean Poisson intervals in ms, comma-separated (0: bulk)")
    p.add_argument("--rates", default=None,
                   help="loads as arrival rates in req/s, comma-separated (instead of -mi)")
    add_setting_flags(p, SweepSettings)
    return p


def build_capacity_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.analysis.sweep capacity",
        usage="%(prog)s -c CONFIG [-c CONFIG ...] --slo-p99-ms MS [options]",
        description="The highest Poisson arrival rate at which p99 end-to-end latency stays "
                    "within the SLO, every request finishes ok and the client keeps its schedule "
                    "(MLPerf's server scenario), found by bracketing and bisection over real runs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # Each probe sets its own rate, and --min-requests its request count.
    _common_flags(p, skip=("mean_interval_ms", "videos"))
    add_setting_flags(p, CapacitySettings)
    return p


def _options(args, videos: int):
    """The run settings every run of the sweep shares, from the parsed flags."""
    return settings_from_args(args, videos=videos)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = "python -m pipeline.analysis.sweep " + shlex.join(argv)
    capacity = bool(argv) and argv[0] == "capacity"
    parser = build_capacity_parser() if capacity else build_parser()
    args = parser.parse_args(argv[1:] if capacity else argv)
    from pipeline.config import load_config
    from pipeline.errors import ConfigError, VideoError

    try:
        cfgs = [load_config(path) for path in args.config]
        if capacity:
            search = settings_from_args(args, CapacitySettings)
            result = run_capacity(cfgs, search.slo_p99_ms, _options(args, search.min_requests),
                                  name=args.name, command=command, overrides=args.overrides,
                                  lo=search.lo, hi=search.hi, start=search.start,
                                  rel_tol=search.rel_tol, max_probes=search.max_probes,
                                  min_requests=search.min_requests,
                                  min_duration_s=search.min_duration_s)
        else:
            loads = parse_loads(args.mean_intervals, args.rates)
            result = run_sweep(cfgs, loads, args.repeats, _options(args, args.videos),
                               name=args.name, command=command, overrides=args.overrides)
    except (ConfigError, VideoError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"sweep folder: {result.sweep_dir}")
    if result.interrupted:
        return 130
    if capacity:  # a search that found no capacity (every probe failed or errored) is a failure
        return 1 if any(c["capacity_rps"] is None for c in result.record["capacity"]) else 0
    return 1 if any(r["error"] for r in result.record["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
