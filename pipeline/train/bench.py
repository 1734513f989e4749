"""The mixed-precision training table: samples/s and peak memory of a FLAVR training step per mode.

    python -m pipeline.train.bench [--crop 256] [--batch-sizes 8,16] [--modes ...] [--out DIR]
    torchrun --standalone --nproc_per_node 2 -m pipeline.train.bench --modes bf16+cl+compile \
        --batch-sizes 16                    (aggregate samples/s of DDP over 2 GPUs)

A mode is a precision (fp32: strict IEEE, tf32, bf16: autocast over fp32 weights) plus switches:
`cl` channels-last, `compile` torch.compile, `ac` activation checkpointing per stage. Each (mode,
batch) builds a fresh model and fused Adam, trains on a fixed random batch (the data pipeline is
measured on its own line), warms up (compilation and cuDNN autotuning land there), then times
several windows of steps with CUDA events; samples/s is the median window. Peak memory is
torch.cuda.max_memory_allocated, reset per mode. A mode that fails (out of memory, a compiler
error) gets its error in the table and the rest still run. The table is printed last.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch._dynamo

from models.flavr.model import PAD_MULTIPLE
from pipeline.argtypes import int_at_least
from pipeline.train.config import SyntheticSection
from pipeline.train.distributed import all_reduce, cleanup, setup
from pipeline.train.model import (
    build_train_model,
    make_optimizer,
    parallelize,
    set_backend_flags,
    train_step,
)
from pipeline.train.render import render_batch

DEFAULT_MODES = ("fp32", "tf32", "bf16", "bf16+cl", "bf16+cl+compile", "bf16+cl+compile+ac")
PRECISIONS = ("fp32", "tf32", "bf16")
SWITCHES = ("cl", "compile", "ac")


def parse_mode(mode: str) -> dict:
    precision, *switches = mode.split("+")
    if precision not in PRECISIONS or any(s not in SWITCHES for s in switches):
        raise ValueError(f"mode {mode!r}: a precision ({', '.join(PRECISIONS)}) then any of "
                         f"+{', +'.join(SWITCHES)}")
    return {"precision": precision, "channels_last": "cl" in switches,
            "compile": "compile" in switches, "activation_checkpointing": "ac" in switches}


def _crop(text: str) -> int:
    """FLAVR's smallest frame side (its three 2x downsamplings), where any smaller crop fails in
    every mode."""
    try:
        return int_at_least(PAD_MULTIPLE)(text)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"{e} (FLAVR's smallest frame side)") from None


def _batch_sizes(text: str) -> list[int]:
    sizes = [int_at_least(1)(t.strip()) for t in text.split(",") if t.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError("expected comma-separated batch sizes, e.g. 8,16")
    return sizes


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes:
        raise argparse.ArgumentTypeError("expected comma-separated modes, e.g. tf32,bf16+cl")
    for mode in modes:
        try:
            parse_mode(mode)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return modes


class Timer:
    """Elapsed seconds of GPU work between start and stop (CUDA events), or wall time on CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def start(self):
        if self.cuda:
            self._a = torch.cuda.Event(enable_timing=True)
            self._b = torch.cuda.Event(enable_timing=True)
            self._a.record()
        else:
            self._t = time.perf_counter()

    def stop(self) -> float:
        if self.cuda:
            self._b.record()
            self._b.synchronize()
            return self._a.elapsed_time(self._b) / 1000
        return time.perf_counter() - self._t


def measure(mode: str, batch: int, crop: int, factor: int, warmup: int, steps: int, windows: int,
            d, seed: int = 0) -> dict:
    """One row of the table (on every rank; samples/s is the sum over ranks)."""
    opts = parse_mode(mode)
    dev = d.device
    row = {"mode": mode, "batch": batch, "crop": crop, "gpus": d.world, **opts}
    set_backend_flags(opts["precision"])
    net = optimizer = None
    try:
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        flavr, net = build_train_model(factor, dev, seed, opts["channels_last"],
                                       opts["activation_checkpointing"])
        net = parallelize(net, dev, d.world, opts["compile"])
        optimizer = make_optimizer(flavr.parameters(), 2e-4, device_type=dev.type)
        g = torch.Generator(device=dev).manual_seed(seed + d.rank)
        inputs = torch.rand(batch, 3, 4, crop, crop, generator=g, device=dev)
        targets = torch.rand(batch, factor - 1, 3, crop, crop, generator=g, device=dev)
        timer = Timer(dev)
        timer.start()
        for _ in range(warmup):
            train_step(net, optimizer, inputs, targets, opts["precision"])
        row["warmup_s"] = timer.stop()
        times = []
        for _ in range(windows):
            timer.start()
            for _ in range(steps):
                loss = train_step(net, optimizer, inputs, targets, opts["precision"])
            times.append(timer.stop())
        per_rank = batch * steps / statistics.median(times)
        row["samples_per_s"] = all_reduce([per_rank], d)[0]
        row["ms_per_step"] = 1000 * statistics.median(times) / steps
        row["loss"] = float(loss)
        if dev.type == "cuda":
            row["peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2 ** 30
    except Exception as e:  # noqa: BLE001 - a failing mode is a result, not the end of the table
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    finally:
        del net, optimizer
        gc.collect()
        if opts["compile"]:
            torch._dynamo.reset()  # the next mode compiles its own model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return row


def measure_data(batch: int, crop: int, factor: int, device, repeats: int = 5) -> float:
    """Synthetic samples/s of the on-device renderer (random 720p photos, default motion)."""
    g = torch.Generator(device=device).manual_seed(0)
    photos = torch.randint(0, 256, (16, 3, 720, 1280), generator=g, device=device, dtype=torch.uint8)
    cfg = SyntheticSection()
    render_batch(photos, batch, 3 * factor + 1, crop, cfg, g)  # warm-up
    timer = Timer(torch.device(device))
    timer.start()
    for _ in range(repeats):
        render_batch(photos, batch, 3 * factor + 1, crop, cfg, g)
    return batch * repeats / timer.stop()


def table(rows: list[dict], title: str) -> str:
    base = {r["batch"]: r.get("samples_per_s") for r in rows if r["mode"] == "tf32"}
    lines = [f"### {title}", "",
             "| mode | batch | processes | samples/s | ms/step | peak GiB | vs TF32 | warm-up s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['mode']} | {r['batch']} | {r['gpus']} | failed: {r['error']} | | | | |")
            continue
        ref = base.get(r["batch"])
        vs = f"{r['samples_per_s'] / ref:.2f}x" if ref else ""
        peak = f"{r['peak_gib']:.2f}" if "peak_gib" in r else "n/a"
        lines.append(f"| {r['mode']} | {r['batch']} | {r['gpus']} | {r['samples_per_s']:.1f} | "
                     f"{r['ms_per_step']:.1f} | {peak} | {vs} | {r['warmup_s']:.1f} |")
    return "\n".join(lines)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.train.bench", description=__doc__.split("\n\n")[0])
    # Every flag is checked here, before a model is built or a report folder made.
    ap.add_argument("--crop", type=_crop, default=256,
                    help=f"square crop size, >= {PAD_MULTIPLE} (256)")
    ap.add_argument("--batch-sizes", type=_batch_sizes, default="8,16",
                    help="per-GPU batch sizes (8,16)")
    ap.add_argument("--modes", type=_modes, default=",".join(DEFAULT_MODES),
                    help=f"comma-separated modes: a precision ({', '.join(PRECISIONS)}) then any "
                         f"of +{', +'.join(SWITCHES)}")
    ap.add_argument("--factor", type=int, default=2, choices=(2, 4, 8))
    ap.add_argument("--warmup", type=int_at_least(0), default=8,
                    help="untimed steps per mode (8)")
    ap.add_argument("--steps", type=int_at_least(1), default=10,
                    help="steps per timed window (10)")
    ap.add_argument("--windows", type=int_at_least(1), default=5,
                    help="timed windows; the median counts (5)")
    ap.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    ap.add_argument("--out", type=Path, help="folder for bench.md/bench.json "
                                             "(default logs/train-bench-<time>)")
    args = ap.parse_args(argv)
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        ap.error(f"argument --out: {args.out} is a file; name a folder for the report")
    modes, batches = args.modes, args.batch_sizes
    d = setup(args.device)
    out = args.out or Path("logs") / f"train-bench-{time.strftime('%y%m%d_%H%M%S')}"
    name = f"bench-{d.world}gpu" if d.device.type == "cuda" else f"bench-{d.world}cpu"
    log = print if d.main else (lambda *a, **k: None)
    rows = []
    try:
        for mode in modes:
            for b in batches:
                row = measure(mode, b, args.crop, args.factor, args.warmup, args.steps, args.windows, d)
                rows.append(row)
                log(f"{mode:>22} batch {b:>3}: " + (row["error"] if "error" in row else
                    f"{row['samples_per_s']:.1f} samples/s, {row['ms_per_step']:.1f} ms/step"
                    + (f", peak {row['peak_gib']:.2f} GiB" if "peak_gib" in row else "")), flush=True)
        data_rate = measure_data(max(batches), args.crop, args.factor, d.device)
    finally:
        cleanup()
    if not d.main:
        return 0
    env = {"device": device_name(d.device), "processes": d.world, "torch": torch.__version__,
           "cuda": torch.version.cuda, "crop": args.crop, "factor": args.factor,
           "warmup": args.warmup, "steps": args.steps, "windows": args.windows,
           "synthetic_data_samples_per_s": data_rate}
    title = (f"FLAVR {args.factor}x training step, {args.crop}x{args.crop} crops, "
             f"{d.world} x {env['device']}, torch {torch.__version__}")
    text = table(rows, title) + (f"\n\nOn-device synthetic data alone: {data_rate:.0f} samples/s "
                                 f"(batch {max(batches)}), one process.\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    (out / f"{name}.md").write_text(text)
    fastest = max((r for r in rows if "error" not in r), key=lambda r: r["samples_per_s"], default=None)
    print(f"\nwrote {out / (name + '.md')} and .json"
          + (f"; fastest: {fastest['mode']} at batch {fastest['batch']}" if fastest else ""))
    print()
    print(text)
    return 0 if fastest else 1


if __name__ == "__main__":
    sys.exit(main())
