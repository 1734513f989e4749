"""FLAVR's channel gates, recorded from one run and imposed on another.

Every Gate scales its channels by sigmoid(conv(average over T, H, W)): a statistic of the whole
frame. A tile cut out of a frame averages over the tile alone, so on its own it gates differently
from the same pixels inside the full frame. Change-based inference (change_based.py) records the
attention of every gate while a stream's window runs whole, and imposes it while that stream's
tiles run. Both work through forward hooks on each gate's attention layer, added for the duration
of a `with` block, so the model itself keeps no extra state and its code needs no switch.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn as nn

from models.flavr.model import Gate


def gate_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Each gate's attention layer (conv + sigmoid), by the gate's module name."""
    return {name: module.attn_layer for name, module in model.named_modules()
            if isinstance(module, Gate)}


@contextlib.contextmanager
def recording_attention(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Inside the block, every gate that runs stores its attention, (B, C) in the model's dtype,
    in the yielded dict under its name (a gate that runs twice keeps the last)."""
    recorded: dict[str, torch.Tensor] = {}

    def hook(name):
        def store(module, inputs, attention):
            recorded[name] = attention.detach().flatten(1)
        return store

    handles = [layer.register_forward_hook(hook(name)) for name, layer in gate_layers(model).items()]
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def imposed_attention(model: nn.Module, attention: dict[str, torch.Tensor]) -> Iterator[None]:
    """Inside the block, every gate that runs uses attention[name], (N, C) for a batch of N,
    instead of its own; a gate with no entry is an error naming it."""

    def hook(name):
        def replace(module, inputs, own):
            if name not in attention:
                raise KeyError(f"no imposed attention for gate {name!r}")
            return attention[name].to(own.dtype).view_as(own)
        return replace

    handles = [layer.register_forward_hook(hook(name)) for name, layer in gate_layers(model).items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
