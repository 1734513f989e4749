"""Workloads and measures for change-based inference: clips with a known moving fraction, and the
fidelity of outputs against the full model's."""
import math

import pytest
import torch

from models.flavr.change_based import ChangeConfig
from models.flavr.tiles import block_change
from pipeline.analysis.fidelity import fidelity
from pipeline.media.moving_fraction import read_frames, render_clip, write_lossless

H, W = 64, 96


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5, 1.0])
def test_a_lossless_clip_moves_on_the_asked_fraction_of_its_pixels_and_nowhere_else(
        tmp_path, fraction):
    frames, region = render_clip(H, W, 8, fraction, seed=2)
    clip = write_lossless(tmp_path / "clip.mkv", frames)
    decoded = read_frames(clip)
    changed = ((decoded - decoded[:1]).abs().amax(dim=(0, 1)) > 0).numpy()
    inside = region.mask(H, W)
    assert not (changed & ~inside).any()  # the still part is bit-identical in every frame
    assert changed.sum() / (H * W) == pytest.approx(fraction, rel=0.03)  # rectangle rounding


def test_a_fully_moving_clip_changes_every_block_beyond_the_default_threshold():
    # "100% moving" must make change-based inference compute the whole frame, or its
    # throughput there says nothing about its worst case.
    frames, _ = render_clip(128, 192, 8, 1.0, seed=3)
    clip = torch.from_numpy(frames).permute(3, 0, 1, 2).float()[None] / 255.0  # (1, 3, T, H, W)
    threshold = ChangeConfig().threshold
    for start in range(8 - 3):
        change = block_change(clip[:, :, start:start + 4])
        assert change.min().item() > threshold, f"window at frame {start}"


def test_fidelity_is_the_psnr_of_a_known_difference_and_the_share_of_tiles_computed():
    reference = torch.full((2, 1, 3, 8, 8), 0.5)
    out = reference.clone()
    out[..., :4] += 0.125  # half of every frame off by 1/8 (exact in float32): MSE 1/128
    computed = torch.zeros(2, 8, 8, dtype=torch.bool)
    computed[..., :4] = True
    result = fidelity(out, reference, tiles_computed=[1, 2], tiles_total=[4, 4], computed=computed)
    assert result.psnr_db == pytest.approx(10 * math.log10(128), abs=1e-9)
    assert result.psnr_computed_db == pytest.approx(10 * math.log10(64), abs=1e-9)
    assert result.computed_fraction == 3 / 8
    assert fidelity(reference, reference, [0], [4]).psnr_db == math.inf
