"""How far mixing the model's frame with averaging the neighbours can take held-out PSNR: bounds
that look at the answer, to tell whether a blending head is worth training.

    python scripts/val_blend_bound.py [--weights weights/flavr-2x.safetensors] [--windows 4]
        [--config configs/train/flavr-2x.yaml] [--fit-steps 150]

Reads the validation clips of the training config (unpacked .traindata/dataset), runs the first
`--windows` validation windows of each through the model in fp32 on the CPU, and prints per clip
the PSNR of:
  model, average       the model's frame and the mean of the two centre inputs;
  mix a                a * model + (1 - a) * average, one a for every pixel;
  oracle k             per k x k block, the a in [0, 1] that minimises that block's squared
                       error against the target (it sees the target: an upper bound);
  fitted head          a = sigmoid(3x3 conv of the model's last full-resolution features),
                       the blending head one could add, fitted by Adam on these very windows
                       with the model frozen (it trains on what it is scored on: a bound too).
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.flavr.checkpoint import build_model
from pipeline.analysis.quality import baselines, psnr, quantize
from pipeline.train.config import load_train_config
from pipeline.train.data import ValData

BLOCKS = (1, 8, 32)
MIXES = (0.75, 0.5)


def model_and_features(model, inputs):
    """The model's frames (B, 1, 3, H, W) and the features its output conv reads (B, 64, H, W),
    taken on their way into that conv by a hook, so the head runs as the model defines it."""
    seen = []
    hook = model.outconv.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    try:
        out = model(inputs)
    finally:
        hook.remove()
    return out, seen[0][..., :inputs.shape[-2], :inputs.shape[-1]]


def oracle_mix(model_out, average, target, block: int) -> torch.Tensor:
    """Per block, the least-squares mix of model and average (clamped to [0, 1])."""
    d, e = model_out - average, target - average
    num = F.avg_pool2d((e * d).sum(2), block, ceil_mode=True)
    den = F.avg_pool2d((d * d).sum(2), block, ceil_mode=True)
    a = (num / den.clamp_min(1e-12)).clamp(0, 1)
    a = F.interpolate(a, scale_factor=block, mode="nearest")[..., :d.shape[-2], :d.shape[-1]]
    return average + a[:, :, None] * d


def fit_head(clips, steps: int) -> nn.Module:
    head = nn.Conv2d(clips[0]["features"].shape[1], 1, 3, padding=1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)  # starts at a = 0.5 everywhere
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    for _ in range(steps):
        loss = sum(F.mse_loss(_blend(head, c), c["target"]) for c in clips)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head


def _blend(head, c):
    a = torch.sigmoid(head(c["features"]))[:, :, None]
    return a * c["model"] + (1 - a) * c["average"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default="weights/flavr-2x.safetensors")
    ap.add_argument("--config", default="configs/train/flavr-2x.yaml")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--fit-steps", type=int, default=150)
    args = ap.parse_args(argv)
    val = ValData(load_train_config(args.config), torch.device("cpu"))
    if val.factor != 2:
        raise SystemExit(f"{args.config}: this analysis is for 2x models, not {val.factor}x")
    model = build_model(None, args.weights).float().eval()
    clips = []
    for clip in val.clips:
        inputs, target = next(val.batches(clip, args.windows))
        with torch.no_grad():
            out, features = model_and_features(model, inputs)
        clips.append({"name": clip.name, "model": out, "features": features, "target": target,
                      "average": baselines(inputs, val.factor)["average"]})
    head = fit_head(clips, args.fit_steps)
    for c in clips:
        m, avg, t = c["model"], c["average"], c["target"]
        with torch.no_grad():
            rows = {"model": m, "average": avg}
            rows.update({f"mix {a:g}": a * m + (1 - a) * avg for a in MIXES})
            rows.update({f"oracle {k}": oracle_mix(m, avg, t, k) for k in BLOCKS})
            rows["fitted head"] = _blend(head, c)
            scores = {k: psnr(quantize(v), t).mean().item() for k, v in rows.items()}
        print(f"{c['name']} ({t.shape[0]} windows): "
              + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
