"""What `benchmark.py --model-only` refuses before it measures anything: a device this machine
lacks, counts out of range, and output files it could not write. Each refusal is a ConfigError
naming the flag, so the command prints one line and exits 2 instead of failing minutes later
(and losing the measurement) or ending with a traceback."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from pipeline.errors import ConfigError
from pipeline.folders import nearest_existing

DEVICE_FORMS = "auto, cpu, cuda or cuda:N"


def check_device(name: str) -> torch.device:
    """The device `--device name` means on this machine; ConfigError when there is none."""
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):  # torch's own message lists every backend it knows
        raise ConfigError("--device", f"{name!r} is not a device; give {DEVICE_FORMS}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigError("--device", f"{name!r}: only {DEVICE_FORMS} are supported")
    if not torch.cuda.is_available():
        raise ConfigError("--device", f"{name}: no CUDA GPU is visible to torch "
                                      "(--device cpu measures on the CPU)")
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device.index >= torch.cuda.device_count():
        raise ConfigError("--device", f"{name}: this machine has only "
                                      f"{torch.cuda.device_count()} GPU(s)")
    return device


# flag -> (attribute, smallest value); None values are the flag's default, left alone
_AT_LEAST = {"--iters": ("iters", 1), "--warmup": ("warmup", 0),
             "--stage-iters": ("stage_iters", 0), "--ceiling-n": ("ceiling_n", 1),
             "--profile-iters": ("profile_iters", 1), "--profile-batch": ("profile_batch", 1)}


def check_counts(args) -> None:
    for flag, (attr, least) in _AT_LEAST.items():
        value = getattr(args, attr)
        if value is not None and value < least:
            raise ConfigError(flag, f"must be >= {least}, got {value}")


def check_output(flag: str, path: Path | None) -> None:
    """ConfigError unless a file could be written at `path` (its folder made as needed): checked
    by writing a probe file into the nearest folder that exists, removed at once."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise ConfigError(flag, f"{path} is a folder; give a file name")
    folder = nearest_existing(path.parent)
    if not folder.is_dir():
        raise ConfigError(flag, f"{path}: {folder} is not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(flag, f"{path}: cannot write in {folder}: "
                                f"{exc.strerror or type(exc).__name__}") from None


def check_outputs(args) -> None:
    for flag, attr in (("--out", "out"), ("--markdown", "markdown"), ("--profile", "profile")):
        check_output(flag, getattr(args, attr))
