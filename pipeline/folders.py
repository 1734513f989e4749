"""Folders a command makes for its output, and taking them away again when it ends having
written nothing: a failed or interrupted command leaves no empty folder of its own behind."""
from __future__ import annotations

from pathlib import Path


def missing_folders(path) -> list[Path]:
    """`path` and the folders above it that do not exist yet, deepest first: what
    `path.mkdir(parents=True)` would make."""
    return [p for p in (Path(path).absolute(), *Path(path).absolute().parents) if not p.exists()]


def remove_empty(folders: list[Path]) -> None:
    """Remove these folders, deepest first, while they are empty: a folder something was put in
    since stays, and so does every folder above it."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return
