"""Before a run starts: is the offered load far beyond what this machine can serve?

`python benchmark.py -c configs/flavr-split.yaml -mi 50` on a CPU offers 20 requests/s of work the
CPU serves at well under one per second; without a word it would run for half an hour with queues
growing all along. This module estimates the pipeline's capacity, and says so before the run (and
in --dry-run) when the offered load is more than OVERLOAD_FACTOR times it, or the run would last
longer than LONG_RUN_S.

How the estimate is made: each model step's work per request is the multiply-adds of its stage
range (the model's own analytic count, ServedModel.stage_macs, per row of model input: a FLAVR
window, an R(2+1)D clip) times the rows of a request (of a stream workload, a running stream's
segment: ServedModel.rows_per_segment, as the decode workers make them); a sleep step's is its
sleep. A device's rate is measured on the CPU (one Conv3d like the models' at the run's
precision, for a fraction of a second, in this process), and taken from a table of
tensor-core peaks on a GPU (the main process never touches CUDA), at the share of peak FLAVR
reached at best on one H200 (section 1 of docs/results.md: ~54%). The capacity is the slowest
device's: requests/s = 1 / (seconds of work per request placed on it). Decode, hand-offs
and Python overheads are not counted, and the CPU measurement runs one layer shape: the estimate
is optimistic, real capacity is lower, on the CPU by up to 2-3x. It only warns when the offered
load is far beyond it.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

from models.registry import served_model
from pipeline.serving.gpu_monitor import nvml_info

OVERLOAD_FACTOR = 2.0  # warn when the offered load is this many times the estimated capacity
LONG_RUN_S = 600.0  # or when the run would take longer than this
MINUTES_FROM_S = 120.0  # a run this long or longer is said in minutes, a shorter one in seconds
GPU_SHARE_OF_PEAK = 0.6  # FLAVR at best ~54% of a measured bf16 ceiling on one H200

# Dense tensor-core peaks, TFLOP/s: (bf16/fp16, fp32 as TF32). Unknown GPUs get the largest.
GPU_PEAKS = {"H200": (989.0, 495.0), "H100": (989.0, 495.0), "A100": (312.0, 156.0),
             "L40S": (362.0, 183.0), "L4": (121.0, 60.0), "A10": (125.0, 62.5)}
_FALLBACK_PEAK = (989.0, 495.0)


@dataclass
class Estimate:
    capacity_rps: float  # requests/s the busiest device could serve at the estimated rate
    work_text: str  # what was counted, for the message
    rate_text: str  # how the device's rate was found


def _frame_size(cfg, served) -> tuple[int, int] | None:
    if cfg.model.resolution:
        return tuple(cfg.model.resolution)
    if served.input_size is not None:  # every clip is brought to it (R(2+1)D: 112x112)
        return tuple(served.input_size)
    synthetic = getattr(cfg.videos, "synthetic", None)
    if synthetic is not None:
        return synthetic.height, synthetic.width
    return None  # clips of their own sizes: not probed here


def _rows_per_request(cfg, served) -> int:
    """Rows of model input one request becomes: a clip's, or a running stream's segment's (its
    rows run across the segment's boundaries: FLAVR makes one window per new frame)."""
    n = cfg.frames_per_request
    return served.rows_per_request(n) if cfg.videos.streams is None else served.rows_per_segment(n)


def _step_work(cfg, served, step, size) -> tuple[float, float]:
    """(multiply-adds, seconds of sleep) of one request in one step."""
    if step.kind == "sleep":
        return 0.0, step.sleep_ms / 1000.0
    if step.kind != "model":
        return 0.0, 0.0
    first, last = step.stages or (served.stages[0], served.stages[-1])
    stages = served.stages[served.stages.index(first):served.stages.index(last) + 1]
    per_stage = served.stage_macs(size[0], size[1])
    row = sum(per_stage[s] for s in stages)
    return float(row * _rows_per_request(cfg, served)), 0.0


def cpu_flop_rate(precision: str, seconds: float = 0.3) -> float:
    """FLOP/s of a Conv3d like those of FLAVR and R(2+1)D (64 -> 64 channels, 3x3x3, 4 frames of 32x32) on this CPU,
    with every core, at the run's precision."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    conv = torch.nn.Conv3d(64, 64, 3, padding=1, bias=False).to(dtype)
    x = torch.rand(1, 64, 4, 32, 32, dtype=dtype)
    flop = 2 * 64 * 64 * 27 * 4 * 32 * 32
    with torch.inference_mode():
        conv(x)  # first call: allocation and kernel choice
        calls, start = 0, time.perf_counter()
        while calls < 2 or time.perf_counter() - start < seconds:
            conv(x)
            calls += 1
        return flop * calls / (time.perf_counter() - start)


def _gpu_rates(topo, precision: str) -> tuple[dict, str]:
    names = {g["gpu"]: g.get("name", "") for g in (nvml_info().get("gpus") or [])}
    col = 1 if precision == "fp32" else 0
    rates, seen = {}, set()
    for gpu in topo.gpus():
        name = names.get(gpu, "")
        peak = next((p for key, p in GPU_PEAKS.items() if key in name), _FALLBACK_PEAK)[col]
        rates[gpu] = peak * 1e12 * GPU_SHARE_OF_PEAK
        seen.add(f"{name or 'unknown GPU'} {peak:g} TFLOP/s peak")
    return rates, (f"{GPU_SHARE_OF_PEAK:.0%} of the tensor-core peak ({'; '.join(sorted(seen))})")


def estimate(cfg, topo, device_kind: str) -> Estimate | None:
    """The pipeline's estimated capacity on this machine; None when it cannot be made (clips of
    their own sizes, or no step with a known cost)."""
    served = served_model(cfg.model)
    size = _frame_size(cfg, served)
    if size is None:
        return None
    work = {}  # step name -> (multiply-adds, sleep s) per request
    for step in cfg.steps:
        macs, sleep = _step_work(cfg, served, step, size)
        if macs or sleep:
            work[step.name] = (macs, sleep)
    if not work:
        return None
    total_macs = sum(m for m, _ in work.values())
    if device_kind == "cpu":
        # Every model replica shares the one CPU: its rate serves all the work.
        rate = cpu_flop_rate(cfg.model.precision) if total_macs else 1.0
        busy = {"cpu": 2 * total_macs / rate + sum(s for _, s in work.values())}
        rate_text = (f"{rate / 1e9:.3g} GFLOP/s measured here on the CPU ({os.cpu_count()} cores, "
                     f"{cfg.model.precision})")
    else:
        rates, rate_text = _gpu_rates(topo, cfg.model.precision)
        busy = {}
        for step, replicas in zip(cfg.steps, topo.replicas):
            if step.name not in work:
                continue
            macs, sleep = work[step.name]
            for r in replicas:  # requests spread evenly over a step's replicas
                seconds = (2 * macs / rates.get(r.gpu, max(rates.values())) + sleep) / len(replicas)
                busy[r.gpu] = busy.get(r.gpu, 0.0) + seconds
    slowest = max(busy.values())
    h, w = size
    rows = _rows_per_request(cfg, served)
    work_text = (f"{2 * total_macs / 1e12:.3g} TFLOP per request ({served.title} at {h}x{w}, "
                 f"{rows} {served.row_name}{'s' * (rows != 1)})" if total_macs
                 else "the steps' sleeps")
    return Estimate(1.0 / slowest, work_text, rate_text)


def duration_text(seconds: float) -> str:
    """How long a run would take, in words: minutes, or seconds below a couple of minutes (where
    whole minutes would round a run of half a minute to 0)."""
    if seconds >= MINUTES_FROM_S:
        return f"{seconds / 60:.0f} minutes"
    value = f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.2g}"
    return f"{value} second{'' if value == '1' else 's'}"


def overload_notice(cfg, topo, device_kind: str, mean_interval_ms: float, requests: int) -> str | None:
    """A warning when the offered load is far beyond the estimated capacity, or the run would take
    very long; None otherwise (or when no estimate can be made)."""
    try:
        est = estimate(cfg, topo, device_kind)
    except Exception:  # an estimate must never stop a run
        return None
    if est is None:
        return None
    offered = 1000.0 / mean_interval_ms if mean_interval_ms > 0 else None
    duration = requests / min(est.capacity_rps, offered or est.capacity_rps)
    far = offered is not None and offered > OVERLOAD_FACTOR * est.capacity_rps
    if not far and duration <= LONG_RUN_S:
        return None
    capacity = (f"about {est.capacity_rps:.3g} requests/s ({est.work_text}; {est.rate_text})")
    how_long = (f"{requests} request{'s' * (requests != 1)} would take about "
                f"{duration_text(duration)}")
    if far:
        text = (f"offered {offered:.3g} requests/s is about {offered / est.capacity_rps:.0f}x what "
                f"this machine can serve by an estimate, {capacity}: queues would grow all run, "
                f"and {how_long}")
    else:
        text = f"{how_long}: by an estimate this machine serves {capacity}"
    return (text + ". Lower the load (-mi), the requests (-v) or the frame size. The estimate "
            "counts the model's work only and is optimistic: real capacity is lower, on a CPU "
            "by up to 2-3x")
