"""Small random FLAVR models and inputs shared by the CPU and GPU model tests."""
from functools import cache

import torch

from models.flavr.model import FLAVR, FLAVRConfig

ODD = (36, 44)  # not a multiple of 8: exercises padding and cropping
SMALL = (20, 28)  # also not a multiple of 8, and cheap enough to run many times on a CPU


@cache
def random_model(factor=2, seed=0):
    """Shared between tests; tests that change a model work on a copy."""
    torch.manual_seed(seed)
    return FLAVR(FLAVRConfig(factor)).eval().requires_grad_(False)


def frames(batch=1, size=SMALL, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, 4, *size, generator=g)


def initial_state(x):
    return {"frames": x, "size": tuple(x.shape[-2:])}
