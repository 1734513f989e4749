"""The FLAVR model alone on one GPU: speed, stage breakdown, memory, efficiency and accuracy.

    python benchmark.py --model-only --sizes 256x256,720x1280 --batch 1,4 \
        --modes original,fast,compile --device cuda:0 --out model.json --markdown docs/model.md

One run measures every mode at every size, so ratios are read side by side:

  original  the original code's way: fp32, batch 1, eager, contiguous (NCDHW) layout,
            cudnn.benchmark off, PyTorch's default TF32 setting for cuDNN convolutions (on)
  fast      bf16 weights and activations, channels-last, cudnn.benchmark on, each --batch
  fp16      as fast, in fp16 (optional)
  compile   fast + torch.compile of the whole forward (default mode; see COMPILE_MODE)

Per mode and size: a few warm-up calls (cuDNN autotuning and compilation land there), then timed
calls bracketed by CUDA events (median and min; never host clocks around asynchronous calls), each
on a fresh uniform-random input; a stage-by-stage pass (run_stages one stage at a time, events
between stages) for the per-layer table; peak memory over the timed calls; achieved TFLOP/s from
the analytic count `flavr_macs` against a bf16 matrix-product ceiling measured in the same run;
and the error against a strict fp32 reference (TF32 off) on synthetic video windows.

On a CPU it runs the same study (for tests, at tiny sizes) with host clocks, which are exact there
because CPU calls are synchronous, and an fp32 matrix-product ceiling in place of the bf16 one.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import math
import platform
import shlex
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from models.flavr.model import (
    N_INPUTS,
    PAD_MULTIPLE,
    STAGES,
    WIDTHS,
    padded_size,
)
from models.base import PRECISIONS as PRECISION_DTYPES

GIB = 1024 ** 3
MODES = ("original", "fast", "fp16", "compile")
DEFAULT_SIZES = "256x256,512x512,720x1280,1080x1920"

# torch.compile mode for the "compile" rows. The default mode, not "max-autotune-no-cudagraphs":
# nearly all of FLAVR's work is 3D convolutions, which Inductor leaves to cuDNN unless max-autotune
# makes it benchmark its generic Triton conv templates against cuDNN for every conv shape: minutes
# of autotuning per input size, for templates that rarely beat cuDNN's Hopper kernels. What
# compilation can win here is the memory-bound glue between convs (gate scaling, residual add and
# ReLU, LeakyReLU, skip concatenation, padding, the fp32 mean), and the default mode already fuses
# that. No CUDA graphs either way: a call takes milliseconds, so launch overhead is small, and a
# graph's private memory pool would blur the peak-memory column.
COMPILE_MODE = "default"

FLOP_CONVENTION = (
    "MACs are multiply-adds of every Conv3d/ConvTranspose3d/Conv2d, FLOP = 2 * MACs. Convolutions "
    "count every output position of the padded frame (H, W rounded up to a multiple of 8) times the "
    "full kernel, zero padding included, as the GPU computes them. Transposed convolutions count "
    "each input position times kernel taps times output channels (the products actually formed); "
    "counting them on the output side over the zero-inserted grid would give 1.58x more in total. "
    "The gates' 1x1x1 convs on pooled vectors are included; pointwise ops, pooling and padding are not.")


# ---- analytic work count -------------------------------------------------------------------------

def flavr_stage_macs(height: int, width: int, factor: int = 2) -> dict[str, int]:
    """Multiply-adds of one window (batch 1) per stage, following models/flavr.py layer by layer."""
    hp, wp = padded_size(height, width)
    t = N_INPUTS
    c0, c1, c2, c3 = WIDTHS
    # positions (T * H * W) at full, 1/2, 1/4 and 1/8 of the padded resolution
    p1, p2, p4, p8 = (t * (hp // d) * (wp // d) for d in (1, 2, 4, 8))
    k3 = 3 * 3 * 3
    kup = 3 * 4 * 4  # ConvTranspose3d kernel (3, 4, 4)

    def block(cin: int, cout: int, stride: int, p_out: int) -> int:
        macs = p_out * cout * cin * k3 + p_out * cout * cout * k3  # conv1, conv2
        macs += cout * cout  # gate: 1x1x1 conv on the (C, 1, 1, 1) mean
        if stride != 1 or cin != cout:
            macs += p_out * cout * cin  # 1x1x1 projection of the shortcut
        return macs

    def layer(cin: int, cout: int, stride: int, p_out: int) -> int:
        return block(cin, cout, stride, p_out) + block(cout, cout, 1, p_out)

    return {
        "stem": p2 * c0 * 3 * (3 * 7 * 7),
        "layer1": layer(c0, c0, 1, p2),
        "layer2": layer(c0, c1, 2, p4),
        "layer3": layer(c1, c2, 2, p8),
        "layer4": layer(c2, c3, 1, p8),
        "dec0": p8 * c2 * c3 * k3 + c2 * c2,                 # conv 512 -> 256 at 1/8
        "dec1": p8 * (2 * c2) * c1 * kup + c1 * c1,          # upconv 512 -> 128, 1/8 -> 1/4
        "dec2": p4 * (2 * c1) * c0 * kup + c0 * c0,          # upconv 256 -> 64, 1/4 -> 1/2
        "dec3": p2 * (2 * c0) * c0 * k3 + c0 * c0,           # conv 128 -> 64 at 1/2
        "dec4": p2 * (2 * c0) * c0 * kup + c0 * c0,          # upconv 128 -> 64, 1/2 -> 1
        # feature_fuse 1x1 (4*64 -> 64) and the 7x7 output conv (64 -> 3 per output frame)
        "head": hp * wp * (t * c0) * c0 + hp * wp * (3 * (factor - 1)) * c0 * 7 * 7,
    }


def flavr_macs(height: int, width: int, factor: int = 2) -> int:
    """Multiply-adds of one FLAVR forward pass over one window of 4 frames (batch 1)."""
    return sum(flavr_stage_macs(height, width, factor).values())


# ---- what a run is made of -----------------------------------------------------------------------

@dataclass(frozen=True)
class ModeSpec:
    mode: str
    batch: int
    precision: str
    channels_last: bool
    cudnn_benchmark: bool
    compiled: bool

    @property
    def label(self) -> str:
        return f"{self.mode} b{self.batch}"


def plan_modes(modes: list[str], batches: list[int], compile_batches: list[int]) -> list[ModeSpec]:
    specs = []
    for mode in modes:
        if mode == "original":
            specs.append(ModeSpec("original", 1, "fp32", False, False, False))
        elif mode in ("fast", "fp16"):
            precision = "bf16" if mode == "fast" else "fp16"
            specs += [ModeSpec(mode, b, precision, True, True, False) for b in batches]
        elif mode == "compile":
            specs += [ModeSpec("compile", b, "bf16", True, True, True) for b in compile_batches]
    return specs


class Clock:
    """CUDA events on a GPU; the host clock on the CPU, where every call is synchronous."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.method = ("CUDA events on the current stream" if self.cuda else
                       "host clock (time.perf_counter) around synchronous CPU calls")

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def ms(self, start, end) -> float:
        return start.elapsed_time(end) if self.cuda else (end - start) * 1e3


@contextlib.contextmanager
def cudnn_settings(benchmark: bool, allow_tf32: bool | None = None):
    """Set cudnn.benchmark (and TF32 for fp32 convs when given) for a block, then restore."""
    cudnn = torch.backends.cudnn
    saved = cudnn.benchmark, cudnn.allow_tf32
    cudnn.benchmark = benchmark
    if allow_tf32 is not None:
        cudnn.allow_tf32 = allow_tf32
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.allow_tf32 = saved


def median(xs):
    return statistics.median(xs) if xs else None


def memory_stats(device: torch.device):
    if device.type != "cuda":
        return None
    return torch.cuda.memory_allocated(device), torch.cuda.max_memory_allocated(device)


def reset_peak(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def free_memory(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


# ---- inputs --------------------------------------------------------------------------------------

def random_input(study, dev, batch: int, height: int, width: int):
    """A (batch, 3, 4, H, W) input buffer and fill(t), which refills a buffer with uniform values
    from a generator seeded by the study (each timed call sees new data)."""
    gen = torch.Generator(device=dev).manual_seed(study.seed)
    x = torch.empty(batch, 3, N_INPUTS, height, width, device=dev)
    return x, lambda t: t.uniform_(0.0, 1.0, generator=gen)


def synthetic_windows(count: int, height: int, width: int, seed: int) -> tuple[torch.Tensor, str]:
    """`count` windows (count, 3, 4, H, W) in [0, 1] that look like video: the project's moving
    scenes (pipeline.media.synthetic)."""
    from pipeline.media.synthetic import make_scene, render

    windows = []
    for i in range(count):
        layers = make_scene(width, height, N_INPUTS, seed * 1009 + i)
        frames = [torch.from_numpy(render(layers, float(t), width, height)) for t in range(N_INPUTS)]
        windows.append(torch.stack(frames).permute(3, 0, 1, 2))  # (T, H, W, 3) -> (3, T, H, W)
    return torch.stack(windows).float().contiguous(), "pipeline.media.synthetic scenes"


def accuracy(out: torch.Tensor, ref: torch.Tensor, frames: torch.Tensor) -> dict:
    """Error of `out` against the fp32 reference `ref`, both (N, factor-1, 3, H, W), on the CPU."""
    out, ref = out.double(), ref.double()
    diff = out - ref
    ref_norm = ref.norm().item()
    # The model adds the input's colour mean back at the end, so ||ref|| is mostly that mean; also
    # say how large the error is next to the part the network itself produced.
    mean = frames.double().mean(dim=(2, 3, 4))[:, None, :, None, None]
    detail_norm = (ref - mean).norm().item()
    mse = (out.clamp(0, 1) - ref.clamp(0, 1)).pow(2).mean().item()
    return {
        "rel_l2": diff.norm().item() / ref_norm if ref_norm else None,
        "rel_l2_detail": diff.norm().item() / detail_norm if detail_norm else None,
        "psnr_db": 10 * math.log10(1.0 / mse) if mse > 0 else None,  # None: identical
        "max_abs_err": diff.abs().max().item(),
    }


# ---- measuring one mode at one size ---------------------------------------------------------------

@dataclass
class Study:
    device: torch.device
    clock: Clock
    base: torch.nn.Module  # fp32 weights on the CPU; every mode starts from a copy
    factor: int
    iters: int
    warmup: int
    stage_iters: int
    seed: int
    ceiling_tflops: float | None


def make_model(study: Study, spec: ModeSpec):
    model = copy.deepcopy(study.base).to(study.device)
    model.for_inference(spec.precision, channels_last=spec.channels_last)
    if not spec.compiled:
        return model, model
    # A fresh compile per shape: static shapes (dynamic=False) give the best kernels, and resetting
    # keeps one size's guards and recompile count from touching the next.
    torch._dynamo.reset()
    return model, torch.compile(model, mode=None if COMPILE_MODE == "default" else COMPILE_MODE,
                                dynamic=False)


def time_calls(study: Study, fn, x: torch.Tensor, fill, iters: int) -> list[float]:
    marks = []
    for _ in range(iters):
        fill(x)  # outside the timed span; stream order keeps it after the previous call
        start = study.clock.mark()
        fn(x)  # result dropped at once: its memory goes back to the allocator for the next call
        marks.append((start, study.clock.mark()))
    study.clock.sync()
    return [study.clock.ms(a, b) for a, b in marks]


def time_stages(study: Study, model, x: torch.Tensor, fill, iters: int, size) -> list[list[float]]:
    """Per iteration, the time of each stage, run one at a time through run_stages."""
    all_marks = []
    for _ in range(iters):
        fill(x)
        state = {"frames": x, "size": size}
        marks = [study.clock.mark()]
        for stage in STAGES:
            state = model.run_stages(state, stage, stage)
            marks.append(study.clock.mark())
        all_marks.append(marks)
        del state
    study.clock.sync()
    return [[study.clock.ms(a, b) for a, b in zip(m, m[1:])] for m in all_marks]


def measure(study: Study, spec: ModeSpec, height: int, width: int, acc_frames: torch.Tensor,
            acc_ref: torch.Tensor) -> dict:
    dev = study.device
    macs = flavr_macs(height, width, study.factor)
    stage_macs = flavr_stage_macs(height, width, study.factor)
    row = {"mode": spec.mode, "batch": spec.batch, "precision": spec.precision,
           "channels_last": spec.channels_last, "cudnn_benchmark": spec.cudnn_benchmark,
           "compiled": spec.compiled, "compile_mode": COMPILE_MODE if spec.compiled else None,
           # fp32 convs may run as TF32 (PyTorch's default, left as is for "original")
           "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32 if spec.precision == "fp32" else None}
    free_memory(dev)
    model, fn = make_model(study, spec)
    x, fill = random_input(study, dev, spec.batch, height, width)
    with cudnn_settings(spec.cudnn_benchmark), torch.inference_mode():
        t0 = time.perf_counter()
        fill(x)
        fn(x)  # the first call: cuDNN autotuning or compilation
        study.clock.sync()
        row["first_call_s"] = time.perf_counter() - t0
        time_calls(study, fn, x, fill, max(study.warmup - 1, 0))

        reset_peak(dev)
        resident = memory_stats(dev)
        times = time_calls(study, fn, x, fill, study.iters)
        peak = memory_stats(dev)

        stages = None
        if not spec.compiled and study.stage_iters > 0:
            stages = time_stages(study, model, x, fill, study.stage_iters, (height, width))

        outs = [fn(acc_frames[i:i + spec.batch].to(dev)).float().cpu()
                for i in range(0, acc_frames.shape[0], spec.batch)]
    del model, fn, x
    free_memory(dev)

    ms = median(times)
    row.update({
        "ms_median": ms, "ms_min": min(times), "ms_mean": statistics.fmean(times), "ms_all": times,
        "frames_per_s": spec.batch * (study.factor - 1) / (ms / 1e3),
        "windows_per_s": spec.batch / (ms / 1e3),
        "tflops": 2 * macs * spec.batch / (ms / 1e3) / 1e12,
    })
    row["ceiling_fraction"] = (row["tflops"] / study.ceiling_tflops if study.ceiling_tflops else None)
    if peak is not None:
        bytes_per = torch.finfo(PRECISION_DTYPES[spec.precision]).bits // 8
        weights = sum(p.numel() for p in study.base.parameters()) * bytes_per
        row.update({"peak_gib": peak[1] / GIB, "resident_gib": resident[0] / GIB,
                    "work_gib": (peak[1] - resident[0]) / GIB, "weights_gib": weights / GIB})
    else:
        row.update({"peak_gib": None, "resident_gib": None, "work_gib": None, "weights_gib": None})
    if stages:
        per_stage = [median([it[i] for it in stages]) for i in range(len(STAGES))]
        total = sum(per_stage)
        row["stage_sum_ms"] = total  # sum of the stages' medians
        row["stage_sum_min_ms"] = min(sum(it) for it in stages)  # fastest stage-by-stage pass
        row["stage_sum_over_call"] = total / ms
        row["stages"] = [{"stage": s, "ms": t, "share": t / total,
                          "tflops": 2 * stage_macs[s] * spec.batch / (t / 1e3) / 1e12 if t > 0 else None}
                         for s, t in zip(STAGES, per_stage)]
    else:
        row["stages"] = None
        row["stage_sum_ms"] = row["stage_sum_min_ms"] = row["stage_sum_over_call"] = None
    row.update(accuracy(torch.cat(outs), acc_ref, acc_frames))
    return row


def reference_outputs(study: Study, frames: torch.Tensor) -> torch.Tensor:
    """Strict fp32 (TF32 off), batch 1, contiguous: the yardstick for every mode's error."""
    model = copy.deepcopy(study.base).to(study.device).for_inference("fp32", channels_last=False)
    with cudnn_settings(benchmark=False, allow_tf32=False), torch.inference_mode():
        outs = [model(frames[i:i + 1].to(study.device)).cpu() for i in range(frames.shape[0])]
    del model
    free_memory(study.device)
    return torch.cat(outs)


def matmul_ceiling(device: torch.device, clock: Clock, n: int | None, iters: int = 20) -> dict:
    """Median rate of an n^3 matrix product on random data: bf16 on a GPU, fp32 on a CPU."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = n or (8192 if device.type == "cuda" else 1024)
    iters = iters if device.type == "cuda" else 5
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    for _ in range(5):
        torch.mm(a, b)
    clock.sync()
    marks = []
    for _ in range(iters):
        start = clock.mark()
        torch.mm(a, b)
        marks.append((start, clock.mark()))
    clock.sync()
    ms = median([clock.ms(s, e) for s, e in marks])
    del a, b
    free_memory(device)
    return {"dtype": str(dtype).removeprefix("torch."), "n": n, "iters": iters, "ms_median": ms,
            "tflops": 2 * n ** 3 / (ms / 1e3) / 1e12}


# ---- profile -------------------------------------------------------------------------------------

KERNEL_KINDS = (  # first match wins; lower-case substrings of kernel names
    ("conv (dgrad: transposed conv)", ("dgrad",)),
    ("conv / GEMM", ("conv", "fprop", "xmma", "implicit_gemm", "cutlass", "gemm", "cudnn", "sm90_", "sm80_")),
    ("layout change", ("nchwtonhwc", "nhwctonchw", "transpose", "permute", "convert")),
    ("concat / copy", ("catarray", "::cat", "copy", "memcpy", "memset")),
    ("padding", ("reflection", "pad")),
    ("reduction", ("reduce", "triton_red", "triton_per", "mean", "sum")),
    ("elementwise", ("elementwise", "vectorized", "triton_poi", "unrolled", "leaky", "relu",
                     "sigmoid", "::mul", "::add", "::div", "::clamp", "::fill", "::uniform")),
)


def kernel_kind(name: str) -> str:
    low = name.lower()
    for kind, keys in KERNEL_KINDS:
        if any(k in low for k in keys):
            return kind
    return "other"


def run_profile(study: Study, height: int, width: int, batch: int, iters: int, path: Path,
                top: int = 30) -> dict:
    """torch.profiler over `iters` fast-mode calls; write the top kernels by device time to `path`."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    dev = study.device
    spec = ModeSpec("fast", batch, "bf16", True, True, False)
    model, fn = make_model(study, spec)
    x, fill = random_input(study, dev, batch, height, width)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with cudnn_settings(True), torch.inference_mode():
        times = time_calls(study, fn, x, fill, max(study.warmup, 2))
        with warnings.catch_warnings(), profile(activities=activities) as prof:
            warnings.simplefilter("ignore")  # notes about profiler cycles; one cycle here
            for _ in range(iters):
                fill(x)
                fn(x)
            study.clock.sync()
    del model, fn, x
    free_memory(dev)

    on_gpu = dev.type == "cuda"

    def device_us(e):
        us = getattr(e, "self_device_time_total", None)
        return getattr(e, "self_cuda_time_total", 0.0) if us is None else us

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reading the events repeats the note on cycles
        events = prof.key_averages()
    if on_gpu:  # kernels are the events that ran on the device
        picked = [(e, device_us(e)) for e in events if getattr(e, "device_type", None) == DeviceType.CUDA]
        if not picked:  # a profiler that files no device events: operators with their GPU time
            picked = [(e, device_us(e)) for e in events]
    else:
        picked = [(e, e.self_cpu_time_total) for e in events]
    rows = [{"name": e.key, "calls": e.count, "total_ms": us / 1e3} for e, us in picked if us > 0]
    total = sum(r["total_ms"] for r in rows) or 1.0
    rows.sort(key=lambda r: -r["total_ms"])
    kinds: dict[str, float] = {}
    for r in rows:
        r["share"] = r["total_ms"] / total
        r["kind"] = kernel_kind(r["name"])
        kinds[r["kind"]] = kinds.get(r["kind"], 0.0) + r["total_ms"]
    what = "kernels by GPU time" if on_gpu else "CPU operators by self CPU time (no GPU)"
    lines = [f"FLAVR {study.factor}x fast mode (bf16, channels-last, cudnn.benchmark) "
             f"{height}x{width} batch {batch} on {device_name(dev)}, profiled calls: {iters}",
             f"torch {torch.__version__}; timed call before profiling: {median(times):.2f} ms; "
             f"{'GPU' if on_gpu else 'CPU'} time in the profile: {total:.2f} ms "
             f"({total / iters:.2f} ms per call)", "", f"Top {min(top, len(rows))} {what}:"]
    width_name = min(150, max([len(r["name"]) for r in rows[:top]] + [6]))
    lines.append(f"{'name':<{width_name}}  {'calls':>6}  {'total ms':>9}  {'%':>6}  kind")
    for r in rows[:top]:
        name = r["name"] if len(r["name"]) <= width_name else r["name"][:width_name - 3] + "..."
        lines.append(f"{name:<{width_name}}  {r['calls']:>6}  {r['total_ms']:>9.2f}  "
                     f"{100 * r['share']:>5.1f}%  {r['kind']}")
    lines += ["", "By kind:"]
    for kind, ms in sorted(kinds.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {kind:<32} {ms:>9.2f} ms  {100 * ms / total:>5.1f}%")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return {"file": str(path), "size": f"{height}x{width}", "batch": batch, "iters": iters,
            "what": what, "total_ms": total, "by_kind_ms": kinds, "top": rows[:top]}


# ---- reporting -----------------------------------------------------------------------------------

def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def environment(device: torch.device) -> dict:
    env = {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
           "python": platform.python_version(), "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "cudnn_allow_tf32_default": torch.backends.cudnn.allow_tf32}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update({"capability": f"{p.major}.{p.minor}", "sm_count": p.multi_processor_count,
                    "memory_gib": p.total_memory / GIB})
    env["git_commit"] = None
    try:
        git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, cwd=Path(__file__).resolve().parents[2])
        if git.returncode == 0:
            env["git_commit"] = git.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return env


def _fmt(value, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


SUMMARY_COLUMNS = ("size", "mode", "batch", "frames/s", "ms/call", "TFLOP/s", "% ceiling",
                   "peak GiB", "rel-L2", "PSNR dB", "speed-up")


def summary_rows(result: dict) -> list[list[str]]:
    out = []
    for s in result["sizes"]:
        for r in s["rows"]:
            if r.get("error"):
                out.append([s["size"], r["mode"], str(r["batch"]), "error: " + r["error"][:60]] +
                           [""] * (len(SUMMARY_COLUMNS) - 4))
                continue
            psnr = "exact" if r["psnr_db"] is None and r["max_abs_err"] == 0 else _fmt(r["psnr_db"], ".1f")
            out.append([s["size"], r["mode"], str(r["batch"]), f"{r['frames_per_s']:.2f}",
                        f"{r['ms_median']:.2f}", f"{r['tflops']:.1f}",
                        _fmt(r["ceiling_fraction"] and 100 * r["ceiling_fraction"], ".1f"),
                        _fmt(r["peak_gib"], ".2f"), _fmt(r["rel_l2"], ".2e"), psnr,
                        _fmt(r["speedup"], ".2f", "-") + ("x" if r["speedup"] is not None else "")])
    return out


def stage_rows(row: dict) -> list[list[str]]:
    return [[s["stage"], f"{s['ms']:.3f}", f"{100 * s['share']:.1f}", _fmt(s["tflops"], ".1f")]
            for s in row["stages"]]


STAGE_COLUMNS = ("stage", "ms", "% of sum", "TFLOP/s")


def text_table(columns, rows) -> str:
    widths = [max(len(str(c)), *(len(r[i]) for r in rows)) if rows else len(c)
              for i, c in enumerate(columns)]
    lines = ["  ".join(f"{c:>{w}}" for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(f"{v:>{w}}" for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def markdown_table(columns, rows) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---:" for _ in columns) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def headline(result: dict) -> list[str]:
    env, c = result["environment"], result["ceiling"]
    lines = [f"device: {env['device_name']} ({env['device']}); torch {env['torch']}, "
             f"CUDA {env['cuda']}, cuDNN {env['cudnn']}",
             f"timing: {result['timing']}",
             f"weights: {result['settings']['weights']}; accuracy inputs: {result['accuracy_inputs']}"]
    if c:
        lines.append(f"ceiling: {c['dtype']} {c['n']}^3 matrix product, median of {c['iters']}: "
                     f"{c['tflops']:.1f} TFLOP/s" + ("" if c["dtype"] == "bfloat16" else
                                                     " (not bf16: % ceiling is against this)"))
    return lines


def stage_sections(result: dict):
    """(title, row) for each measured row with a stage table."""
    for s in result["sizes"]:
        for r in s["rows"]:
            if r.get("stages"):
                yield (f"{s['size']} {r['mode']} batch {r['batch']} ({r['precision']}): stage sum "
                       f"{r['stage_sum_ms']:.2f} ms vs {r['ms_median']:.2f} ms per whole call", r)


def render_text(result: dict) -> str:
    parts = []
    for title, r in stage_sections(result):
        parts += [f"per stage, {title}", text_table(STAGE_COLUMNS, stage_rows(r)), ""]
    parts += headline(result)
    for s in result["sizes"]:
        best = s.get("best")
        if best:
            parts.append(f"{s['size']}: {s['gmacs_per_window']:.1f} GMAC per window; best "
                         f"{best['mode']} b{best['batch']}: {best['speedup']:.2f}x original")
    parts += ["", text_table(SUMMARY_COLUMNS, summary_rows(result))]
    return "\n".join(parts)


def render_markdown(result: dict) -> str:
    s = result["settings"]
    parts = [f"# FLAVR {s['factor']}x, model alone on one device", "",
             *[f"- {line}" for line in headline(result)],
             f"- iterations: {s['warmup']} warm-up, {s['iters']} timed, {s['stage_iters']} per-stage",
             f"- command: `{result['command']}`", "", "## Summary", "",
             markdown_table(SUMMARY_COLUMNS, summary_rows(result)), "",
             "frames/s counts output (interpolated) frames; TFLOP/s from the analytic count "
             "(`flavr_macs`); % ceiling against the matrix-product ceiling above; rel-L2 and PSNR "
             "against a strict fp32 reference on the same inputs; speed-up over `original`.", "",
             "## Per stage", ""]
    for title, r in stage_sections(result):
        parts += [f"### {title}", "", markdown_table(STAGE_COLUMNS, stage_rows(r)), ""]
    prof = result.get("profile")
    if prof:
        parts += [f"## Profile: {prof['what']}, {prof['size']} batch {prof['batch']}", "",
                  markdown_table(("name", "calls", "total ms", "%", "kind"),
                                 [[r["name"][:100].replace("|", "/"), str(r["calls"]),
                                   f"{r['total_ms']:.2f}", f"{100 * r['share']:.1f}", r["kind"]]
                                  for r in prof["top"][:15]]), ""]
    parts += ["## How work is counted", "", FLOP_CONVENTION, ""]
    return "\n".join(parts)


def json_safe(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


# ---- command line --------------------------------------------------------------------------------

def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        try:
            h, w = (int(v) for v in item.lower().strip().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"size {item!r} is not HxW (e.g. 720x1280)") from None
        if h < PAD_MULTIPLE or w < PAD_MULTIPLE:
            raise argparse.ArgumentTypeError(
                f"size {item!r}: FLAVR needs at least {PAD_MULTIPLE}x{PAD_MULTIPLE}")
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
    p.add_argument("--sizes", type=parse_sizes, default=DEFAULT_SIZES,
                   help="frame sizes HxW (height x width), comma-separated")
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
    p.add_argument("--checkpoint", default=None, help="FLAVR weights; default: random (fixed seed)")
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
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"error: --device {name}: no CUDA GPU is visible to torch")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            raise SystemExit(f"error: --device {name}: only {torch.cuda.device_count()} GPU(s)")
    elif device.type != "cpu":
        raise SystemExit(f"error: --device {name}: only cuda and cpu are supported")
    return device


def load_base_model(args) -> tuple[torch.nn.Module, str]:
    from models.flavr.checkpoint import build_model

    if args.checkpoint:
        model = build_model(args.factor, args.checkpoint, "cpu")
        return model, f"checkpoint {args.checkpoint}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights are the point here; said in the output
        model = build_model(args.factor or 2, None, "cpu", seed=args.seed)
    return model, f"random (seed {args.seed}): timings are real, frames are not"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.iters < 1 or args.warmup < 0:
        raise SystemExit("error: --iters must be >= 1 and --warmup >= 0")
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    clock = Clock(device)
    base, weights = load_base_model(args)
    factor = base.config.factor
    compile_batches = args.compile_batch or [max(args.batch)]
    specs = plan_modes(args.modes, args.batch, compile_batches)
    stage_iters = min(args.iters, 10) if args.stage_iters is None else args.stage_iters

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    log(f"model bench on {device_name(device)}: timing by {clock.method}")
    ceiling = None
    if not args.no_ceiling:
        ceiling = matmul_ceiling(device, clock, args.ceiling_n)
        log(f"ceiling: {ceiling['dtype']} {ceiling['n']}^3 product: {ceiling['tflops']:.1f} TFLOP/s")
    study = Study(device, clock, base, factor, args.iters, args.warmup, stage_iters, args.seed,
                  ceiling["tflops"] if ceiling else None)

    acc_count = max([s.batch for s in specs] + [1])
    result = {
        "benchmark": "flavr-model-only",
        "command": "python " + shlex.join(sys.argv) if sys.argv and sys.argv[0] else None,
        "argv": argv,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "environment": environment(device),
        "timing": clock.method,
        "settings": {"sizes": [f"{h}x{w}" for h, w in args.sizes], "factor": factor,
                     "batches": args.batch,
                     "compile_batches": compile_batches if "compile" in args.modes else [],
                     "modes": args.modes, "iters": args.iters, "warmup": args.warmup,
                     "stage_iters": stage_iters, "seed": args.seed, "weights": weights,
                     "compile_mode": COMPILE_MODE, "accuracy_windows": acc_count},
        "flop_convention": FLOP_CONVENTION,
        "ceiling": ceiling,
        "sizes": [],
    }
    failed = 0
    for height, width in args.sizes:
        macs = flavr_macs(height, width, factor)
        frames, source = synthetic_windows(acc_count, height, width, args.seed)
        result["accuracy_inputs"] = f"{acc_count} windows of {source}"
        ref = reference_outputs(study, frames)
        entry = {"size": f"{height}x{width}", "height": height, "width": width,
                 "padded": list(padded_size(height, width)), "macs_per_window": macs,
                 "gmacs_per_window": macs / 1e9,
                 "tflop_per_output_frame": 2 * macs / (factor - 1) / 1e12,
                 "stage_macs": flavr_stage_macs(height, width, factor), "rows": []}
        for spec in specs:
            t0 = time.perf_counter()
            try:
                row = measure(study, spec, height, width, frames, ref)
            except Exception as exc:  # one mode failing (memory, compiler) must not end the study
                failed += 1
                traceback.print_exc()
                row = {"mode": spec.mode, "batch": spec.batch, "precision": spec.precision,
                       "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
                free_memory(device)
            entry["rows"].append(row)
            what = (f"{row['frames_per_s']:.2f} frames/s, {row['ms_median']:.2f} ms/call"
                    if "error" not in row else row["error"])
            log(f"{height}x{width} {spec.label}: {what} ({time.perf_counter() - t0:.1f} s)")
        original = next((r for r in entry["rows"] if r["mode"] == "original" and "error" not in r), None)
        for r in entry["rows"]:
            if "error" not in r:
                r["speedup"] = r["frames_per_s"] / original["frames_per_s"] if original else None
        others = [r for r in entry["rows"] if r["mode"] != "original" and "error" not in r]
        entry["best"] = None  # the fastest non-original row, against original
        if others and original:
            best = max(others, key=lambda r: r["frames_per_s"])
            entry["best"] = {"mode": best["mode"], "batch": best["batch"],
                             "frames_per_s": best["frames_per_s"], "speedup": best["speedup"]}
        result["sizes"].append(entry)

    if args.profile:
        ph, pw = args.profile_size or max(args.sizes, key=lambda s: s[0] * s[1])
        pb = args.profile_batch or max(args.batch)
        result["profile"] = run_profile(study, ph, pw, pb, args.profile_iters, args.profile)
        log(f"profile: {args.profile}")

    safe = json_safe(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(safe, indent=1) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(render_markdown(safe))
    print(render_text(safe))
    if args.out:
        print(f"json: {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
