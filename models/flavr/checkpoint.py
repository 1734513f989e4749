"""Loading and saving FLAVR weights.

Four layouts are read:
  released  {'state_dict': {'module.<name>': tensor}, 'epoch', 'optimizer', 'best_psnr', 'lr'}
            (FLAVR_2x/4x/8x.pth as published; the extra entries are ignored)
  plain     {'<name>': tensor} with or without the 'module.' prefix
  project   {'format': 'flavr-serving/1', 'factor': F, 'state_dict': {'<name>': tensor}}
  .safetensors  {'<name>': tensor} (what `python -m pipeline.train export` writes; any dtype)

The checkpoint describes its own model: the factor comes from the head's output channels
(3 per output frame) and the encoder-bias variant from whether the stem conv has a bias.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import torch

from models.flavr.model import FLAVR, FLAVRConfig
from pipeline.errors import CheckpointError

PROJECT_FORMAT = "flavr-serving/1"
HEAD_WEIGHT = "outconv.1.weight"
STEM_BIAS = "encoder.stem.0.bias"
_PREFIX = "module."  # the released files were saved from an nn.DataParallel wrapper

_random_weights_warned = False


def _describe(source) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else "<checkpoint dict>"


def _torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # The released files hold only tensors and plain numbers, which the restricted loader
        # accepts; older training scripts may have pickled something else next to the weights
        # (e.g. a numpy scalar for 'best_psnr'). Such a file is only loadable by full unpickling,
        # which can run code from the file: say so, then do it.
        warnings.warn(f"{path}: holds more than tensors and plain values, so torch.load with "
                      "weights_only=True refused it; loading it with full unpickling, which trusts "
                      "the file", stacklevel=3)
        return torch.load(path, map_location="cpu", weights_only=False)


def _safetensors_load(path: Path) -> dict[str, torch.Tensor]:
    # Tensors only, by construction: nothing in the file can run code.
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file: {e}") from None


def load_state(path_or_dict) -> dict[str, torch.Tensor]:
    """Read any of the three layouts; return the weights keyed by module name (no 'module.')."""
    name = _describe(path_or_dict)
    if isinstance(path_or_dict, dict):
        obj = path_or_dict
    else:
        path = Path(path_or_dict)
        if not path.is_file():
            raise CheckpointError(f"{name}: checkpoint file not found")
        obj = _safetensors_load(path) if path.suffix == ".safetensors" else _torch_load(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{name}: expected a dict of weights, found {type(obj).__name__}")

    if "format" in obj:
        if obj["format"] != PROJECT_FORMAT:
            raise CheckpointError(f"{name}: unknown checkpoint format {obj['format']!r} "
                                  f"(this code reads {PROJECT_FORMAT!r})")
        state = obj["state_dict"]
    elif isinstance(obj.get("state_dict"), dict):
        state = obj["state_dict"]  # released layout; epoch/optimizer/best_psnr/lr are training state
    else:
        state = obj

    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{name}: entries that are not tensors: {bad[:5]}"
                              f"{' ...' if len(bad) > 5 else ''}")
    state = {k.removeprefix(_PREFIX): v for k, v in state.items()}

    if "format" in obj and obj.get("factor") is not None and infer_factor(state, name) != obj["factor"]:
        raise CheckpointError(f"{name}: file says factor {obj['factor']} but its head weights "
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


def _listing(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > n else ''})"


def build_model(factor: int | None = None, checkpoint=None, device="cpu",
                seed: int | None = None) -> FLAVR:
    """A FLAVR model on `device`, with the checkpoint's weights or, without one, random ones.

    factor: None takes the checkpoint's (2 without a checkpoint); a value that disagrees with the
    checkpoint is an error, since a 2x file cannot make 4x frames. Keys are checked strictly.
    seed: fixes the random initialisation (only used without a checkpoint).
    """
    if checkpoint is None:
        _warn_random_weights()
        config = FLAVRConfig(factor if factor is not None else 2)
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            model = FLAVR(config)
        return model.to(device)

    name = _describe(checkpoint)
    state = load_state(checkpoint)
    found = infer_factor(state, name)
    if factor is not None and factor != found:
        raise CheckpointError(f"{name}: holds a {found}x model, but factor {factor} was asked for")
    config = FLAVRConfig(found, encoder_bias=STEM_BIAS in state)

    # Build without initialising (meta), then allocate on the device and fill from the file.
    with torch.device("meta"):
        model = FLAVR(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{name}: keys do not fit the FLAVR {found}x model "
                              f"(encoder bias {'on' if config.encoder_bias else 'off'}): "
                              f"missing {_listing(missing)}, unexpected {_listing(unexpected)}")
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
             for k, v in state.items() if v.shape != expected[k].shape]
    if wrong:
        raise CheckpointError(f"{name}: tensor shapes do not fit the FLAVR {found}x model: "
                              f"{_listing(wrong, 3)}")
    model = model.to_empty(device=device)
    model.load_state_dict(state, strict=True)
    return model


def _warn_random_weights():
    global _random_weights_warned
    if not _random_weights_warned:
        _random_weights_warned = True
        warnings.warn("FLAVR has random weights: the interpolated frames are not meaningful "
                      "(timings are). Pass --checkpoint with a FLAVR_2x/4x/8x.pth file for real output.",
                      stacklevel=3)


def save_checkpoint(model: FLAVR, path, layout: str = "project") -> Path:
    """Write the model's weights. layout "released" loads in the original FLAVR code as well."""
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper holds the module here
    # CPU, default layout: the file must not depend on the device or memory format it came from.
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if layout == "project":
        obj = {"format": PROJECT_FORMAT, "factor": model.config.factor, "state_dict": state}
    elif layout == "released":
        obj = {"state_dict": {_PREFIX + k: v for k, v in state.items()}}
    else:
        raise ValueError(f"layout must be 'project' or 'released', got {layout!r}")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint under the real name
    return path
