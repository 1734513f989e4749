"""An exponential moving average of the weights (optim.ema): a copy of the model that follows the
trained one slowly, so that the step-to-step noise of the optimizer averages out of the weights
that are validated and exported. Only the rank that validates and saves keeps one (every rank
holds the same weights under DDP)."""
from __future__ import annotations

import copy

import torch
from torch import nn

from pipeline.train.checkpoint import copy_weights


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float, updates: int = 0):
        self.decay = decay
        self.updates = updates
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._pairs(model)

    def _pairs(self, model: nn.Module) -> None:
        """Floating tensors are averaged; the rest (none in FLAVR today) are copied."""
        own = dict(self.module.state_dict(keep_vars=True))
        src = dict(model.state_dict(keep_vars=True))
        if own.keys() != src.keys():
            raise ValueError("the average and the model have different tensors")
        floats = [k for k, v in own.items() if v.is_floating_point()]
        self._avg = [own[k].data for k in floats]
        self._src = [src[k].data for k in floats]
        self._copy = [(own[k].data, src[k].data) for k in own if k not in floats]

    def rate(self) -> float:
        """The decay of the next update. It starts low so that a new average is not held at its
        first weights for thousands of steps: (1 + n) / (10 + n) after n updates, up to decay."""
        n = self.updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self) -> None:
        d = self.rate()
        torch._foreach_lerp_(self._avg, self._src, 1.0 - d)
        for dst, src in self._copy:
            dst.copy_(src)
        self.updates += 1

    def load(self, weights: dict[str, torch.Tensor], updates: int) -> None:
        """Take saved average weights (any dtype, any device) and the count of updates."""
        copy_weights(self.module, weights, "moving average")
        self.updates = updates
