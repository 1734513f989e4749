"""Files a config points to: its clips (paths and globs, or the generated synthetic set) and its
checkpoint. Relative paths are looked up next to the config file first, then in the working
directory, so a config folder can be moved as a whole."""
from __future__ import annotations

import glob
import itertools
import os
import re
from pathlib import Path

from models.registry import RANDOM_WEIGHTS, served_model
from pipeline.config.schema import Config
from pipeline.errors import ConfigError, VideoError
from pipeline.media.truth import is_truth_file

_GLOB_CHARS = re.compile(r"[*?\[]")
_REPO_ROOT = Path(__file__).resolve().parents[2]
# Clips in one run's video set: each is probed at start, and a set this large is a mistake
# (a glob that reaches far further than meant) more often than a plan.
MAX_CLIPS = 10_000


def _search_dirs(cfg: Config) -> list[Path]:
    """Relative paths are looked up next to the config file first, then in the working directory."""
    dirs = []
    if cfg.source is not None:
        dirs.append(Path(cfg.source).resolve().parent)
    cwd = Path.cwd()
    if cwd not in dirs:
        dirs.append(cwd)
    return dirs


def resolve_videos(cfg: Config, synthetic_root=None) -> list[Path]:
    """The clip files of the run, globs expanded in sorted order.

    For a synthetic set the clips are generated (once; cached) under synthetic_root, by default
    <repo>/videos/synthetic.
    """
    if cfg.videos.synthetic is not None:
        from pipeline.media.synthetic import (
            ensure_synthetic_set,  # imports torch: only when used
        )

        s = cfg.videos.synthetic
        root = Path(synthetic_root) if synthetic_root is not None else _REPO_ROOT / "videos" / "synthetic"
        try:
            made = ensure_synthetic_set(root, s.count, s.width, s.height, s.frames, s.fps,
                                        s.codec, s.seed, s.moving_fraction, s.truth_factor)
        except OSError as exc:  # a file where the folder should be, no permission, a full disk
            flag = " (--video-cache)" if synthetic_root is not None else ""
            raise VideoError(root, f"the synthetic clips cannot be written in this folder{flag}: "
                                   f"{exc.strerror or type(exc).__name__}") from None
        return [Path(p) for p in made]
    out: list[Path] = []
    for i, text in enumerate(cfg.videos.paths):
        fp = f"videos.paths[{i}]"
        pattern = os.path.expanduser(text)
        bases = [None] if os.path.isabs(pattern) else _search_dirs(cfg)
        if _GLOB_CHARS.search(pattern):
            for base in bases:
                full = pattern if base is None else str(base / pattern)
                # A clip's ground truth (CLIP.truth.<ext>) is never a request of its own.
                found = itertools.islice((m for m in glob.iglob(full, recursive=True)
                                          if os.path.isfile(m) and not is_truth_file(m)),
                                         MAX_CLIPS + 1)
                matches = sorted(Path(m).absolute() for m in found)
                if matches:
                    out += matches
                    break
            else:
                raise ConfigError(fp, f"'{text}' matches no files{_looked_in(bases)}")
            if len(out) > MAX_CLIPS:
                raise ConfigError(fp, f"the video set would hold more than {MAX_CLIPS} clips "
                                      f"with '{text}'; narrow the glob")
            continue
        for base in bases:
            candidate = Path(pattern) if base is None else base / pattern
            if candidate.is_file():
                out.append(candidate.absolute())
                break
            if candidate.is_dir():
                raise ConfigError(fp, f"'{text}' is a folder; give files or a glob such as '{text.rstrip('/')}/*.mp4'")
        else:
            raise ConfigError(fp, f"no such file '{text}'{_looked_in(bases)}")
    return out


def resolve_checkpoint(cfg: Config) -> Path | None:
    """The checkpoint file (relative paths as for videos), or None when the model runs untrained:
    no checkpoint named means the weights the project ships for the model (weights/), or random
    ones where it ships none; `random` asks for random weights."""
    text = cfg.model.checkpoint
    if text == RANDOM_WEIGHTS:
        return None
    if text is None:
        return served_model(cfg.model).shipped_weights()
    pattern = os.path.expanduser(text)
    bases = [None] if os.path.isabs(pattern) else _search_dirs(cfg)
    for base in bases:
        candidate = Path(pattern) if base is None else base / pattern
        if candidate.is_file():
            return candidate.absolute()
    raise ConfigError("model.checkpoint", f"no such file '{text}'{_looked_in(bases)}")


def _looked_in(bases) -> str:
    dirs = [str(b) for b in bases if b is not None]
    return f" (looked in {' and '.join(dirs)})" if dirs else ""
