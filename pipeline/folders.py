"""Folders a command makes for its output: checked before anything runs (ConfigError naming the
flag), made, and taken away again when the command ends having written nothing, so a failed or
interrupted command leaves no empty folder of its own behind."""
from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import ConfigError


def nearest_existing(path) -> Path:
    """`path` if it exists, else the nearest folder above it that does (as given: a relative
    path ends at '.')."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def is_within(path, folder) -> bool:
    """`path` is `folder` or lies inside it, links followed."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


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


def check_folder(flag: str, path: Path) -> None:
    """`path` is a folder, or can be made as one: no file in its place or above it, and the
    nearest folder that exists is writable."""
    if path.exists():
        if not path.is_dir():
            raise ConfigError(flag, f"'{path}' is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(flag, f"'{path}' is a folder this user cannot write in")
        return
    parent = nearest_existing(path.absolute().parent)
    if not parent.is_dir():
        raise ConfigError(flag, f"'{path}' cannot be made: '{parent}' is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(flag, f"'{path}' cannot be made: '{parent}' is a folder this user "
                                "cannot write in")


def make_folder(flag: str, path: Path) -> list[Path]:
    """Make `path` and any missing folders above it; the ones made, deepest first."""
    made = missing_folders(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        remove_empty(made)
        raise ConfigError(flag, f"'{path}' cannot be made: {exc.strerror or exc}") from None
    return made
