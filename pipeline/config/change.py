"""The one conversion of the config's `model.change_based` into the model's ChangeConfig, and the
rules that tie it to the rest of the config. Errors name the dotted field."""
from __future__ import annotations

import re
from dataclasses import fields

from pipeline.errors import ConfigError

FIELD = "model.change_based"


def change_config(model_cfg):
    """models.flavr.change_based.ChangeConfig for `model_cfg.change_based`, or None when off.
    Only the knobs ChangeConfig has are passed on (`check` is the pipeline's own)."""
    spec = model_cfg.change_based
    if spec is None:
        return None
    from models.flavr.change_based import ChangeConfig  # imports torch: only when it is on

    known = {f.name for f in fields(ChangeConfig)}
    values = {f.name: getattr(spec, f.name) for f in fields(spec) if f.name in known}
    try:
        return ChangeConfig(**values)
    except ValueError as exc:
        # ChangeConfig says "change_based.<name>: why"; name the config's field instead.
        match = re.match(r"change_based\.(\w+): (.*)", str(exc), re.S)
        if not match:
            raise ConfigError(FIELD, str(exc)) from None
        raise ConfigError(f"{FIELD}.{match[1]}", match[2]) from None


def validate_change_based(cfg, served) -> None:
    """Change-based inference can run this config: the model has it, the knobs are consistent,
    nothing compiles a tile batch whose size changes every call, and every stream stays on one
    replica of each model step (the gate attention its tiles use is kept per replica)."""
    if cfg.model.change_based is None:
        return
    if not getattr(served, "change_based", False):
        raise ConfigError(FIELD, f"change-based inference exists for FLAVR only, not for "
                                 f"model '{cfg.model.name}'; remove model.change_based")
    change_config(cfg.model)
    for name in ("compile", "cuda_graphs"):
        if getattr(cfg.model, name):
            raise ConfigError(f"model.{name}", "cannot be combined with model.change_based: the "
                                               "tile batch changes size every call, and each new "
                                               "size would compile (or capture) again")
    if cfg.videos.streams is None:
        return  # a clip request's windows always travel together, through one replica each
    for i, step in enumerate(cfg.steps):
        if i == 0 or step.kind != "model" or len(step.gpus) == 1:
            continue
        before = cfg.steps[i - 1]
        if before.queue != "per_gpu":
            raise ConfigError(f"pipeline[{i - 1}].queue",
                              f"with model.change_based and streams, a stream must stay on one "
                              f"replica of '{step.name}' (its gate attention is kept there), but "
                              f"a global queue hands its segments to any of its {len(step.gpus)} "
                              f"replicas; use queue: per_gpu with one replica per GPU, or one "
                              f"replica")
        if len(set(step.gpus)) != len(step.gpus):
            raise ConfigError(f"pipeline[{i}].gpus",
                              f"with model.change_based and streams, a stream must stay on one "
                              f"replica of '{step.name}', but several replicas on one GPU share "
                              f"that GPU's queue; give each replica its own GPU")
