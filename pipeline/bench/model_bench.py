"""A model alone on one device: speed, stage breakdown, memory, efficiency and accuracy.

    python benchmark.py --model-only [--model flavr|r2plus1d] --sizes 256x256,720x1280 \
        --batch 1,4 --modes original,fast,compile --device cuda:0 --out model.json --markdown model.md

One run measures every mode at every size, so ratios are read side by side:

  original  the reference code's way: fp32, batch 1, eager, contiguous (NCDHW) layout,
            cudnn.benchmark off, PyTorch's default TF32 setting for cuDNN convolutions (on)
  fast      bf16 weights and activations, channels-last, cudnn.benchmark on, each --batch
  fp16      as fast, in fp16 (optional)
  compile   fast + torch.compile of the whole forward (default mode; see workload.COMPILE_MODE)

Per mode and size: a few warm-up calls (cuDNN autotuning and compilation land there), then timed
calls bracketed by CUDA events (median and min; never host clocks around asynchronous calls), each
on a fresh uniform-random input; a stage-by-stage pass (run_stages one stage at a time, events
between stages) for the per-layer table; peak memory over the timed calls; achieved TFLOP/s from
the model's analytic count against a bf16 matrix-product ceiling measured in the same run; and
the error against a strict fp32 reference (TF32 off) on synthetic video.

On a CPU it runs the same study (for tests, at tiny sizes) with host clocks, which are exact there
because CPU calls are synchronous, and an fp32 matrix-product ceiling in place of the bf16 one.

The pieces: workload.py (modes, inputs), timing.py, measure.py (one mode at one size),
accuracy.py, profile.py, render.py (tables); this module is the command.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

from models.registry import MODEL_NAMES, model_class
from pipeline.bench.accuracy import reference_outputs
from pipeline.bench.measure import measure, rate_keys
from pipeline.bench.profile import run_profile
from pipeline.bench.render import (
    device_name,
    environment,
    json_safe,
    render_markdown,
    render_text,
)
from pipeline.bench.timing import Clock, free_memory, matmul_ceiling
from pipeline.bench.workload import (
    COMPILE_MODE,
    DEFAULT_SIZES,
    MODES,
    Study,
    plan_modes,
    synthetic_rows,
)
from pipeline.bench.model_bench_checks import (
    check_counts,
    check_device,
    check_outputs,
)
from pipeline.errors import CheckpointError, ConfigError


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        try:
            h, w = (int(v) for v in item.lower().strip().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"size {item!r} is not HxW (e.g. 720x1280)") from None
        if h < 1 or w < 1:
            raise argparse.ArgumentTypeError(f"size {item!r}: height and width must be >= 1")
        sizes.append((h, w))
    return sizes


def parse_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: values must be >= 1")
    return values


def parse_modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"unknown mode(s) {bad}; modes are {', '.join(MODES)}")
    return list(dict.fromkeys(modes))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmark.py --model-only", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", choices=MODEL_NAMES, default="flavr",
                   help="which model (models/registry.py)")
    p.add_argument("--sizes", type=parse_sizes, default=None,
                   help="frame sizes HxW (height x width), comma-separated (default: the model's "
                        f"input size, or {DEFAULT_SIZES} for a model that takes any size)")
    p.add_argument("--factor", type=int, choices=(2, 4, 8), default=None,
                   help="FLAVR factor (default: the checkpoint's, else 2)")
    p.add_argument("--batch", type=parse_ints, default="1,4", help="batch sizes of the fast modes")
    p.add_argument("--modes", type=parse_modes, default="original,fast,compile",
                   help=f"comma-separated, from {', '.join(MODES)}")
    p.add_argument("--compile-batch", type=parse_ints, default=None,
                   help="batch sizes of the compile mode (default: the largest --batch; each "
                        "size and batch is a separate compilation)")
    p.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto")
    p.add_argument("--iters", type=int, default=20, help="timed calls per mode and size")
    p.add_argument("--warmup", type=int, default=3,
                   help="untimed calls first (the first one autotunes or compiles)")
    p.add_argument("--stage-iters", type=int, default=None,
                   help="stage-by-stage passes per eager mode (default: min(iters, 10); 0: none)")
    p.add_argument("--checkpoint", default=None,
                   help="the model's weights (.safetensors or .pth); default: random (fixed seed)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full unpickling of a .pth checkpoint that holds more than "
                        "weights; it can run code from the file")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and inputs")
    p.add_argument("--ceiling-n", type=int, default=None,
                   help="matrix size of the ceiling product (default 8192 on a GPU, 1024 on a CPU)")
    p.add_argument("--no-ceiling", action="store_true", help="skip the matrix-product ceiling")
    p.add_argument("--out", type=Path, default=None, help="write everything to this JSON file")
    p.add_argument("--markdown", type=Path, default=None, help="write the tables as markdown here")
    p.add_argument("--profile", type=Path, default=None, metavar="FILE.txt",
                   help="also profile fast-mode calls and write the top kernels to this file")
    p.add_argument("--profile-size", type=lambda t: parse_sizes(t)[0], default=None,
                   help="size for --profile (default: the largest of --sizes)")
    p.add_argument("--profile-batch", type=int, default=None,
                   help="batch for --profile (default: the largest --batch)")
    p.add_argument("--profile-iters", type=int, default=3, help="calls profiled")
    return p


def resolve_device(name: str) -> torch.device:
    """check_device for commands that refuse by exiting (change_sweep.py): one line, status 2."""
    try:
        return check_device(name)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def load_base_model(args):
    """(the served model, its fp32 network on the CPU, a description of the weights)."""
    cls = model_class(args.model)
    if args.checkpoint and args.factor is None:
        served = cls.from_checkpoint(args.checkpoint, args.trust_checkpoint)
    else:
        served = cls.from_config(argparse.Namespace(name=args.model, factor=args.factor or 2))
    if args.checkpoint:
        model = served.load("cpu", args.checkpoint, trust_checkpoint=args.trust_checkpoint)
        return served, model, f"checkpoint {args.checkpoint}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights are the point here; said in the output
        model = served.load("cpu", None, seed=args.seed)
    return served, model, f"random (seed {args.seed}): timings are real, outputs are not"


def measure_size(study: Study, specs, height: int, width: int, acc_count: int, log) -> tuple[dict, int]:
    """Every mode at one size: the size's entry of the results, and how many modes failed."""
    served, failed = study.served, 0
    row_name = served.row_name
    macs = served.row_macs(height, width)
    rows, source = synthetic_rows(served, acc_count, height, width, study.seed)
    ref = reference_outputs(study, rows)
    entry = {"size": f"{height}x{width}", "height": height, "width": width,
             f"macs_per_{row_name}": macs, f"gmacs_per_{row_name}": macs / 1e9,
             "tflop_per_output": 2 * macs / served.outputs_per_row / 1e12,
             "stage_macs": served.stage_macs(height, width), "rows": [],
             "accuracy_inputs": f"{acc_count} {row_name}s of {source}"}
    rate, _ = rate_keys(served)
    for spec in specs:
        t0 = time.perf_counter()
        try:
            row = measure(study, spec, height, width, rows, ref)
        except Exception as exc:  # one mode failing (memory, compiler) must not end the study
            failed += 1
            traceback.print_exc()
            row = {"mode": spec.mode, "batch": spec.batch, "precision": spec.precision,
                   "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
            free_memory(study.device)
        entry["rows"].append(row)
        what = (f"{row[rate]:.2f} {served.output_unit}/s, {row['ms_median']:.2f} ms/call"
                if "error" not in row else row["error"])
        log(f"{height}x{width} {spec.label}: {what} ({time.perf_counter() - t0:.1f} s)")
    original = next((r for r in entry["rows"] if r["mode"] == "original" and "error" not in r), None)
    for r in entry["rows"]:
        if "error" not in r:
            r["speedup"] = r[rate] / original[rate] if original else None
    others = [r for r in entry["rows"] if r["mode"] != "original" and "error" not in r]
    entry["best"] = None  # the fastest non-original row, against original
    if others and original:
        best = max(others, key=lambda r: r[rate])
        entry["best"] = {"mode": best["mode"], "batch": best["batch"], rate: best[rate],
                         "speedup": best["speedup"]}
    return entry, failed


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:  # every refusal before anything is measured: one line naming the flag, status 2
        check_counts(args)
        device = check_device(args.device)
        check_outputs(args)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        clock = Clock(device)
        served, base, weights = load_base_model(args)
        sizes = args.sizes or ([tuple(served.input_size)] if served.input_size
                               else parse_sizes(DEFAULT_SIZES))
        small = [f"{h}x{w}" for h, w in sizes if min(h, w) < served.min_size]
        if small:
            raise ConfigError("--sizes", f"{', '.join(small)}: {served.title} needs at least "
                                         f"{served.min_size}x{served.min_size}")
    except (ConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    compile_batches = args.compile_batch or [max(args.batch)]
    specs = plan_modes(args.modes, args.batch, compile_batches)
    stage_iters = min(args.iters, 10) if args.stage_iters is None else args.stage_iters

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    log(f"model bench of {served.describe()} on {device_name(device)}: timing by {clock.method}")
    ceiling = None
    if not args.no_ceiling:
        ceiling = matmul_ceiling(device, clock, args.ceiling_n)
        log(f"ceiling: {ceiling['dtype']} {ceiling['n']}^3 product: {ceiling['tflops']:.1f} TFLOP/s")
    study = Study(device, clock, served, base, args.iters, args.warmup, stage_iters, args.seed,
                  ceiling["tflops"] if ceiling else None)

    acc_count = max([s.batch for s in specs] + [1])
    result = {
        "benchmark": f"{served.name}-model-only",
        "command": "python " + shlex.join(sys.argv) if sys.argv and sys.argv[0] else None,
        "argv": argv,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "environment": environment(device),
        "timing": clock.method,
        "settings": {**served.run_info(), "model_title": served.describe(),
                     "row_name": served.row_name, "output_kind": served.output_kind,
                     "outputs_per_row": served.outputs_per_row, "rate_key": rate_keys(served)[0],
                     "sizes": [f"{h}x{w}" for h, w in sizes], "batches": args.batch,
                     "compile_batches": compile_batches if "compile" in args.modes else [],
                     "modes": args.modes, "iters": args.iters, "warmup": args.warmup,
                     "stage_iters": stage_iters, "seed": args.seed, "weights": weights,
                     "compile_mode": COMPILE_MODE, "accuracy_rows": acc_count},
        "flop_convention": served.flop_convention,
        "ceiling": ceiling,
        "sizes": [],
    }
    failed = 0
    for height, width in sizes:
        entry, n = measure_size(study, specs, height, width, acc_count, log)
        result["accuracy_inputs"] = entry["accuracy_inputs"]
        result["sizes"].append(entry)
        failed += n

    if args.profile:
        ph, pw = args.profile_size or max(sizes, key=lambda s: s[0] * s[1])
        pb = args.profile_batch or max(args.batch)
        result["profile"] = run_profile(study, ph, pw, pb, args.profile_iters, args.profile)
        log(f"profile: {args.profile}")

    safe = json_safe(result)
    print(render_text(safe))  # first: a file that cannot be written loses nothing measured
    written = _write_outputs(args, safe)
    if args.out and written:
        print(f"json: {args.out}")
    if not written:
        return 1
    return 1 if failed else 0


def _write_outputs(args, safe: dict) -> bool:
    """--out and --markdown (checked writable at the start); False, said on stderr, when one
    could not be written after all (a disk that filled during the run)."""
    ok = True
    for path, text in ((args.out, lambda: json.dumps(safe, indent=1) + "\n"),
                       (args.markdown, lambda: render_markdown(safe))):
        if path is None:
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text())
        except OSError as exc:
            print(f"error: {path}: could not write it: {exc.strerror or exc}", file=sys.stderr)
            ok = False
    return ok


if __name__ == "__main__":
    sys.exit(main())
