"""Models looked up by name: the config's `model.name`, `--model` of the model benchmark.

One line per model: its name and where its ServedModel (models/base.py) lives. Imported only
when asked for, so listing the names costs nothing.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the names are listed without importing torch
    from models.base import ServedModel

MODELS = {
    "flavr": "models.flavr.served:FLAVRServed",
    "r2plus1d": "models.r2plus1d.served:R2Plus1DServed",
}
MODEL_NAMES = tuple(MODELS)
RANDOM_WEIGHTS = "random"  # model.checkpoint / --checkpoint value that asks for untrained weights


def model_class(name: str) -> "type[ServedModel]":
    """The ServedModel class registered as `name`."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; models are {', '.join(MODEL_NAMES)}")
    module, _, attr = MODELS[name].partition(":")
    return getattr(import_module(module), attr)


def served_model(model_cfg) -> "ServedModel":
    """The model a config's `model` section describes."""
    return model_class(model_cfg.name).from_config(model_cfg)
