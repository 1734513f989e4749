"""Where the time goes: torch.profiler over fast-mode calls, kernels grouped by kind."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from pipeline.bench.render import device_name
from pipeline.bench.timing import cudnn_settings, free_memory, median, time_calls
from pipeline.bench.workload import ModeSpec, Study, make_model, random_input

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
    dev = study.device
    spec = ModeSpec("fast", batch, "bf16", True, True, False)
    model, fn = make_model(study, spec)
    x, fill = random_input(study, batch, height, width)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with cudnn_settings(True), torch.inference_mode():
        times = time_calls(study.clock, fn, x, fill, max(study.warmup, 2))
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
    lines = [f"{study.served.describe()} fast mode (bf16, channels-last, cudnn.benchmark) "
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
