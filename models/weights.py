"""Weight files, read without running code from them.

Two formats:
  .safetensors  a JSON header and raw tensor bytes: nothing in it can execute. Preferred, and
                what `save_weights` writes for a path with that suffix.
  torch.save    a pickle. Read with torch.load(weights_only=True), whose restricted unpickler
                accepts tensors, containers and plain numbers only. A file that pickles anything
                else (a numpy scalar, a class, a payload) is refused unless the caller trusts it
                (--trust-checkpoint, model.trust_checkpoint: true): full unpickling can run any
                code the file carries.

Every failure is a one-line CheckpointError naming the file and the reason.
"""
from __future__ import annotations

import os
import pickle
import re
import struct
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pipeline.errors import CheckpointError

SAFETENSORS = ".safetensors"
TRUST_HINT = ("pass --trust-checkpoint (or set model.trust_checkpoint: true) only for a file "
              "from a source you trust, or re-save it as .safetensors")


@dataclass
class Loaded:
    """What a weight file holds: the object read and, for safetensors, its string metadata."""

    obj: object
    format: str  # "safetensors" or "torch"
    metadata: dict[str, str] = field(default_factory=dict)


def first_line(exc: BaseException) -> str:
    """An exception in one short line, its type first: for an error message naming a file."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _is_safetensors(head: bytes, size: int) -> bool:
    """An 8-byte little-endian header length, then a JSON object that fits in the file."""
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 8 + n <= size and head[8:9] == b"{"


def read_weights(path, trust: bool = False) -> Loaded:
    """Read a weight file on the CPU (never a GPU). `trust` allows full unpickling of a
    torch.save file that holds more than weights."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; a checkpoint is a weights file "
                              f"(.safetensors or .pth)")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes), not a checkpoint")
    if path.suffix == SAFETENSORS or _is_safetensors(head, size):
        return _read_safetensors(path)
    is_zip = head.startswith(b"PK\x03\x04")
    if not (is_zip or head.startswith(b"\x80")):  # torch.save: a zip, or (old) a bare pickle
        raise CheckpointError(f"{path}: not a checkpoint: neither a .safetensors file nor one "
                              "written by torch.save")
    return Loaded(_read_torch(path, trust, mmap=is_zip and zipfile.is_zipfile(path)), "torch")


def _read_safetensors(path: Path) -> Loaded:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # the library's own error type varies between versions
        raise CheckpointError(f"{path}: not a readable .safetensors file ({first_line(exc)})") from None
    return Loaded(state, "safetensors", dict(metadata))


def _read_torch(path: Path, trust: bool, mmap: bool):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on unusual pickle protocols
            # mmap: tensors are mapped, not read, so checking a large file costs little.
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        wanted = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if wanted is None:
            raise CheckpointError(f"{path}: damaged or not a checkpoint ({first_line(exc)})") from None
        if not trust:
            raise CheckpointError(
                f"{path}: holds pickled objects beyond weights (it asks for "
                f"{wanted.group(1)}), which only full unpickling can load, and that can run "
                f"code from the file; refused: {TRUST_HINT}") from None
    except Exception as exc:  # random bytes end in IndexError, KeyError, EOFError, ...
        raise CheckpointError(f"{path}: damaged or not a checkpoint ({first_line(exc)})") from None
    warnings.warn(f"{path}: trusted as asked: unpickling it in full, which runs any code it "
                  "carries", stacklevel=3)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: damaged or not a checkpoint ({first_line(exc)})") from None


def tensors_only(state: dict, name) -> dict[str, torch.Tensor]:
    """`state` itself, once every entry is checked to be a tensor."""
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{name}: entries that are not tensors: {bad[:5]}"
                              f"{' ...' if len(bad) > 5 else ''}")
    return state


def listing(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > n else ''})"


def check_fit(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], name,
              what: str) -> None:
    """Strict: the same keys as `expected` (a model's state dict, meta tensors are fine) and the
    same shapes; otherwise a CheckpointError listing what differs."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{name}: keys do not fit {what}: missing {listing(missing)}, "
                              f"unexpected {listing(unexpected)}")
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
             for k, v in state.items() if v.shape != expected[k].shape]
    if wrong:
        raise CheckpointError(f"{name}: tensor shapes do not fit {what}: {listing(wrong, 3)}")


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights on the CPU in the default layout: a file must not depend on the device or
    memory format it came from. Persistent buffers (batch-norm statistics) are included."""
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper holds the module here
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def save_weights(obj, path, metadata: dict[str, str] | None = None) -> Path:
    """Write `obj` (a dict of tensors for .safetensors; anything torch.save takes otherwise)
    under a temporary name, then rename: never a half-written file under the real name."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == SAFETENSORS:
        save_file(tensors_only(obj, path), str(tmp), metadata=metadata)
    else:
        torch.save(obj, tmp)
    os.replace(tmp, path)
    return path
