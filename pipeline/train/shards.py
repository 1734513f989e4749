"""Sharded safetensors files: a dict of tensors written as prefix-KKKKK.safetensors of at most
15 MiB each (a tensor larger than a shard is cut along its first dimension into pieces named
`<name>@<i>/<k>` and joined again on load), and read back with every header checked: a file that
is missing, cut short or not safetensors raises CheckpointError naming it.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pipeline.errors import CheckpointError

SHARD_BYTES = 15 * 1024 * 1024
_HEADER_ROOM = 64 * 1024  # a shard's JSON header (names, shapes, metadata) fits in this

def _pieces(name: str, t: torch.Tensor, budget: int) -> list[tuple[str, torch.Tensor]]:
    nbytes = t.numel() * t.element_size()
    if nbytes <= budget or t.dim() == 0:
        return [(name, t)]
    k = -(-nbytes // budget)
    parts = torch.tensor_split(t, min(k, t.shape[0]), dim=0)
    if max(p.numel() * p.element_size() for p in parts) > budget:
        raise ValueError(f"{name}: a slice of its first dimension is larger than a shard")
    return [(f"{name}@{i}/{len(parts)}", p.contiguous()) for i, p in enumerate(parts)]


def save_sharded(tensors: dict[str, torch.Tensor], folder: Path, prefix: str,
                 metadata: dict[str, str], max_bytes: int = SHARD_BYTES) -> list[Path]:
    """Write `tensors` (CPU copies are made) as prefix-KKKKK.safetensors, each <= max_bytes."""
    budget = max_bytes - _HEADER_ROOM
    pieces = [piece for name, t in tensors.items()
              for piece in _pieces(name, t.detach().cpu().contiguous(), budget)]
    # First fit, largest first: as few shards as the sizes allow (fewer files to carry).
    pieces.sort(key=lambda kv: -kv[1].numel() * kv[1].element_size())
    shards: list[dict] = []
    room: list[int] = []
    for key, piece in pieces:
        size = piece.numel() * piece.element_size()
        k = next((i for i, r in enumerate(room) if r >= size), None)
        if k is None:
            shards.append({})
            room.append(budget)
            k = len(shards) - 1
        shards[k][key] = piece
        room[k] -= size
    paths = []
    for k, shard in enumerate(shards):
        path = folder / f"{prefix}-{k:05d}.safetensors"
        save_file(shard, str(path), metadata={**metadata, "shard": str(k), "shards": str(len(shards))})
        if path.stat().st_size > max_bytes:  # the header room was too small: never ship it
            raise RuntimeError(f"{path}: {path.stat().st_size} bytes, over {max_bytes}")
        paths.append(path)
    return paths


def _shard_paths(folder: Path, prefix: str) -> list[Path]:
    if Path(folder).is_file():  # one exported weights file: a set of a single shard
        return [Path(folder)]
    if not Path(folder).is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder or weights file")
    paths = sorted(Path(folder).glob(f"{prefix}-*.safetensors"))
    if not paths:
        raise CheckpointError(f"{folder}: no {prefix}-*.safetensors")
    return paths


def _unreadable(path: Path, exc: Exception) -> CheckpointError:
    lines = str(exc).strip().splitlines()
    why = f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__
    return CheckpointError(f"{path}: not a readable .safetensors file, damaged or cut short ({why})")


def read_metadata(path: Path) -> dict[str, str]:
    """One file's metadata; opening it checks its header against its size (a cut file fails)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # the library's own error type varies between versions
        raise _unreadable(path, exc) from None


def read_tensors(path: Path, device="cpu") -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device=str(device))
    except Exception as exc:  # as in read_metadata
        raise _unreadable(path, exc) from None


def header_shapes(paths: list[Path]) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from the shards' headers alone (pieces of one tensor joined)."""
    shapes: dict[str, list[int]] = {}
    for path in paths:
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    name, at, _ = key.partition("@")
                    shape = list(f.get_slice(key).get_shape())
                    if at and name in shapes:
                        shapes[name][0] += shape[0]
                    else:
                        shapes[name] = shape
        except Exception as exc:  # as in read_metadata
            raise _unreadable(path, exc) from None
    return {name: tuple(shape) for name, shape in shapes.items()}


def load_sharded_metadata(folder: Path, prefix: str) -> dict[str, str]:
    """The metadata of a sharded file set (step, factor, dtype, ...), without reading tensors."""
    return read_metadata(_shard_paths(folder, prefix)[0])


def complete_shards(folder: Path, prefix: str) -> tuple[list[Path], dict[str, str]]:
    """A set's shards, each one's header checked, and the first one's metadata; as many shards
    as that metadata says."""
    paths = _shard_paths(folder, prefix)
    metadata = [read_metadata(p) for p in paths]  # every header: a cut shard fails here
    expected = int(metadata[0].get("shards", len(paths)))
    if len(paths) != expected:
        raise CheckpointError(f"{folder}: {len(paths)} {prefix} shards, their metadata says {expected}")
    return paths, metadata[0]


def load_sharded(folder: Path, prefix: str, device="cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """All prefix-*.safetensors of a folder joined into one dict, and the first shard's metadata."""
    paths, metadata = complete_shards(folder, prefix)
    raw: dict[str, torch.Tensor] = {}
    for p in paths:
        raw.update(read_tensors(p, device))
    out, pieces = {}, {}
    for key, t in raw.items():
        name, at, part = key.partition("@")
        if at:
            i, k = map(int, part.split("/"))
            pieces.setdefault(name, [None] * k)[i] = t
        else:
            out[name] = t
    for name, parts in pieces.items():
        if any(p is None for p in parts):
            raise CheckpointError(f"{folder}: pieces of {name} are missing")
        out[name] = torch.cat(parts, dim=0)
    return out, metadata
