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
from pipeline.analysis.statistics import MIN_FOR_P99
from pipeline.analysis.sweep_folder import (
    SWEEP_FILE,
    Interrupts,
    SweepResult,
    check_configs,
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

# --------------------------------------------------------------------------------------------
# Loads
# --------------------------------------------------------------------------------------------

def _numbers(text: str, flag: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise ValueError(f"{flag}: no values in {text!r}")
    return values


def parse_loads(mean_intervals: str | None, rates: str | None) -> list[float]:
    """The sweep's loads as mean intervals in ms, from `-mi 200,100,50` or `--rates 5,10,20`."""
    if (mean_intervals is None) == (rates is None):
        raise ValueError("give the loads either as -mi (mean intervals, ms) or as --rates (req/s)")
    if mean_intervals is not None:
        values = _numbers(mean_intervals, "-mi")
        if any(v < 0 for v in values):
            raise ValueError("-mi: mean intervals must be >= 0 (0 sends everything at once)")
        return values
    values = _numbers(rates, "--rates")
    if any(not v > 0 for v in values):
        raise ValueError("--rates: rates must be > 0 req/s")
    return [interval_for_rate(r) for r in values]



# --------------------------------------------------------------------------------------------
# Load sweep
# --------------------------------------------------------------------------------------------

def run_sweep(cfgs, mean_intervals: list[float], repeats: int, opts, name: str | None = None,
              command: str | None = None, overrides=(), run_fn: Callable | None = None,
              log: Callable[[str], None] | None = None, render: bool = True) -> SweepResult:
    """Run every config at every load, `repeats` times, and write the sweep folder.

    cfgs: loaded Config objects. opts: the RunOptions shared by all runs (seed is the base seed;
    mean_interval_ms is set per load). overrides: FIELD=VALUE assignments applied to every config
    (benchmark.py's --set). run_fn defaults to pipeline.serving.orchestrator.run.
    """
    from pipeline.serving.orchestrator import run as orchestrator_run

    if repeats < 1:
        raise ValueError("--repeats must be >= 1")
    run_fn = run_fn or orchestrator_run
    log = log or stderr_log
    cfgs = with_overrides(cfgs, overrides)
    check_configs(cfgs, opts)
    labels = config_labels(cfgs)
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

def _common_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", action="append", required=True,
                   help="placement config, YAML or JSON; repeat -c to compare several")
    p.add_argument("-b", "--batch_size", type=int, default=1,
                   help="requests a runner may batch into one model call")
    p.add_argument("-qs", "--queue_size", type=int, default=64, help="bound of every queue")
    p.add_argument("-p", "--per_gpu_queue", action="store_true",
                   help="force per-GPU queues between all steps")
    p.add_argument("--warmup", type=int, default=2,
                   help="extra requests issued first in every run, excluded from statistics")
    p.add_argument("--seed", type=int, default=0, help="base seed of the arrival times")
    p.add_argument("--on-full", choices=("stop", "block"), default="stop",
                   help="a full queue stops admitting requests (RnB) or makes producers wait")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default=None,
                   help="override every config's device")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a field of every config, as benchmark.py --set does, e.g. "
                        "--set model.resolution=[512,512]")
    from pipeline.serving.mps import MODES as MPS_MODES

    p.add_argument("--mps", choices=MPS_MODES, default="auto",
                   help="CUDA MPS control daemon for every run, as benchmark.py --mps: without "
                        "it, processes sharing a GPU time-slice it (~9%% on the model on one H200)")
    p.add_argument("--logs", default="logs", help="root folder of the run and sweep folders")
    p.add_argument("--name", default=None,
                   help="names the sweep folder; unset: the config labels joined by '+'")
    p.add_argument("--progress", action="store_true", help="progress bars inside each run")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.analysis.sweep",
        description="Run configs x loads x repeats and compare them "
                    "('python -m pipeline.analysis.sweep capacity --help': capacity under an SLO).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _common_flags(p)
    p.add_argument("-mi", "--mean_interval_ms", default=None,
                   help="loads as mean Poisson intervals in ms, comma-separated (0: bulk)")
    p.add_argument("--rates", default=None,
                   help="loads as arrival rates in req/s, comma-separated (instead of -mi)")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs per config and load, each with its own seed (--seed + k)")
    p.add_argument("-v", "--videos", type=int, default=20, help="measured requests per run")
    return p


def build_capacity_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.analysis.sweep capacity",
        description="The highest Poisson arrival rate at which p99 end-to-end latency stays "
                    "within the SLO, every request finishes ok and the client keeps its schedule "
                    "(MLPerf's server scenario), found by bracketing and bisection over real runs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _common_flags(p)
    p.add_argument("--slo-p99-ms", type=float, required=True, help="bound on p99 latency, ms")
    p.add_argument("--lo", type=float, default=None,
                   help="a rate (req/s) expected to meet the SLO (halved until one does)")
    p.add_argument("--hi", type=float, default=None,
                   help="a rate (req/s) expected to fail the SLO (doubled until one does)")
    p.add_argument("--start", type=float, default=1.0,
                   help="first rate tried when neither --lo nor --hi is given")
    p.add_argument("--rel-tol", type=float, default=0.05,
                   help="stop when the failing rate is within this fraction above the passing one")
    p.add_argument("--max-probes", type=int, default=16, help="runs per config at most")
    p.add_argument("--min-requests", type=int, default=MIN_FOR_P99,
                   help=f"measured requests per probe; below {MIN_FOR_P99} the p99 is flagged "
                        "as not meaningful")
    p.add_argument("--min-duration", type=float, default=0.0, metavar="S",
                   help="also make each probe's schedule at least this many seconds long")
    return p


def _options(args, videos: int):
    from pipeline.serving.plan import RunOptions

    return RunOptions(batch=args.batch_size, videos=videos, warmup=args.warmup,
                      queue_size=args.queue_size, per_gpu=args.per_gpu_queue, seed=args.seed,
                      on_full=args.on_full, device=args.device, logs_root=args.logs,
                      mps=args.mps, progress=args.progress)


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
            if args.min_requests < 1:
                raise ValueError("--min-requests must be >= 1")
            result = run_capacity(cfgs, args.slo_p99_ms, _options(args, args.min_requests),
                                  name=args.name, command=command, overrides=args.overrides,
                                  lo=args.lo, hi=args.hi, start=args.start, rel_tol=args.rel_tol,
                                  max_probes=args.max_probes, min_requests=args.min_requests,
                                  min_duration_s=args.min_duration)
        else:
            loads = parse_loads(args.mean_interval_ms, args.rates)
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
