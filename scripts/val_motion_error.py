"""Where the model loses to averaging on the held-out clips: squared error of the model's and of
averaging's in-between frames, split by how much each pixel moves between the two centre inputs.

    python scripts/val_motion_error.py [--weights weights/flavr-2x.safetensors] [--windows 2]
        [--config configs/train/flavr-2x.yaml] [--device cpu]

Reads the validation clips of the training config (unpacked .traindata/dataset), runs the first
`--windows` validation windows of each through the model in fp32, and prints per clip the PSNR of
both and, per band of motion (largest change of a pixel between the two centre inputs, 0..1),
the share of pixels and the mean squared error of each.
"""
from __future__ import annotations

import argparse
import sys

import torch

from models.flavr.checkpoint import build_model
from pipeline.analysis.quality import baselines, psnr, quantize
from pipeline.train.config import load_train_config
from pipeline.train.data import ValData

BANDS = ((0.0, 0.02), (0.02, 0.1), (0.1, 1.01))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default="weights/flavr-2x.safetensors")
    ap.add_argument("--config", default="configs/train/flavr-2x.yaml")
    ap.add_argument("--windows", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    val = ValData(load_train_config(args.config), device)
    model = build_model(None, args.weights, device=device).float().eval()
    for clip in val.clips:
        inputs, targets = next(val.batches(clip, args.windows))
        with torch.no_grad():
            guesses = {"model": quantize(model(inputs).float()),
                       "average": quantize(baselines(inputs, val.factor)["average"])}
        print(f"{clip.name}: {targets.shape[0]} window(s), "
              + ", ".join(f"{k} {psnr(g, targets).mean().item():.2f} dB" for k, g in guesses.items()))
        motion = (inputs[:, :, 2] - inputs[:, :, 1]).abs().amax(1)[:, None, None]  # (B,1,1,H,W)
        for lo, hi in BANDS:
            band = ((motion >= lo) & (motion < hi)).expand_as(targets)
            if band.any():
                errors = "  ".join(f"{k} mse {(g - targets)[band].pow(2).mean().item():.2e}"
                                   for k, g in guesses.items())
                print(f"  motion {lo:g}-{min(hi, 1):g}: {100 * band.float().mean().item():5.1f}% "
                      f"of pixels  {errors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
