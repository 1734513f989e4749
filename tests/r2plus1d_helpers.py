"""Small random R(2+1)D-18 models and clips shared by the CPU and GPU model tests."""
from functools import cache

import torch

from models.r2plus1d.model import R2Plus1D

SMALL = (20, 28)  # H, W: cheap on a CPU, and odd after the stem (10x14 -> 5x7 -> 3x4 -> 2x2)


@cache
def random_model(seed=0):
    """Shared between tests; tests that change a model work on a copy."""
    torch.manual_seed(seed)
    return R2Plus1D().eval().requires_grad_(False)


def clips(batch=1, size=SMALL, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, 16, *size, generator=g)


def initial_state(x):
    return {"frames": x, "size": tuple(x.shape[-2:])}
