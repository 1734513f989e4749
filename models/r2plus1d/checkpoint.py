"""Loading and saving R(2+1)D-18 weights (files are read by models/weights.py, which runs no
code from them unless trusted).

Layouts read: a .safetensors file with the model's own key names (what `save_checkpoint` writes),
or a torch.save file holding {'<name>': tensor} or {'state_dict': {...}}, with or without a
'module.' prefix. Batch-norm running statistics are part of the weights.
"""
from __future__ import annotations

from pathlib import Path

import torch

from models.base import warn_random_weights
from models.r2plus1d.model import R2Plus1D, R2Plus1DConfig
from models.weights import (
    SAFETENSORS,
    check_fit,
    cpu_state,
    read_weights,
    save_weights,
    tensors_only,
)
from pipeline.errors import CheckpointError

FORMAT = "flavr-serving/r2plus1d-1"
_PREFIX = "module."


def load_state(path, trust: bool = False) -> dict[str, torch.Tensor]:
    obj = read_weights(path, trust).obj
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of weights, found {type(obj).__name__}")
    return {k.removeprefix(_PREFIX): v for k, v in tensors_only(obj, path).items()}


def fit(state: dict[str, torch.Tensor], config: R2Plus1DConfig, name) -> R2Plus1D:
    """The (meta, unallocated) model that `state` fits exactly, or a CheckpointError."""
    with torch.device("meta"):
        model = R2Plus1D(config)
    check_fit(model.state_dict(), state, name,
              f"R(2+1)D-18 with {config.num_classes} classes")
    return model


def check_checkpoint(path, config: R2Plus1DConfig, trust: bool = False) -> None:
    fit(load_state(path, trust), config, path)


def build_model(config: R2Plus1DConfig | None = None, checkpoint=None, device="cpu",
                seed: int | None = None, trust: bool = False) -> R2Plus1D:
    """The model on `device`: the checkpoint's weights, or random ones (fixed by `seed`)."""
    config = config or R2Plus1DConfig()
    if checkpoint is None:
        warn_random_weights("R(2+1)D-18", "Set model.checkpoint to a .safetensors file of "
                                          "trained weights for real class scores.")
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            return R2Plus1D(config).to(device)
    state = load_state(checkpoint, trust)
    model = fit(state, config, checkpoint).to_empty(device=device)
    model.load_state_dict(state, strict=True)
    model.reset_constants()  # not in the file: to_empty left them unset
    return model


def save_checkpoint(model: R2Plus1D, path) -> Path:
    """Write the weights: .safetensors (preferred) or, for other suffixes, a torch.save file."""
    state = cpu_state(model)
    if Path(path).suffix == SAFETENSORS:
        return save_weights(state, path, {"format": FORMAT, "model": "r2plus1d"})
    return save_weights(state, path)
