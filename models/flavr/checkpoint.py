"""Loading and saving FLAVR weights (files are read by models/weights.py, which runs no code
from them unless trusted).

Layouts read:
  safetensors  {'<name>': tensor}, the model's own key names; metadata may say the factor
               (what `save_checkpoint` writes for a .safetensors path, and the preferred format)
  released     {'state_dict': {'module.<name>': tensor}, 'epoch', 'optimizer', 'best_psnr', 'lr'}
               (FLAVR_2x/4x/8x.pth as published; the extra entries are ignored)
  plain        {'<name>': tensor} with or without the 'module.' prefix
  project      {'format': 'flavr-serving/1', 'factor': F, 'state_dict': {'<name>': tensor}}

The checkpoint describes its own model: the factor comes from the head's output channels
(3 per output frame) and the encoder-bias variant from whether the stem conv has a bias.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from models.base import warn_random_weights
from models.flavr.model import FLAVR, FLAVRConfig
from models.weights import (
    SAFETENSORS,
    check_fit,
    cpu_state,
    read_weights,
    save_weights,
    tensors_only,
)
from pipeline.errors import CheckpointError

PROJECT_FORMAT = "flavr-serving/1"
HEAD_WEIGHT = "outconv.1.weight"
STEM_BIAS = "encoder.stem.0.bias"
_PREFIX = "module."  # the released files were saved from an nn.DataParallel wrapper


def _describe(source) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else "<checkpoint dict>"


def load_state(path_or_dict, trust: bool = False) -> dict[str, torch.Tensor]:
    """Read any of the layouts; return the weights keyed by module name (no 'module.')."""
    name = _describe(path_or_dict)
    declared = None  # the factor the file says it holds, if it says
    if isinstance(path_or_dict, dict):
        obj = path_or_dict
    else:
        loaded = read_weights(path_or_dict, trust)
        obj = loaded.obj
        if loaded.metadata.get("factor"):
            declared = loaded.metadata["factor"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{name}: expected a dict of weights, found {type(obj).__name__}")

    if "format" in obj:
        if obj["format"] != PROJECT_FORMAT:
            raise CheckpointError(f"{name}: unknown checkpoint format {obj['format']!r} "
                                  f"(this code reads {PROJECT_FORMAT!r})")
        state, declared = obj["state_dict"], obj.get("factor")
    elif isinstance(obj.get("state_dict"), dict):
        state = obj["state_dict"]  # released layout; epoch/optimizer/best_psnr/lr are training state
    else:
        state = obj
    if not isinstance(state, dict):
        raise CheckpointError(f"{name}: 'state_dict' is not a dict of weights")

    state = {k.removeprefix(_PREFIX): v for k, v in tensors_only(state, name).items()}
    if declared is not None and str(infer_factor(state, name)) != str(declared):
        raise CheckpointError(f"{name}: file says factor {declared} but its head weights "
                              f"are those of a {infer_factor(state, name)}x model")
    return state


def infer_factor(state: dict[str, torch.Tensor], name: str = "<checkpoint dict>") -> int:
    """The interpolation factor of a state dict, from the head conv's 3*(factor-1) outputs."""
    if HEAD_WEIGHT not in state:
        raise CheckpointError(f"{name}: no {HEAD_WEIGHT!r}; not a FLAVR checkpoint")
    channels = state[HEAD_WEIGHT].shape[0]
    factor = channels // 3 + 1
    if channels % 3 or factor not in (2, 4, 8):
        raise CheckpointError(f"{name}: {HEAD_WEIGHT} has {channels} output channels; "
                              "FLAVR has 3, 9 or 21 (factor 2, 4 or 8)")
    return factor


def fit(state: dict[str, torch.Tensor], factor: int | None, name: str) -> tuple[FLAVR, FLAVRConfig]:
    """The (meta, unallocated) FLAVR model that `state` fits exactly, or a CheckpointError.

    factor: None takes the checkpoint's; a value that disagrees with it is an error, since a 2x
    file cannot make 4x frames."""
    found = infer_factor(state, name)
    if factor is not None and factor != found:
        raise CheckpointError(f"{name}: holds a {found}x model, but factor {factor} was asked for")
    config = FLAVRConfig(found, encoder_bias=STEM_BIAS in state)
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        model = FLAVR(config)
    check_fit(model.state_dict(), state, name, f"the FLAVR {found}x model (encoder bias "
                                               f"{'on' if config.encoder_bias else 'off'})")
    return model, config


def check_checkpoint(path, factor: int | None = None, trust: bool = False) -> None:
    """Raise CheckpointError unless `path` holds a FLAVR model of `factor` (CPU only)."""
    fit(load_state(path, trust), factor, _describe(path))


def build_model(factor: int | None = None, checkpoint=None, device="cpu",
                seed: int | None = None, trust: bool = False) -> FLAVR:
    """A FLAVR model on `device`, with the checkpoint's weights or, without one, random ones.

    factor: None takes the checkpoint's (2 without a checkpoint). Keys are checked strictly.
    seed: fixes the random initialisation (only used without a checkpoint).
    trust: allow full unpickling of a torch.save file that holds more than weights.
    """
    if checkpoint is None:
        warn_random_weights("FLAVR", "For real output, set model.checkpoint (benchmark) or "
                                     "--checkpoint (interpolate) to a .safetensors or FLAVR_2x/"
                                     "4x/8x.pth file, or leave it unset for the shipped 2x "
                                     "weights.")
        config = FLAVRConfig(factor if factor is not None else 2)
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            model = FLAVR(config)
        return model.to(device)

    state = load_state(checkpoint, trust)
    model, _ = fit(state, factor, _describe(checkpoint))
    model = model.to_empty(device=device)  # allocate on the device, then fill from the file
    model.load_state_dict(state, strict=True)
    return model


def save_checkpoint(model: FLAVR, path, layout: str = "project") -> Path:
    """Write the model's weights. A .safetensors path gets the model's own key names and the
    factor in its metadata (the preferred format); other paths are torch.save files, in the
    project layout or "released" (which loads in the original FLAVR code as well)."""
    state = cpu_state(model)
    factor = getattr(model, "_orig_mod", model).config.factor
    if Path(path).suffix == SAFETENSORS:
        return save_weights(state, path, {"format": PROJECT_FORMAT, "model": "flavr",
                                          "factor": str(factor)})
    if layout == "project":
        obj = {"format": PROJECT_FORMAT, "factor": factor, "state_dict": state}
    elif layout == "released":
        obj = {"state_dict": {_PREFIX + k: v for k, v in state.items()}}
    else:
        raise ValueError(f"layout must be 'project' or 'released', got {layout!r}")
    return save_weights(obj, path)
