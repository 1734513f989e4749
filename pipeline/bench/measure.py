"""Measuring one mode at one frame size: first call, timed calls, per-stage times, memory, work
rate and accuracy, as one row of the model benchmark's results."""
from __future__ import annotations

import statistics
import time

import torch

from models.base import PRECISIONS
from pipeline.bench.accuracy import accuracy
from pipeline.bench.timing import (
    cudnn_settings,
    free_memory,
    median,
    memory_stats,
    reset_peak,
    time_calls,
    time_stages,
)
from pipeline.bench.workload import (
    COMPILE_MODE,
    ModeSpec,
    Study,
    make_model,
    random_input,
)

GIB = 1024 ** 3


def rate_keys(served) -> tuple[str, str]:
    """Row keys of the output rate and of the row rate, named by the model's units
    (FLAVR: frames_per_s, windows_per_s; R(2+1)D: clips_per_s for both)."""
    return f"{served.output_unit}_per_s", f"{served.row_name}s_per_s"


def measure(study: Study, spec: ModeSpec, height: int, width: int, acc_rows: torch.Tensor,
            acc_ref: torch.Tensor) -> dict:
    dev, served = study.device, study.served
    stage_macs = served.stage_macs(height, width)
    macs = sum(stage_macs.values())
    row = {"mode": spec.mode, "batch": spec.batch, "precision": spec.precision,
           "channels_last": spec.channels_last, "cudnn_benchmark": spec.cudnn_benchmark,
           "compiled": spec.compiled, "compile_mode": COMPILE_MODE if spec.compiled else None,
           # fp32 convs may run as TF32 (PyTorch's default, left as is for "original")
           "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32 if spec.precision == "fp32" else None}
    free_memory(dev)
    model, fn = make_model(study, spec)
    x, fill = random_input(study, spec.batch, height, width)
    clock = study.clock
    with cudnn_settings(spec.cudnn_benchmark), torch.inference_mode():
        t0 = time.perf_counter()
        fill(x)
        fn(x)  # the first call: cuDNN autotuning or compilation
        clock.sync()
        row["first_call_s"] = time.perf_counter() - t0
        time_calls(clock, fn, x, fill, max(study.warmup - 1, 0))

        reset_peak(dev)
        resident = memory_stats(dev)
        times = time_calls(clock, fn, x, fill, study.iters)
        peak = memory_stats(dev)

        stages = None
        if not spec.compiled and study.stage_iters > 0:
            stages = time_stages(clock, model, x, fill, study.stage_iters, (height, width))

        outs = [fn(acc_rows[i:i + spec.batch].to(dev)).float().cpu()
                for i in range(0, acc_rows.shape[0], spec.batch)]
    del model, fn, x
    free_memory(dev)

    ms = median(times)
    outputs_key, rows_key = rate_keys(served)
    row.update({
        "ms_median": ms, "ms_min": min(times), "ms_mean": statistics.fmean(times), "ms_all": times,
        rows_key: spec.batch / (ms / 1e3),
        outputs_key: spec.batch * served.outputs_per_row / (ms / 1e3),
        "tflops": 2 * macs * spec.batch / (ms / 1e3) / 1e12,
    })
    row["ceiling_fraction"] = (row["tflops"] / study.ceiling_tflops if study.ceiling_tflops else None)
    row.update(_memory(study, spec, resident, peak))
    row.update(_stage_table(stages, served.stages, stage_macs, spec.batch, ms))
    row.update(accuracy(served.output_kind, torch.cat(outs), acc_ref, acc_rows))
    return row


def _memory(study: Study, spec: ModeSpec, resident, peak) -> dict:
    if peak is None:  # the CPU keeps no allocator statistics
        return {"peak_gib": None, "resident_gib": None, "work_gib": None, "weights_gib": None}
    bytes_per = torch.finfo(PRECISIONS[spec.precision]).bits // 8
    weights = sum(p.numel() for p in study.base.parameters()) * bytes_per
    return {"peak_gib": peak[1] / GIB, "resident_gib": resident[0] / GIB,
            "work_gib": (peak[1] - resident[0]) / GIB, "weights_gib": weights / GIB}


def _stage_table(stages, names, stage_macs, batch: int, call_ms: float) -> dict:
    if not stages:
        return {"stages": None, "stage_sum_ms": None, "stage_sum_min_ms": None,
                "stage_sum_over_call": None}
    per_stage = [median([it[i] for it in stages]) for i in range(len(names))]
    total = sum(per_stage)
    return {
        "stage_sum_ms": total,  # sum of the stages' medians
        "stage_sum_min_ms": min(sum(it) for it in stages),  # fastest stage-by-stage pass
        "stage_sum_over_call": total / call_ms,
        "stages": [{"stage": s, "ms": t, "share": t / total,
                    "tflops": 2 * stage_macs[s] * batch / (t / 1e3) / 1e12 if t > 0 else None}
                   for s, t in zip(names, per_stage)],
    }
