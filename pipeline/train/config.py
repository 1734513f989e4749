"""The training config: one dataclass schema, from which defaults, loading, `--set` overrides and
validation all follow. Every field carries its bounds (or choices) and a one-line doc, and every
error is a ConfigError naming the dotted field, e.g. `config field 'optim.lr': must be <= 0.1`.

    cfg = load_train_config("configs/train/flavr-2x.yaml", ["optim.lr=1e-4", "train.steps=100"])
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.config.loading import ConfigFileError, _parse_yaml
from pipeline.errors import ConfigError


def num(default, lo, hi, doc: str):
    """A number field with inclusive bounds."""
    return field(default=default, metadata={"min": lo, "max": hi, "doc": doc})


def choice(default, choices, doc: str):
    return field(default=default, metadata={"choices": tuple(choices), "doc": doc})


def opt(default, doc: str, **meta):
    """Any other field (bool, str, list): doc only, or bounds on a list's items."""
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: list(default), metadata={"doc": doc, **meta})
    return field(default=default, metadata={"doc": doc, **meta})


@dataclass
class ModelSection:
    factor: int = choice(2, (2, 4, 8), "frame-rate multiplier the model learns")


@dataclass
class DataSection:
    root: str = opt(".traindata/dataset", "dataset folder holding manifest.json (made by "
                    "scripts/fetch_training_data.sh); relative paths are from the working directory")
    val_clips: list = opt(["vtest.avi", "tree.avi"], "real clips held out of training, by file "
                          "name (validation runs on them; [] for none)", empty_ok=True)
    crop: int = num(256, 16, 2048, "training crop size in pixels (square)")
    real_fraction: float = num(0.3, 0.0, 1.0, "share of samples cut from real clips; the rest are "
                               "synthetic motion rendered from photos")
    photo_size: list = opt([720, 1280], "[height, width] every photo is resized and cropped to "
                           "on the device (portrait photos are turned first)", min=16, max=4096)
    max_photos: int = num(0, 0, 100000, "use at most this many photos (0: all)")
    hflip: float = num(0.5, 0.0, 1.0, "probability of a horizontal flip")
    vflip: float = num(0.5, 0.0, 1.0, "probability of a vertical flip")
    reverse: float = num(0.5, 0.0, 1.0, "probability of playing a sample backwards")


@dataclass
class SyntheticSection:
    layers_min: int = num(2, 0, 8, "fewest foreground layers over the background")
    layers_max: int = num(4, 0, 8, "most foreground layers")
    layer_speed: float = num(6.0, 0.0, 64.0, "largest layer speed, pixels per frame (of the "
                             "sample's own frame rate)")
    camera_speed: float = num(3.0, 0.0, 64.0, "largest camera pan speed, pixels per frame")
    rotation_deg: float = num(1.0, 0.0, 30.0, "largest rotation per frame, degrees")
    zoom: float = num(0.01, 0.0, 0.2, "largest relative zoom per frame")
    accel: float = num(0.05, 0.0, 4.0, "largest acceleration, pixels per frame squared")
    layer_size: list = opt([0.2, 0.6], "[min, max] layer diameter as a share of the crop",
                           min=0.01, max=2.0)
    source_scale: list = opt([0.5, 2.0], "[min, max] photo pixels per output pixel",
                             min=0.05, max=16.0)
    edge_px: float = num(1.5, 0.1, 32.0, "width of the soft edge of a layer's mask, pixels")


@dataclass
class OptimSection:
    lr: float = num(2e-4, 1e-7, 0.1, "peak learning rate (Adam; the FLAVR paper's 2e-4)")
    beta1: float = num(0.9, 0.0, 0.99999, "Adam beta1")
    beta2: float = num(0.99, 0.0, 0.99999, "Adam beta2 (the FLAVR paper's 0.99)")
    eps: float = num(1e-8, 1e-12, 1e-2, "Adam epsilon")
    weight_decay: float = num(0.0, 0.0, 1.0, "L2 weight decay")
    warmup_steps: int = num(500, 0, 10**7, "linear warm-up steps before the cosine decay")
    final_lr_fraction: float = num(0.01, 0.0, 1.0, "learning rate at the last step, as a share "
                                   "of lr")
    grad_clip: float = num(0.0, 0.0, 1e6, "clip the global gradient norm to this (0: off)")
    rewarm_steps: int = num(200, 0, 10**6, "after a weights-only resume (fresh Adam moments), "
                            "ramp the learning rate up again over this many steps")


@dataclass
class TrainSection:
    device: str = choice("auto", ("auto", "cuda", "cpu"), "auto: CUDA when present")
    seed: int = num(0, 0, 2**31 - 1, "seed of weights, data and augmentation (each rank adds "
                    "its rank)")
    steps: int = num(60000, 1, 10**8, "optimizer steps of the whole schedule")
    batch_size: int = num(16, 1, 4096, "samples per step per process (GPU)")
    precision: str = choice("bf16", ("fp32", "tf32", "bf16"), "fp32 strict, TF32 matmuls and "
                            "convolutions, or bf16 autocast over fp32 master weights")
    channels_last: bool = opt(True, "weights and activations channels-last (NDHWC)")
    compile: bool = opt(True, "torch.compile the model (fuses element-wise kernels)")
    activation_checkpointing: bool = opt(False, "recompute each encoder/decoder stage in the "
                                         "backward pass instead of keeping its activations")
    log_every: int = num(20, 1, 10**6, "steps per train.csv row (and per stop/time check)")
    save_every: int = num(2000, 1, 10**8, "steps between checkpoints")
    max_minutes: float = num(0.0, 0.0, 10**6, "stop cleanly (and save) after this many minutes "
                             "of training (0: no limit)")


@dataclass
class ValSection:
    every: int = num(1000, 1, 10**8, "steps between validations (and one at the end)")
    windows_per_clip: int = num(12, 1, 10000, "evenly spaced windows per held-out clip")
    crop: int = num(0, 0, 8192, "centre crop for validation in pixels (0: whole frames)")
    batch_size: int = num(4, 1, 1024, "windows per validation forward pass")


@dataclass
class TrainConfig:
    name: str = opt("flavr-2x", "names the run")
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    synthetic: SyntheticSection = field(default_factory=SyntheticSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    val: ValSection = field(default_factory=ValSection)
    source: str | None = field(default=None, metadata={"internal": True})


# ---- loading ----------------------------------------------------------------------------------

def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {value}"
    if isinstance(value, (int, float, str)):
        return f"{type(value).__name__} {value!r}"
    return "a list" if isinstance(value, (list, tuple)) else "a mapping"


def _number(value, path: str, meta: dict, integer: bool):
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not float(value).is_integer()):
        raise ConfigError(path, f"must be {'an integer' if integer else 'a number'}, got {_kind(value)}")
    value = int(value) if integer else float(value)
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo:
        raise ConfigError(path, f"must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise ConfigError(path, f"must be <= {hi}, got {value}")
    return value


def _value(value, hint, path: str, meta: dict):
    if "choices" in meta:
        if value not in meta["choices"]:
            close = difflib.get_close_matches(str(value), [str(c) for c in meta["choices"]], n=1)
            tip = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(path, f"must be one of {', '.join(map(str, meta['choices']))}; "
                                    f"got {_kind(value)}{tip}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"must be true or false, got {_kind(value)}")
        return value
    if hint in (int, float):
        return _number(value, path, meta, hint is int)
    if hint is str:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(path, f"must be a non-empty string, got {_kind(value)}")
        return value
    if hint is list:
        if not isinstance(value, (list, tuple)) or (not value and not meta.get("empty_ok")):
            raise ConfigError(path, f"must be a {'' if meta.get('empty_ok') else 'non-empty '}list, "
                                    f"got {_kind(value)}")
        numeric = "min" in meta
        return [_number(v, f"{path}[{i}]", meta, False) if numeric else _value(v, str, f"{path}[{i}]", {})
                for i, v in enumerate(value)]
    raise TypeError(f"unsupported field type {hint!r} at {path}")  # a schema bug, not the user's


def _section(cls, data, path: str):
    if not isinstance(data, dict):
        raise ConfigError(path or "<config>", f"must be a mapping (key: value entries), got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            tip = f"did you mean '{close[0]}'?" if close else "valid keys: " + ", ".join(fields)
            raise ConfigError(f"{path}.{key}" if path else str(key), f"unknown key '{key}'; {tip}")
    values = {}
    for name, f in fields.items():
        sub = f"{path}.{name}" if path else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _section(hint, data.get(name, {}), sub)
        elif name in data:
            values[name] = _value(data[name], hint, sub, dict(f.metadata))
    return cls(**values)


def config_from_dict(data, source: str | None = None) -> TrainConfig:
    cfg = _section(TrainConfig, data if data is not None else {}, "")
    cfg.source = source
    _check_meaning(cfg)
    return cfg


def config_to_dict(cfg: TrainConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d.pop("source", None)
    return d


def _check_meaning(cfg: TrainConfig) -> None:
    """Rules that tie fields together (bounds of single fields are in the schema)."""
    s, d = cfg.synthetic, cfg.data
    if s.layers_min > s.layers_max:
        raise ConfigError("synthetic.layers_min", f"is {s.layers_min}, more than "
                                                  f"synthetic.layers_max ({s.layers_max})")
    for name in ("layer_size", "source_scale"):
        pair = getattr(s, name)
        if len(pair) != 2 or pair[0] > pair[1]:
            raise ConfigError(f"synthetic.{name}", f"must be [min, max] with min <= max, got {pair}")
    if len(d.photo_size) != 2 or any(not float(v).is_integer() for v in d.photo_size):
        raise ConfigError("data.photo_size", f"must be [height, width] in whole pixels, got {d.photo_size}")
    d.photo_size = [int(v) for v in d.photo_size]
    if min(d.photo_size) < d.crop:
        raise ConfigError("data.photo_size", f"{d.photo_size} is smaller than data.crop ({d.crop})")
    if d.crop % 8:
        raise ConfigError("data.crop", f"must be a multiple of 8 (the model's size step), got {d.crop}")
    if len(set(d.val_clips)) != len(d.val_clips):
        raise ConfigError("data.val_clips", f"names a clip twice: {d.val_clips}")
    if cfg.val.crop and cfg.val.crop % 8:
        raise ConfigError("val.crop", f"must be 0 or a multiple of 8, got {cfg.val.crop}")
    if cfg.optim.warmup_steps >= cfg.train.steps and cfg.train.steps > 1:
        raise ConfigError("optim.warmup_steps", f"{cfg.optim.warmup_steps} is not below "
                                                f"train.steps ({cfg.train.steps})")


def apply_overrides(data: dict, overrides) -> dict:
    """`FIELD=VALUE` assignments (VALUE read as YAML) applied to a raw config mapping, in place."""
    for text in overrides or ():
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--set", f"expected FIELD=VALUE, got '{text}'")
        parts = key.strip().split(".")
        node, schema = data, TrainConfig
        for i, part in enumerate(parts):
            names = {f.name: f for f in dataclasses.fields(schema) if not f.metadata.get("internal")}
            if part not in names:
                raise ConfigError(".".join(parts[:i + 1]), "--set: no such field")
            hint = typing.get_type_hints(schema)[part]
            if i == len(parts) - 1:
                if dataclasses.is_dataclass(hint):
                    raise ConfigError(key, "--set: is a section; set one of its fields")
                node[part] = yaml.safe_load(value)
            else:
                if not dataclasses.is_dataclass(hint):
                    raise ConfigError(".".join(parts[:i + 1]), "--set: not a section")
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(".".join(parts[:i + 1]), f"must be a mapping, got {_kind(node)}")
                schema = hint
    return data


def load_train_config(path=None, overrides=()) -> TrainConfig:
    """Read a YAML config (None: the defaults), apply `--set` overrides, validate the whole."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigFileError(path, None, f"cannot read: {e.strerror or e}") from None
        data = _parse_yaml(path, text) or {}
        if not isinstance(data, dict):
            raise ConfigError("<config>", f"must be a mapping, got {_kind(data)}")
    return config_from_dict(apply_overrides(data, overrides), source=None if path is None else str(path))


def describe(cfg: TrainConfig) -> str:
    """The resolved config as YAML (written into the output folder and printed with --dry-run)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
