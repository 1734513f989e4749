"""Training and validation data, held on the training device.

Everything is read once at start-up: the real clips' frames and the photos go to the device as
uint8 (a few GB at most), and every batch is cut and rendered there. A batch mixes windows of real
clips (random crop) and synthetic motion from the photos (pipeline/train/render.py), then flips
and time reversal are applied to the whole window, inputs and targets together.

A window is 3*factor+1 consecutive frames: inputs at 0, f, 2f, 3f and targets f+1 .. 2f-1, the
frames between the second and third input (2x: inputs 1, 3, 5, 7 and target 4 of a septuplet, as
in the FLAVR paper). No window crosses a shot cut, and held-out clips never give training windows.

The sampler's state is two generators and a batch count: a checkpoint restores it exactly.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from models.weights import first_line
from pipeline.errors import ConfigError
from pipeline.train.config import TrainConfig
from pipeline.train.media import read_photo, read_video
from pipeline.train.render import render_batch

CUT_RATIO = 6.0      # a frame change this many times the clip's median change is a shot cut,
CUT_MIN_LEVEL = 10.0  # and at least this mean absolute change in 8-bit levels


def window_length(factor: int) -> int:
    return 3 * factor + 1


def split_window(x: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, 3f+1, H, W) -> inputs (B, 3, 4, H, W), targets (B, f-1, 3, H, W) (the model's
    output layout)."""
    f = factor
    inputs = x[:, :, 0:3 * f + 1:f]
    targets = x[:, :, f + 1:2 * f].transpose(1, 2)
    return inputs.contiguous(), targets.contiguous()


def shot_cuts(frames: torch.Tensor, chunk: int = 32) -> list[int]:
    """Indices i where frames i and i+1 belong to different shots; frames (T, H, W, 3) uint8."""
    if frames.shape[0] < 2:
        return []
    diffs = []
    for s in range(0, frames.shape[0] - 1, chunk):
        a = frames[s:s + chunk + 1].float()
        diffs.append((a[1:] - a[:-1]).abs().mean(dim=(1, 2, 3)))
    diff = torch.cat(diffs).cpu()
    limit = max(CUT_RATIO * float(diff.median()), CUT_MIN_LEVEL)
    return [int(i) for i in torch.nonzero(diff > limit).flatten()]


def window_starts(n_frames: int, length: int, cuts: list[int]) -> list[int]:
    """First frames of windows of `length` that lie inside one shot."""
    starts = []
    for s in range(0, n_frames - length + 1):
        if not any(s <= c < s + length - 1 for c in cuts):
            starts.append(s)
    return starts


def read_manifest(root: Path) -> dict:
    path = root / "manifest.json"
    if not path.is_file():
        raise ConfigError("data.root", f"no manifest.json in {root} (make the dataset with "
                                       "scripts/fetch_training_data.sh and unpack its parts there)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError("data.root", f"{path}: not readable JSON ({exc})") from None
    _check_manifest(path, manifest)
    return manifest


def _check_manifest(path: Path, manifest) -> None:
    """The shape the loaders rely on: {"items": [{"kind": "video"|"photo", "file": ...,
    "split": ... (videos)}, ...]}."""
    items = manifest.get("items") if isinstance(manifest, dict) else None
    if not isinstance(items, list):
        raise ConfigError("data.root", f"{path}: no list of 'items'; not a dataset manifest")
    for i, e in enumerate(items):
        needs = ("kind", "file", "split") if isinstance(e, dict) and e.get("kind") == "video" \
            else ("kind", "file")
        if not isinstance(e, dict) or e.get("kind") not in ("video", "photo") \
                or not all(isinstance(e.get(key), str) for key in needs):
            raise ConfigError("data.root", f"{path}: items[{i}] is not a video or photo entry "
                                           f"(kind 'video' or 'photo', file, and a video's split)")


def _decoded(path: Path, read):
    """read(path), or a ConfigError naming the file it could not decode."""
    try:
        return read(path)
    except Exception as exc:  # each decoder raises its own types
        raise ConfigError("data.root", f"{path}: cannot be decoded ({first_line(exc)})") from None


def check_dataset(cfg: TrainConfig) -> None:
    """Raise ConfigError for a dataset the run cannot use (no manifest, a held-out clip it does
    not hold) before any clip or photo is read: that takes seconds to minutes."""
    _val_entries(cfg, read_manifest(Path(cfg.data.root)))


def _val_entries(cfg: TrainConfig, manifest: dict) -> list[dict]:
    """The manifest's entries of data.val_clips, in their order."""
    by_name = {Path(e["file"]).name: e for e in manifest["items"] if e["kind"] == "video"}
    for i, name in enumerate(cfg.data.val_clips):
        if name not in by_name:
            raise ConfigError(f"data.val_clips[{i}]", f"'{name}' is not a video of the dataset "
                                                      f"({', '.join(sorted(by_name))})")
    return [by_name[name] for name in cfg.data.val_clips]


def to_canvas(rgb: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, height, width) uint8: portrait turned to landscape, scaled to cover
    the canvas (antialiased), centre-cropped."""
    if (rgb.shape[0] > rgb.shape[1]) != (height > width):
        rgb = rgb.transpose(0, 1)
    x = rgb.permute(2, 0, 1)[None].float()
    h, w = x.shape[-2:]
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - height) // 2, (nw - width) // 2
    return x[0, :, top:top + height, left:left + width].round().clamp(0, 255).to(torch.uint8)


@dataclass
class Clip:
    name: str
    frames: torch.Tensor  # (T, H, W, 3) uint8 on the device
    starts: list[int]     # window starts inside one shot


def load_clip(root: Path, entry: dict, device, length: int) -> Clip:
    frames = torch.from_numpy(_decoded(root / entry["file"], read_video)).to(device)
    if entry.get("frames") and frames.shape[0] != entry["frames"]:
        warnings.warn(f"{entry['file']}: decoded {frames.shape[0]} frames, the manifest says "
                      f"{entry['frames']} (another decoder); using what was decoded")
    return Clip(Path(entry["file"]).name, frames,
                window_starts(frames.shape[0], length, shot_cuts(frames)))


class TrainData:
    """Batches of (inputs, targets) cut and rendered on `device`."""

    def __init__(self, cfg: TrainConfig, device, seed: int, log=print):
        self.cfg, self.device = cfg, torch.device(device)
        self.factor, self.length = cfg.model.factor, window_length(cfg.model.factor)
        root = Path(cfg.data.root)
        manifest = read_manifest(root)
        held_out = set(cfg.data.val_clips) | set(manifest.get("val_clips", []))
        crop = cfg.data.crop
        self.clips: list[Clip] = []
        for e in manifest["items"]:
            if e["kind"] != "video" or Path(e["file"]).name in held_out or e["split"] != "train":
                continue
            clip = load_clip(root, e, self.device, self.length)
            if min(clip.frames.shape[1:3]) < crop:
                log(f"data: {clip.name} ({clip.frames.shape[2]}x{clip.frames.shape[1]}) is smaller "
                    f"than the {crop}px crop; not used for training")
                continue
            self.clips.append(clip)
        # One entry per (clip, start): every window equally likely.
        self.windows = [(c, s) for c, clip in enumerate(self.clips) for s in clip.starts]
        photos = [e for e in manifest["items"] if e["kind"] == "photo"]
        if cfg.data.max_photos:
            photos = photos[:cfg.data.max_photos]
        missing = [e["file"] for e in photos if not (root / e["file"]).is_file()]
        if missing:  # a part not unpacked: say how much is missing, train on the rest
            warnings.warn(f"data: {len(missing)} of {len(photos)} photos are missing under {root} "
                          f"(first: {missing[0]}); is every part-K.tar unpacked?")
            photos = [e for e in photos if e["file"] not in missing]
        ph, pw = cfg.data.photo_size
        self.photos = torch.stack([
            to_canvas(torch.from_numpy(_decoded(root / e["file"], read_photo)).to(self.device),
                      ph, pw) for e in photos]) if photos else None
        if self.photos is None and not self.windows:
            raise ConfigError("data.root", f"{root}: no photos and no training windows to sample")
        self.real_fraction = cfg.data.real_fraction if self.windows else 0.0
        if self.photos is None:
            self.real_fraction = 1.0
        if cfg.data.real_fraction > 0 and not self.windows:
            log("data: no real training windows; every sample is synthetic")
        self.cpu_gen = torch.Generator()
        self.dev_gen = torch.Generator(device=self.device)
        self.reseed(seed)
        frames = sum(c.frames.shape[0] for c in self.clips)
        held = sum(c.frames.numel() for c in self.clips) + (0 if self.photos is None else self.photos.numel())
        log(f"data: {len(self.clips)} training clips ({frames} frames, {len(self.windows)} windows), "
            f"{0 if self.photos is None else len(self.photos)} photos, {held / 2**30:.2f} GiB on "
            f"{self.device}; real share {self.real_fraction:.2f}")

    def _real(self, n: int) -> torch.Tensor:
        crop, out = self.cfg.data.crop, []
        picks = torch.randint(len(self.windows), (n,), generator=self.cpu_gen).tolist()
        for k in picks:
            clip, s = self.windows[k]
            _, h, w, _ = self.clips[clip].frames.shape
            y = int(torch.randint(h - crop + 1, (1,), generator=self.cpu_gen))
            x = int(torch.randint(w - crop + 1, (1,), generator=self.cpu_gen))
            out.append(self.clips[clip].frames[s:s + self.length, y:y + crop, x:x + crop])
        return torch.stack(out).permute(0, 4, 1, 2, 3).float().div_(255)  # (n, 3, T, H, W)

    def next_batch(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs (B, 3, 4, crop, crop) and targets (B, f-1, 3, crop, crop), float32 in [0, 1]."""
        n_real = int((torch.rand(batch, generator=self.cpu_gen) < self.real_fraction).sum())
        parts = []
        if n_real:
            parts.append(self._real(n_real))
        if batch - n_real:
            parts.append(render_batch(self.photos, batch - n_real, self.length, self.cfg.data.crop,
                                      self.cfg.synthetic, self.dev_gen))
        x = torch.cat(parts) if len(parts) > 1 else parts[0]
        x = self._augment(x)
        self.batches += 1
        return split_window(x, self.factor)

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        d = self.cfg.data
        b = x.shape[0]
        for p, dim in ((d.hflip, 4), (d.vflip, 3), (d.reverse, 2)):
            if p > 0:
                flip = (torch.rand(b, generator=self.dev_gen, device=self.device) < p).view(b, 1, 1, 1, 1)
                x = torch.where(flip, x.flip(dim), x)
        return x

    def reseed(self, seed: int) -> None:
        self.cpu_gen.manual_seed(seed)
        self.dev_gen.manual_seed(seed + 7919)
        self.batches = 0

    def state_dict(self) -> dict:
        return {"cpu_gen": self.cpu_gen.get_state(), "dev_gen": self.dev_gen.get_state(),
                "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        self.cpu_gen.set_state(state["cpu_gen"].cpu())
        self.dev_gen.set_state(state["dev_gen"].cpu())
        self.batches = int(state["batches"])


class ValData:
    """Evenly spaced windows of the held-out clips (optionally centre-cropped), per clip."""

    def __init__(self, cfg: TrainConfig, device, log=print):
        root = Path(cfg.data.root)
        manifest = read_manifest(root)
        length = window_length(cfg.model.factor)
        self.clips: list[Clip] = []
        for name, entry in zip(cfg.data.val_clips, _val_entries(cfg, manifest)):
            clip = load_clip(root, entry, device, length)
            starts = clip.starts
            if not starts:
                log(f"val: {name} has no window of {length} frames inside one shot; skipped")
                continue
            k = min(cfg.val.windows_per_clip, len(starts))
            chosen = [starts[round(j * (len(starts) - 1) / max(k - 1, 1))] for j in range(k)]
            self.clips.append(Clip(name, clip.frames, sorted(set(chosen))))
        self.crop, self.length, self.factor = cfg.val.crop, length, cfg.model.factor

    def batches(self, clip: Clip, batch: int):
        """(inputs, targets) of the clip's chosen windows, `batch` windows at a time."""
        _, h, w, _ = clip.frames.shape
        c = self.crop
        top, left = ((h - c) // 2, (w - c) // 2) if c and c <= min(h, w) else (0, 0)
        hh, ww = (c, c) if c and c <= min(h, w) else (h, w)
        for i in range(0, len(clip.starts), batch):
            x = torch.stack([clip.frames[s:s + self.length, top:top + hh, left:left + ww]
                             for s in clip.starts[i:i + batch]])
            yield split_window(x.permute(0, 4, 1, 2, 3).float().div_(255), self.factor)
