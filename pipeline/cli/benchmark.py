"""Benchmark a placement of the FLAVR serving pipeline.

    python benchmark.py -c configs/flavr-split.yaml -mi 50
    python benchmark.py --model-only [--sizes 720x1280 --batch 1,4 ...]   (the model alone)

Sends Poisson-timed requests (video clips) through decode workers and FLAVR runner processes placed
on GPUs as the config says, then prints throughput, latency percentiles (from each request's
scheduled time), a per-stage breakdown and GPU utilisation, and writes everything under logs/.
"""
from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-c", "--config", default=None,
                   help="placement config, YAML or JSON (see configs/); required unless --model-only")
    p.add_argument("--model-only", action="store_true",
                   help="benchmark the FLAVR model alone on one GPU instead (no config; its own "
                        "flags: python benchmark.py --model-only --help; see pipeline/model_bench.py)")
    p.add_argument("-mi", "--mean_interval_ms", type=float, default=50.0,
                   help="mean gap between requests of the Poisson arrival process, in ms; "
                        "0 sends every request at once (saturation)")
    p.add_argument("-b", "--batch_size", type=int, default=1,
                   help="requests a runner may batch into one model call (it never waits to "
                        "fill a batch: it takes what is queued, up to this many)")
    p.add_argument("-v", "--videos", type=int, default=20,
                   help="number of measured requests (clips cycle through the video set)")
    p.add_argument("-qs", "--queue_size", type=int, default=64,
                   help="bound of every queue between steps")
    p.add_argument("-p", "--per_gpu_queue", action="store_true",
                   help="force per-GPU queues between all steps (RnB's -p)")
    p.add_argument("--warmup", type=int, default=2,
                   help="extra requests issued first and excluded from statistics")
    p.add_argument("--seed", type=int, default=0, help="seed of the arrival times")
    p.add_argument("--on-full", choices=("stop", "block"), default="stop",
                   help="a full queue stops admitting requests (RnB) or makes producers wait")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default=None,
                   help="override the config's device; cpu runs any placement on the CPU, "
                        "GPU ids becoming logical devices")
    p.add_argument("--decode-backend", default=os.environ.get("FLAVR_DECODE_BACKEND", "auto"),
                   choices=("auto", "dali-gpu", "dali-cpu", "pyav"),
                   help="force a decoder instead of choosing by device and codec (auto: DALI on "
                        "NVDEC for GPUs; DALI or PyAV on the CPU); env FLAVR_DECODE_BACKEND")
    from pipeline.serving.mps import MODES as MPS_MODES

    p.add_argument("--mps", choices=MPS_MODES, default="auto",
                   help="CUDA MPS control daemon for the run: without it, processes sharing a "
                        "GPU (decode workers, runner replicas) time-slice it (measured: the model "
                        "~9%% slower beside two decode processes on one H200, 0.5%% with MPS). "
                        "auto starts a private daemon where a GPU hosts more than one process and "
                        "nvidia-cuda-mps-control exists; on requires it; a running daemon is reused")
    p.add_argument("--logs", default="logs", help="root folder of the per-run log folders")
    p.add_argument("--save-outputs", action="store_true",
                   help="encode each request's interpolated clip into the run's logs folder")
    p.add_argument("--check-outputs", action="store_true",
                   help="check every output value is finite (costs a GPU pass in the sink)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved placement and exit without starting anything")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field for this run, e.g. --set model.precision=fp32 "
                        "--set model.resolution=[720,1280] --set videos.synthetic.count=8 "
                        "(VALUE is read as YAML; pipeline[1].gpus=[0,1] indexes the step list)")
    p.add_argument("--heartbeat-timeout", dest="heartbeat_timeout_s", type=float, default=30.0,
                   metavar="S", help="a process silent for this long once started (stuck in a "
                                     "GPU or decoder call, stopped) ends the run, named")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--model-only" in argv:  # a different benchmark with flags of its own
        from pipeline.bench.model_bench import main as model_bench_main

        return model_bench_main([a for a in argv if a != "--model-only"])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is None:
        parser.error("the following arguments are required: -c/--config (or --model-only)")
    from pipeline.config import apply_overrides, describe_placement, load_config
    from pipeline.errors import ConfigError, LogsError, VideoError

    try:
        for flag in ("batch_size", "videos", "queue_size"):
            if getattr(args, flag) < 1:
                parser.error(f"--{flag} must be >= 1")
        if args.warmup < 0 or args.mean_interval_ms < 0:
            parser.error("--warmup and --mean_interval_ms must be >= 0")
        if not 0 < args.heartbeat_timeout_s < float("inf"):
            parser.error("--heartbeat-timeout must be a positive number of seconds")
        cfg = apply_overrides(load_config(args.config), args.overrides)
        if args.dry_run:
            from pipeline.serving import mps
            from pipeline.serving.plan import plan_run

            p = plan_run(cfg, args.device, args.per_gpu_queue, args.mps)
            for n in p.notices:
                print(f"notice: {n}")
            print(f"device: {p.device_kind}" + (f" ({p.gpu_count} GPUs)" if p.gpu_count else ""))
            print(f"mps: {mps.preview(p.use_mps, p.mps_reason, hide=mps.hides(args.mps, p.device_kind))}")
            print(describe_placement(cfg, cpu_mode=p.device_kind == "cpu"))
            return 0
        from pipeline.serving.orchestrator import RunOptions, run

        opts = RunOptions(
            mean_interval_ms=args.mean_interval_ms, batch=args.batch_size, videos=args.videos,
            warmup=args.warmup, queue_size=args.queue_size, per_gpu=args.per_gpu_queue,
            seed=args.seed, on_full=args.on_full, device=args.device, logs_root=args.logs,
            save_outputs=args.save_outputs, check_outputs=args.check_outputs,
            decode_backend=args.decode_backend, mps=args.mps,
            heartbeat_timeout_s=args.heartbeat_timeout_s, progress=not args.no_progress)
        result = run(cfg, opts, args_for_log=vars(args))
    except (ConfigError, VideoError, LogsError) as exc:
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
