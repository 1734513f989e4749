"""Benchmark a placement of the FLAVR serving pipeline.

    python benchmark.py -c configs/flavr-split.yaml -mi 50
    python benchmark.py --model-only [--sizes 720x1280 --batch 1,4 ...]   (the model alone)
    python benchmark.py --decode-only [--codecs h264,vp9 --workers 1,2 ...] (decode alone)

Sends Poisson-timed requests (video clips) through decode workers and FLAVR runner processes placed
on GPUs as the config says, then prints throughput, latency percentiles (from each request's
scheduled time), a per-stage breakdown and GPU utilisation, and writes everything under logs/.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from pipeline.config import (
    add_override_flag,
    add_setting_flags,
    add_trust_flag,
    settings_from_args,
    with_trust,
)


def build_parser() -> argparse.ArgumentParser:
    """The command's own flags plus one flag per run setting of the schema (config/schema.py)."""
    p = argparse.ArgumentParser(
        usage="%(prog)s -c CONFIG [options]   (--help lists them)", description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-c", "--config", default=None,
                   help="placement config, YAML or JSON (see configs/); required unless --model-only")
    p.add_argument("--model-only", action="store_true",
                   help="benchmark a model alone on one GPU instead (no config; --model "
                        "flavr|r2plus1d and its other flags: python benchmark.py --model-only "
                        "--help; see pipeline/bench/)")
    p.add_argument("--decode-only", action="store_true",
                   help="benchmark decode alone: each backend, codec, frame size and number of "
                        "workers per GPU on the same clips (python benchmark.py --decode-only "
                        "--help; pipeline/bench/decode_only.py)")
    add_setting_flags(p)
    add_trust_flag(p)
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved placement and exit without starting anything")
    add_override_flag(p)
    return p


def run_record(args: argparse.Namespace, settings) -> dict:
    """args.json of a run: the config file, the --set assignments and every run setting under
    its field name (as a sweep records its runs, so compare reads both alike)."""
    return {"config": args.config, "overrides": list(args.overrides), **asdict(settings)}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--decode-only" in argv:  # decode alone: backends x codecs x sizes x workers
        from pipeline.bench.decode_only import main as decode_only_main

        return decode_only_main([a for a in argv if a != "--decode-only"])
    if "--model-only" in argv:  # a different benchmark with flags of its own
        from pipeline.bench.model_bench import main as model_bench_main

        return model_bench_main([a for a in argv if a != "--model-only"])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is None:
        parser.error("the following arguments are required: -c/--config (or --model-only)")
    # Imported once the flags are parsed: --help and flag errors stay quick (no torch, no DALI).
    from pipeline.analysis.overload import overload_notice
    from pipeline.config import apply_overrides, describe_placement, load_config
    from pipeline.errors import ConfigError, LogsError, SwitchError, VideoError
    from pipeline.serving import mps
    from pipeline.serving.orchestrator import run
    from pipeline.serving.plan import config_as_run, plan_run

    try:
        settings = settings_from_args(args)
        cfg = apply_overrides(load_config(args.config), with_trust(args))
        p = plan_run(cfg, settings)
        # Before anything starts: a load far beyond this machine would run for very long.
        overload = overload_notice(cfg, p.topo, p.device_kind, settings.mean_interval_ms,
                                   settings.videos + settings.warmup)
        if args.dry_run:
            for n in p.notices + ([overload] if overload else []):
                print(f"notice: {n}")
            print(f"device: {p.device_kind}" + (f" ({p.gpu_count} GPUs)" if p.gpu_count else ""))
            print(f"mps: {mps.preview(p.use_mps, p.mps_reason, hide=mps.hides(settings.mps, p.device_kind))}")
            print(describe_placement(config_as_run(cfg, settings, p),
                                     cpu_mode=p.device_kind == "cpu"))
            return 0
        # Printed by the run once its clips are found usable: not above a refusal of them.
        result = run(cfg, settings, args_for_log=run_record(args, settings),
                     warnings=[overload] if overload else [])
    except (ConfigError, VideoError, LogsError, SwitchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before any process started (a run catches its own)
        print("error: interrupted before the run started; nothing to write", file=sys.stderr)
        return 130
    print(result.report)
    print(f"logs: {result.run_dir}")
    if result.log_error:
        print(f"error: {result.log_error} (the report above is printed all the same)",
              file=sys.stderr)
    if result.error:
        print(f"error: {result.error}", file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
