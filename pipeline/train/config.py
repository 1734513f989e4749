"""The training config, declared with the same `setting(...)` fields as the run config
(pipeline/config/schema.py), so defaults, loading, `--set` overrides, bounds and errors that name
the dotted field (`config field 'optim.lr': must be >= 1e-07 and <= 0.1; got 5.0`) follow from the
same generic code. Only rules that tie fields together are written here.

    cfg = load_train_config("configs/train/flavr-2x.yaml", ["optim.lr=1e-4", "train.steps=100"])
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from pipeline.config.convert import from_dict, mapping, to_dict
from pipeline.config.fields import setting
from pipeline.config.loading import read_yaml
from pipeline.config.overrides import assign
from pipeline.errors import ConfigError


@dataclass
class ModelSection:
    factor: int = setting(2, choices=(2, 4, 8), doc="frame-rate multiplier the model learns")


@dataclass
class DataSection:
    root: str = setting(
        ".traindata/dataset",
        min_len=1,
        doc="dataset folder holding manifest.json (made by "
        "scripts/fetch_training_data.sh); relative paths are from the working directory",
    )
    val_clips: list[str] = setting(
        factory=lambda: ["vtest.avi", "tree.avi"],
        min_len=1,
        max_items=1000,
        doc="real clips held out of training, by file name (validation runs on them; [] for none)",
    )
    crop: int = setting(256, ge=16, le=2048, doc="training crop size in pixels (square)")
    real_fraction: float = setting(
        0.3,
        ge=0.0,
        le=1.0,
        doc="share of samples cut from real clips; the rest are "
        "synthetic motion rendered from photos",
    )
    photo_size: tuple[int, int] = setting(
        (720, 1280),
        ge=16,
        le=4096,
        form="[height, width]",
        doc="every photo is resized and cropped to this on "
        "the device (portrait photos are turned first)",
    )
    max_photos: int = setting(0, ge=0, le=100000, doc="use at most this many photos (0: all)")
    hflip: float = setting(0.5, ge=0.0, le=1.0, doc="probability of a horizontal flip")
    vflip: float = setting(0.5, ge=0.0, le=1.0, doc="probability of a vertical flip")
    reverse: float = setting(0.5, ge=0.0, le=1.0, doc="probability of playing a sample backwards")


@dataclass
class SyntheticSection:
    layers_min: int = setting(2, ge=0, le=8, doc="fewest foreground layers over the background")
    layers_max: int = setting(4, ge=0, le=8, doc="most foreground layers")
    layer_speed: float = setting(
        6.0,
        ge=0.0,
        le=64.0,
        doc="largest layer speed, pixels per frame (of the sample's own frame rate)",
    )
    camera_speed: float = setting(
        3.0, ge=0.0, le=64.0, doc="largest camera pan speed, pixels per frame"
    )
    still_camera: float = setting(
        0.0, ge=0.0, le=1.0, doc="share of samples whose camera does not move (a fixed camera: "
        "only the layers move, the background is the same in every frame)"
    )
    noise: float = setting(
        0.0, ge=0.0, le=32.0, doc="largest sensor noise, 8-bit levels: each sample draws a "
        "standard deviation up to this, and every frame gets noise of its own"
    )
    sway: float = setting(
        0.0, ge=0.0, le=1.0, doc="share of samples whose background sways in place, bending "
        "smoothly and unevenly back and forth (foliage, water), not moving as one piece"
    )
    sway_px: float = setting(
        2.0, ge=0.0, le=16.0, doc="largest amplitude of the sway, pixels"
    )
    flutter: float = setting(
        0.0, ge=0.0, le=1.0, doc="share of samples whose background flutters: small "
        "displacements drawn afresh in every frame on a fine grid, strong in some places and "
        "absent in others (leaves in wind: motion that the frames before cannot predict)"
    )
    flutter_px: float = setting(
        1.0, ge=0.0, le=8.0, doc="largest displacement of the flutter, pixels"
    )
    rotation_deg: float = setting(1.0, ge=0.0, le=30.0, doc="largest rotation per frame, degrees")
    zoom: float = setting(0.01, ge=0.0, le=0.2, doc="largest relative zoom per frame")
    accel: float = setting(
        0.05, ge=0.0, le=4.0, doc="largest acceleration, pixels per frame squared"
    )
    layer_size: tuple[float, float] = setting(
        (0.2, 0.6), ge=0.01, le=2.0, form="[min, max]", doc="layer diameter as a share of the crop"
    )
    source_scale: tuple[float, float] = setting(
        (0.5, 2.0), ge=0.05, le=16.0, form="[min, max]", doc="photo pixels per output pixel"
    )
    edge_px: float = setting(
        1.5, ge=0.1, le=32.0, doc="width of the soft edge of a layer's mask, pixels"
    )


@dataclass
class OptimSection:
    loss: str = setting(
        "l1", choices=("l1", "l2"),
        doc="l1 (the FLAVR paper's; sharp) or l2 (hedges where motion is uncertain; PSNR's own)",
    )
    lr: float = setting(
        2e-4, ge=1e-7, le=0.1, doc="peak learning rate (Adam; the FLAVR paper's 2e-4)"
    )
    beta1: float = setting(0.9, ge=0.0, le=0.99999, doc="Adam beta1")
    beta2: float = setting(0.99, ge=0.0, le=0.99999, doc="Adam beta2 (the FLAVR paper's 0.99)")
    eps: float = setting(1e-8, ge=1e-12, le=1e-2, doc="Adam epsilon")
    weight_decay: float = setting(0.0, ge=0.0, le=1.0, doc="L2 weight decay")
    warmup_steps: int = setting(
        500, ge=0, le=10**7, doc="linear warm-up steps before the cosine decay"
    )
    final_lr_fraction: float = setting(
        0.01, ge=0.0, le=1.0, doc="learning rate at the last step, as a share of lr"
    )
    grad_clip: float = setting(
        0.0, ge=0.0, le=1e6, doc="clip the global gradient norm to this (0: off)"
    )
    ema: float = setting(
        0.0, ge=0.0, le=0.99999,
        doc="decay per step of a moving average of the weights (0: off; e.g. 0.999). When on, "
        "validation's model columns, the weights folder and export are the average's",
    )
    rewarm_steps: int = setting(
        200,
        ge=0,
        le=10**6,
        doc="after a weights-only resume (fresh Adam moments), "
        "ramp the learning rate up again over this many steps",
    )


@dataclass
class TrainSection:
    device: str = setting("auto", choices=("auto", "cuda", "cpu"), doc="auto: CUDA when present")
    seed: int = setting(
        0,
        ge=0,
        le=2**31 - 1,
        doc="seed of weights, data and augmentation (each rank adds its rank)",
    )
    steps: int = setting(60000, ge=1, le=10**8, doc="optimizer steps of the whole schedule")
    batch_size: int = setting(16, ge=1, le=4096, doc="samples per step per process (GPU)")
    precision: str = setting(
        "bf16",
        choices=("fp32", "tf32", "bf16"),
        doc="fp32 strict, TF32 matmuls and convolutions, or bf16 autocast over fp32 master weights",
    )
    channels_last: bool = setting(True, doc="weights and activations channels-last (NDHWC)")
    compile: bool = setting(True, doc="torch.compile the model (fuses element-wise kernels)")
    activation_checkpointing: bool = setting(
        False,
        doc="recompute each encoder/decoder stage in the "
        "backward pass instead of keeping its activations",
    )
    log_every: int = setting(
        20, ge=1, le=10**6, doc="steps per train.csv row (and per stop/time check)"
    )
    save_every: int = setting(2000, ge=1, le=10**8, doc="steps between checkpoints")
    max_minutes: float = setting(
        0.0,
        ge=0.0,
        le=10**6,
        doc="stop cleanly (and save) after this many minutes of training (0: no limit)",
    )


@dataclass
class ValSection:
    every: int = setting(1000, ge=1, le=10**8, doc="steps between validations (and one at the end)")
    windows_per_clip: int = setting(
        12, ge=1, le=10000, doc="evenly spaced windows per held-out clip"
    )
    crop: int = setting(
        0, ge=0, le=8192, doc="centre crop for validation in pixels (0: whole frames)"
    )
    batch_size: int = setting(4, ge=1, le=1024, doc="windows per validation forward pass")


@dataclass
class TrainConfig:
    name: str = setting("flavr-2x", doc="names the run", min_len=1, max_len=128)
    model: ModelSection = setting(factory=ModelSection, doc="what the model learns")
    data: DataSection = setting(factory=DataSection, doc="the training data and its augmentation")
    synthetic: SyntheticSection = setting(
        factory=SyntheticSection, doc="synthetic motion rendered from photos"
    )
    optim: OptimSection = setting(factory=OptimSection, doc="the optimizer and its schedule")
    train: TrainSection = setting(
        factory=TrainSection, doc="the run: steps, batch, precision and speed switches"
    )
    val: ValSection = setting(factory=ValSection, doc="validation on the held-out clips")
    source: str | None = setting(None, in_file=False, doc="the file it was loaded from")


# ---- loading ----------------------------------------------------------------------------------


def config_from_dict(data, source: str | None = None) -> TrainConfig:
    cfg = from_dict(TrainConfig, data if data is not None else {})
    cfg.source = source
    _check_meaning(cfg)
    return cfg


def config_to_dict(cfg: TrainConfig) -> dict:
    return to_dict(cfg)


def _check_meaning(cfg: TrainConfig) -> None:
    """Rules that tie fields together (bounds of single fields are in the schema)."""
    s, d = cfg.synthetic, cfg.data
    if s.layers_min > s.layers_max:
        raise ConfigError(
            "synthetic.layers_min",
            f"is {s.layers_min}, more than synthetic.layers_max ({s.layers_max})",
        )
    for name in ("layer_size", "source_scale"):
        lo, hi = getattr(s, name)
        if lo > hi:
            raise ConfigError(
                f"synthetic.{name}", f"must be [min, max] with min <= max, got [{lo}, {hi}]"
            )
    if min(d.photo_size) < d.crop:
        raise ConfigError(
            "data.photo_size", f"{list(d.photo_size)} is smaller than data.crop ({d.crop})"
        )
    if d.crop % 8:
        raise ConfigError(
            "data.crop", f"must be a multiple of 8 (the model's size step), got {d.crop}"
        )
    if len(set(d.val_clips)) != len(d.val_clips):
        raise ConfigError("data.val_clips", f"names a clip twice: {d.val_clips}")
    if cfg.val.crop and cfg.val.crop % 8:
        raise ConfigError("val.crop", f"must be 0 or a multiple of 8, got {cfg.val.crop}")
    if cfg.optim.warmup_steps >= cfg.train.steps and cfg.train.steps > 1:
        raise ConfigError(
            "optim.warmup_steps",
            f"{cfg.optim.warmup_steps} is not below train.steps ({cfg.train.steps})",
        )


def load_train_config(path=None, overrides=()) -> TrainConfig:
    """Read a YAML config (None: the defaults), apply `--set` overrides, validate the whole."""
    data = {} if path is None else (read_yaml(path) or {})
    # The overrides land on the whole config with every field explicit, checked again on loading.
    d = to_dict(from_dict(TrainConfig, mapping(data, "<config>")))
    return config_from_dict(assign(d, overrides), source=None if path is None else str(path))


def describe(cfg: TrainConfig) -> str:
    """The resolved config as YAML (written into the output folder and printed with --dry-run)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
