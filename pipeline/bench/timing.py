"""Timing on a GPU or a CPU: clocks, cuDNN settings, memory, timed calls and the ceiling."""
from __future__ import annotations

import contextlib
import statistics
import time

import torch


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


def time_calls(clock: Clock, fn, x: torch.Tensor, fill, iters: int) -> list[float]:
    """Milliseconds of `iters` calls fn(x), each on freshly filled input."""
    marks = []
    for _ in range(iters):
        fill(x)  # outside the timed span; stream order keeps it after the previous call
        start = clock.mark()
        fn(x)  # result dropped at once: its memory goes back to the allocator for the next call
        marks.append((start, clock.mark()))
    clock.sync()
    return [clock.ms(a, b) for a, b in marks]


def time_stages(clock: Clock, model, x: torch.Tensor, fill, iters: int, size) -> list[list[float]]:
    """Per iteration, the time of each stage, run one at a time through run_stages."""
    all_marks = []
    for _ in range(iters):
        fill(x)
        state = {model.INPUTS[0]: x, "size": size}
        marks = [clock.mark()]
        for stage in model.STAGES:
            state = model.run_stages(state, stage, stage)
            marks.append(clock.mark())
        all_marks.append(marks)
        del state
    clock.sync()
    return [[clock.ms(a, b) for a, b in zip(m, m[1:])] for m in all_marks]


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
