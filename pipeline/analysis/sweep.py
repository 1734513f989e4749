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

Capacity (MLPerf's server scenario, `capacity` subcommand): the highest Poisson arrival rate at
which the p99 end-to-end latency stays within the bound; the rule and the search are in
capacity.py, the folder both keep in sweep_folder.py.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import asdict, replace
from typing import Callable

from pipeline.analysis.capacity import run_capacity
from pipeline.analysis.sweep_folder import (
    SWEEP_FILE,
    Interrupts,
    SweepResult,
    check_configs,
    check_logs,
    config_labels,
    eta,
    finish,
    interval_for_rate,
    point_line,
    rate_of,
    relative_run_dir,
    run_one,
    start_record,
    stderr_log,
    with_overrides,
    write_json,
)
from pipeline.analysis.sweep_plan import sweep_plan_text
from pipeline.config import (
    CapacitySettings,
    RunSettings,
    SweepSettings,
    add_override_flag,
    add_setting_flags,
    add_trust_flag,
    check_flag_value,
    check_settings,
    settings_from_args,
    with_trust,
)

# --------------------------------------------------------------------------------------------
# Loads
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Load sweep
# --------------------------------------------------------------------------------------------

def run_sweep(cfgs, mean_intervals: list[float], repeats: int, opts, name: str | None = None,
              command: str | None = None, overrides=(), run_fn: Callable | None = None,
              log: Callable[[str], None] | None = None, render: bool = True,
              dry_run: bool = False) -> SweepResult:
    """Run every config at every load, `repeats` times, and write the sweep folder (dry_run:
    check everything and say what would run, in the result's plan; nothing starts).

    cfgs: loaded Config objects. opts: the RunSettings shared by all runs (seed is the base seed;
    mean_interval_ms is set per load). overrides: FIELD=VALUE assignments applied to every config
    (benchmark.py's --set). run_fn defaults to pipeline.serving.orchestrator.run.
    """
    from pipeline.serving.orchestrator import run as orchestrator_run

    if repeats < 1:
        raise ValueError("--repeats must be >= 1")
    check_settings(replace(opts, seed=opts.seed + repeats - 1))  # the last repeat's seed too
    run_fn = run_fn or orchestrator_run
    log = log or stderr_log
    cfgs = with_overrides(cfgs, overrides)
    plans = check_configs(cfgs, opts)
    labels = config_labels(cfgs)
    if dry_run:
        return SweepResult(None, {}, plan=sweep_plan_text(cfgs, labels, plans, mean_intervals,
                                                          repeats, opts))
    check_logs(opts, log)
    name = name or "+".join(labels)
    sweep_dir, record = start_record("sweep", "loads", name, command, labels, cfgs, overrides, opts, {
        "loads": [{"mean_interval_ms": mi, "rate_rps": rate_of(mi)} for mi in mean_intervals],
        "repeats": repeats,
        "seeds": [opts.seed + k for k in range(repeats)],
        "runs": [],
    })
    plan = [(k, i, mi) for k in range(repeats) for i in range(len(cfgs)) for mi in mean_intervals]
    log(f"sweep: {len(cfgs)} config(s) x {len(mean_intervals)} load(s) x {repeats} repeat(s) = "
        f"{len(plan)} runs; folder {sweep_dir}")
    started = time.monotonic()
    with Interrupts() as interrupts:
        for n, (k, i, mi) in enumerate(plan, 1):
            cfg, label = cfgs[i], labels[i]
            run_opts = replace(opts, mean_interval_ms=mi, seed=opts.seed + k)
            args = {**asdict(run_opts), "config": cfg.source, "config_label": label,
                    "sweep": str(sweep_dir), "repeat": k, "command": command}
            t = time.monotonic()
            result, error = run_one(run_fn, cfg, run_opts, args, interrupts)
            run_dir = getattr(result, "run_dir", None)
            record["runs"].append({
                "config": label, "config_file": cfg.source, "mean_interval_ms": mi,
                "rate_rps": rate_of(mi), "repeat": k, "seed": run_opts.seed,
                "offered_rps": (result.summary["load"]["offered_rps"]
                                if result is not None else None),
                "run_dir": relative_run_dir(run_dir, sweep_dir), "error": error,
                "elapsed_s": round(time.monotonic() - t, 3)})
            write_json(sweep_dir / SWEEP_FILE, record)
            load = "bulk" if mi == 0 else f"{rate_of(mi):g} req/s nominal (mi {mi:g} ms)"
            log(f"[{n}/{len(plan)}] {label} @ {load}, repeat {k + 1}/{repeats}: "
                + (f"error: {error}" if error else point_line(result))
                + f" [{time.monotonic() - t:.0f} s{eta(started, n, len(plan))}]")
            if interrupts.after(result):
                break
    return finish(sweep_dir, record, interrupts, render, log)


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
    add_trust_flag(p)
    add_override_flag(p, every=True)
    p.add_argument("--name", default=None,
                   help="names the sweep folder; unset: the config labels joined by '+'")
    p.add_argument("--dry-run", action="store_true",
                   help="check every config and print what would run, without starting "
                        "anything or writing any folder")


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
    from pipeline.errors import ConfigError, LogsError, VideoError

    try:
        cfgs = [load_config(path) for path in args.config]
        if capacity:
            search = settings_from_args(args, CapacitySettings)
            result = run_capacity(cfgs, search.slo_p99_ms, _options(args, search.min_requests),
                                  name=args.name, command=command, overrides=with_trust(args),
                                  lo=search.lo, hi=search.hi, start=search.start,
                                  rel_tol=search.rel_tol, max_probes=search.max_probes,
                                  min_requests=search.min_requests,
                                  min_duration_s=search.min_duration_s, dry_run=args.dry_run)
        else:
            loads = parse_loads(args.mean_intervals, args.rates)
            result = run_sweep(cfgs, loads, args.repeats, _options(args, args.videos),
                               name=args.name, command=command, overrides=with_trust(args),
                               dry_run=args.dry_run)
    except (ConfigError, VideoError, ValueError, LogsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.plan is not None:
        print(result.plan)
        return 0
    print(f"sweep folder: {result.sweep_dir}")
    if result.interrupted:
        return 130
    if capacity:  # a search that found no capacity (every probe failed or errored) is a failure
        return 1 if any(c["capacity_rps"] is None for c in result.record["capacity"]) else 0
    return 1 if any(r["error"] for r in result.record["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
