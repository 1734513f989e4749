"""`interpolate --eval`: how well the model recovers frames it never saw.

Every `factor`-th frame of the clip is kept, the model interpolates between the kept frames, and
each new frame is compared with the true frame it stands for (PSNR, SSIM), next to the two
model-free baselines (repeating the nearest kept frame, averaging the two around the gap). Frames
stream through in chunks: memory holds one chunk, the windows of one batch and the true frames
not yet compared. A gap after the last kept frame has no window and is not counted.
"""
from __future__ import annotations

import torch

from models.flavr.windows import StreamingWindows
from pipeline.analysis.quality import METHODS, GapScores, baselines


def evaluate_clip(model, chunks, factor: int, batch: int = 4) -> tuple[dict, int]:
    """Scores per method (mean PSNR dB and SSIM over the compared frames) and the frame count.

    model: FLAVR for `factor` (windows (B,3,4,H,W) -> (B,factor-1,3,H,W)); chunks: the clip's
    frames at full rate, (t,3,H,W) float in [0,1]."""
    scores, windows_of = GapScores(), StreamingWindows(batch)
    truth: dict[int, torch.Tensor] = {}  # frame index -> true frame, until compared
    seen = 0

    def compare(windows: torch.Tensor, first_gap: int) -> None:
        with torch.inference_mode():
            new = model(windows)  # (B, factor-1, 3, H, W)
        guesses = {"model": new, **baselines(windows, factor)}
        for j in range(windows.shape[0]):
            gap = first_gap + j
            ids = [gap * factor + k for k in range(1, factor)]
            if not all(i in truth for i in ids):
                continue  # the clip ended inside this gap
            scores.add({m: g[j] for m, g in guesses.items()},
                       torch.stack([truth.pop(i) for i in ids]).to(new.device))

    for chunk in chunks:
        kept = []
        for frame in chunk:
            if seen % factor == 0:
                kept.append(frame)
            else:
                truth[seen] = frame
            seen += 1
        if kept:
            for windows, first in windows_of.push(torch.stack(kept)):
                compare(windows, first)
    for windows, first in windows_of.finish():
        compare(windows, first)
    return scores.table(), scores.n


def format_scores(table: dict, n: int, factor: int) -> str:
    lines = [f"{n} frames recovered at {factor}x (1 frame in {factor} kept, the rest interpolated)",
             f"  {'method':<8} {'PSNR dB':>8} {'SSIM':>7}"]
    for m in METHODS:
        lines.append(f"  {m:<8} {table[m]['psnr']:8.2f} {table[m]['ssim']:7.4f}")
    gain = table["model"]["psnr"] - table["average"]["psnr"]
    lines.append(f"  model vs average: {gain:+.2f} dB")
    return "\n".join(lines)
