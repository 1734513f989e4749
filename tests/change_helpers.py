"""Small windows with known change, and a FLAVR whose output depends visibly on its input, for the
change-based inference tests (CPU)."""
from functools import cache

import torch

from models.flavr.model import FLAVR, FLAVRConfig
from pipeline.bench.change_passes import liven
from pipeline.media.synthetic import make_scene, render

SIZE = (64, 96)  # (H, W): a multiple of 8, so that the full model itself does not pad


@cache
def active_model(factor=2, seed=0):
    """A random FLAVR whose output depends visibly on its input (see `liven`), so that errors
    from tiling show. Shared between tests; do not change it."""
    torch.manual_seed(seed)
    return liven(FLAVR(FLAVRConfig(factor)).eval().requires_grad_(False))


def texture(size=SIZE, seed=3) -> torch.Tensor:
    """(3, H, W) float in [0, 1]: a still textured scene."""
    h, w = size
    return torch.from_numpy(render(make_scene(w, h, 4, seed), 0.0, w, h)).permute(2, 0, 1)


def still_window(size=SIZE, seed=3) -> torch.Tensor:
    """(1, 3, 4, H, W): four identical frames."""
    return texture(size, seed)[:, None].repeat(1, 4, 1, 1)[None].clone()


def with_moving_patch(window: torch.Tensor, top: int, left: int, height: int, width: int,
                      seed: int = 9) -> torch.Tensor:
    """A copy of `window` in which the rectangle shows another texture sliding one pixel to the
    left per frame; every pixel outside it is left as it was."""
    out = window.clone()
    other = texture((window.shape[-2], window.shape[-1] + 4), seed)
    for k in range(4):
        out[0, :, k, top:top + height, left:left + width] = \
            other[:, top:top + height, left + k:left + k + width]
    return out
