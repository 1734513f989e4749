"""interpolate --eval's scoring: every factor-th frame kept, the rest recovered and compared."""
import math

import pytest
import torch

from pipeline.cli.interpolate_eval import evaluate_clip


def ramp(frames: int, size=(24, 32)) -> torch.Tensor:
    """Uniform frames whose grey level rises by 8/255 per frame: each frame is exactly the
    average of its neighbours, and any in-between frame a linear blend of the kept ones."""
    levels = (40 + 8 * torch.arange(frames, dtype=torch.float64)) / 255
    return levels.float()[:, None, None, None].expand(frames, 3, *size).clone()


def blend(windows: torch.Tensor, factor: int) -> torch.Tensor:
    """A real interpolator for linear motion: blends frames 1 and 2 of each window."""
    a, b = windows[:, :, 1], windows[:, :, 2]
    return torch.stack([a + (b - a) * k / factor for k in range(1, factor)], 1)


@pytest.mark.parametrize("factor, frames", [(2, 13), (4, 17), (2, 12)])
def test_each_gap_between_kept_frames_is_scored_once(factor, frames):
    clip = ramp(frames)
    table, n = evaluate_clip(lambda w: blend(w, factor), clip.split(5), factor, batch=3)
    gaps = (frames - 1) // factor  # a gap after the last kept frame has no window
    assert n == gaps * (factor - 1)
    assert table["model"]["psnr"] == pytest.approx(100.0)  # exact: capped at 100 dB
    assert table["model"]["ssim"] == pytest.approx(1.0)


def test_baselines_are_scored_against_the_true_frames():
    table, _ = evaluate_clip(lambda w: blend(w, 2), ramp(13).split(4), 2)
    assert table["average"]["psnr"] == pytest.approx(100.0)  # the average of a ramp is exact
    # repeating the nearest kept frame is off by one step of 8/255 everywhere
    assert table["nearest"]["psnr"] == pytest.approx(-20 * math.log10(8 / 255), abs=1e-3)


def test_a_worse_model_scores_lower():
    frozen = lambda w: w[:, :, 1:2].permute(0, 2, 1, 3, 4)  # repeats the earlier frame
    table, _ = evaluate_clip(frozen, ramp(13).split(4), 2)
    assert table["model"]["psnr"] == pytest.approx(table["nearest"]["psnr"])
    assert table["model"]["psnr"] < table["average"]["psnr"]
