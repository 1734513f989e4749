"""Validation: PSNR and SSIM of the model's in-between frames on held-out real clips, next to two
baselines that need no model (the metrics and baselines: pipeline/analysis/quality.py)."""
from __future__ import annotations

import contextlib
import math

import torch

from pipeline.analysis.quality import METHODS, baselines, psnr, quantize, ssim  # noqa: F401


@torch.no_grad()
def evaluate(model, val_data, batch: int, precision: str = "fp32") -> list[dict]:
    """One row per held-out clip (and a 'mean' row): PSNR and SSIM of model and baselines.

    `model` is the plain FLAVR module; its eager forward is called (a compiled copy would
    recompile for every new frame size)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    rows = []
    try:
        for clip in val_data.clips:
            sums = {f"{m}_{q}": 0.0 for m in METHODS for q in ("psnr", "ssim")}
            count = 0
            for inputs, targets in val_data.batches(clip, batch):
                with autocast:
                    out = type(model).forward(model, inputs).float()
                guesses = {"model": out, **baselines(inputs, val_data.factor)}
                for name, guess in guesses.items():
                    g = quantize(guess)
                    sums[f"{name}_psnr"] += float(psnr(g, targets).clamp(max=100).sum())
                    sums[f"{name}_ssim"] += float(ssim(g, targets).sum())
                count += targets.shape[0] * targets.shape[1]
            rows.append({"clip": clip.name, "frames": count,
                         **{k: v / max(count, 1) for k, v in sums.items()}})
    finally:
        model.train(was_training)
    if rows:
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k not in ("clip", "frames")}
        rows.append({"clip": "mean", "frames": sum(r["frames"] for r in rows), **mean})
    return rows


def summary_line(step: int, rows: list[dict]) -> str:
    """One line for the console: the mean PSNR/SSIM of the model and both baselines."""
    if not rows:
        return f"val @ {step}: no held-out windows"
    m = rows[-1]
    gain = m["model_psnr"] - m["average_psnr"]
    return (f"val @ {step}: PSNR model {m['model_psnr']:.2f} dB  average {m['average_psnr']:.2f}  "
            f"nearest {m['nearest_psnr']:.2f}  ({gain:+.2f} dB vs average)  |  SSIM model "
            f"{m['model_ssim']:.4f}  average {m['average_ssim']:.4f}  nearest {m['nearest_ssim']:.4f}"
            + (f"  (weights without averaging: {m['raw_psnr']:.2f} dB)" if "raw_psnr" in m else "")
            + ("" if math.isfinite(gain) else "  (non-finite)"))
