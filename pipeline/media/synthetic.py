"""Synthetic clips with known motion, for tests and benchmarks.

A scene is a smooth random texture (a sum of a few random sinusoids per colour channel, so it can
be evaluated at any real-valued position) panning at a sub-pixel speed, with textured foreground
discs moving across it at other sub-pixel speeds and passing over it (occlusion, anti-aliased
edges). Every frame is rendered analytically at its time t (in frame units), so the true
in-between frames at t = i + k/F can be rendered the same way and stored beside the clip for
quality checks:

    flavr-synthetic OUT.webm --width 128 --height 128 --frames 16 --fps 24 --codec vp9 \
        --seed 0 --truth-factor 4

writes OUT.webm and OUT.truth.npz with `frames` (N,H,W,3) uint8 RGB at t = j/F for
j = 0..(T-1)*F (j % F == 0 are the clip's own frames), `times` (N,) and `factor`.
Clips are tagged BT.709, limited range (see encode.py), which is what their pixels hold.
The command's size, length, rate, seed and truth factor are held to the bounds of the benchmark
config's `videos.synthetic` (pipeline/config/schema.py), and a bad one ends it with one line
naming the flag (exit 2), before anything is written.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from pipeline.media.truth import truth_path, write_truth_npz

CONTAINER = {"vp9": ".webm", "vp8": ".webm", "h264": ".mp4", "hevc": ".mp4", "av1": ".mp4"}


@dataclass(frozen=True)
class Layer:
    """A textured layer; a disc of `radius` centred at `centre` + t * `velocity` (pixels), or the
    whole frame when radius is 0 (the background)."""

    freqs: np.ndarray      # (C, K, 2) cycles per pixel (fx, fy)
    phases: np.ndarray     # (C, K)
    amps: np.ndarray       # (C, K)
    base: np.ndarray       # (C,)
    centre: tuple[float, float]
    velocity: tuple[float, float]
    radius: float = 0.0


def make_scene(width: int, height: int, frames: int, seed: int) -> list[Layer]:
    """Background plus two foreground discs whose paths cross the frame during the clip."""
    rng = np.random.default_rng(seed)

    def texture(k: int, min_wavelength: float, max_wavelength: float, contrast: float):
        wavelength = rng.uniform(min_wavelength, max_wavelength, size=(1, k))
        angle = rng.uniform(0, 2 * np.pi, size=(1, k))
        # shared spatial pattern across channels (like luminance) with per-channel amplitudes,
        # so colours vary but stay moderate: well inside the RGB cube under any YCbCr matrix.
        freqs = np.stack([np.cos(angle), np.sin(angle)], -1) / wavelength[..., None]
        freqs = np.repeat(freqs, 3, axis=0)
        phases = np.repeat(rng.uniform(0, 2 * np.pi, size=(1, k)), 3, axis=0)
        phases = phases + rng.normal(0, 0.6, size=(3, k))
        amps = rng.uniform(0.3, 1.0, size=(3, k))
        amps *= contrast / amps.sum(axis=1, keepdims=True)
        base = rng.uniform(0.35, 0.65, size=3)
        return freqs, phases, amps, base

    size = min(width, height)
    bg_v = rng.uniform(0.3, 1.2, 2) * rng.choice([-1, 1], 2)  # px / frame, sub-pixel fractions
    layers = [Layer(*texture(6, 6.0, max(12.0, size / 3), 0.28), centre=(0.0, 0.0),
                    velocity=tuple(bg_v))]
    for _ in range(2):
        radius = rng.uniform(0.14, 0.22) * size
        # start on one side and cross the frame: the disc passes over the background.
        direction = rng.choice([-1, 1])
        vx = direction * rng.uniform(0.6, 1.0) * width / max(frames - 1, 1) * 0.8
        vx = float(np.clip(vx, -3.7, 3.7)) + rng.uniform(-0.25, 0.25)
        vy = float(rng.uniform(-0.8, 0.8))
        cx = width / 2 - vx * (frames - 1) / 2 + rng.uniform(-0.1, 0.1) * width
        cy = rng.uniform(0.3, 0.7) * height
        layers.append(Layer(*texture(4, 4.0, max(8.0, radius), 0.3), centre=(cx, cy),
                            velocity=(vx, vy), radius=radius))
    return layers


def render(layers: list[Layer], t: float, width: int, height: int) -> np.ndarray:
    """RGB float32 (H, W, 3) in [0, 1] at time t (frame units), evaluated at pixel centres."""
    xs = np.arange(width, dtype=np.float64)
    ys = np.arange(height, dtype=np.float64)
    out = None
    for layer in layers:
        ox = layer.centre[0] + layer.velocity[0] * t
        oy = layer.centre[1] + layer.velocity[1] * t
        u, v = xs - ox, ys - oy  # texture coordinates move with the layer
        # sin(2pi(fx u + fy v) + p) = sin(2pi fx u) cos(2pi fy v + p) + cos(2pi fx u) sin(...):
        # each channel is one (H, 2K) @ (2K, W) product instead of K full-frame sines.
        ax = 2 * np.pi * layer.freqs[..., 0, None] * u                        # (C, K, W)
        ay = 2 * np.pi * layer.freqs[..., 1, None] * v + layer.phases[..., None]  # (C, K, H)
        amp = layer.amps[..., None]
        rows = np.concatenate([amp * np.cos(ay), amp * np.sin(ay)], axis=1)   # (C, 2K, H)
        cols = np.concatenate([np.sin(ax), np.cos(ax)], axis=1)               # (C, 2K, W)
        colour = layer.base[:, None, None] + np.einsum("ckh,ckw->chw", rows, cols)
        colour = colour.transpose(1, 2, 0)
        if layer.radius <= 0:
            out = colour
        else:
            dist = np.hypot(u[None, :], v[:, None])
            cover = np.clip(layer.radius - dist + 0.5, 0.0, 1.0)[..., None]  # ~1 px soft edge
            out = out * (1 - cover) + colour * cover
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def write_clip(out, width: int = 128, height: int = 128, frames: int = 16, fps: float = 24,
               codec: str = "vp9", seed: int = 0, truth_factor: int | None = None,
               crf: int | None = None) -> Path:
    """Render and encode one clip; with truth_factor F also write OUT.truth.npz (see module
    doc). Returns the clip path."""
    from pipeline.media.encode import VideoWriter

    out = Path(out)
    if frames < 1:
        raise ValueError("frames must be >= 1")
    if truth_factor is not None and truth_factor < 1:  # checked before the clip is written
        raise ValueError(f"truth_factor must be >= 1 (or None: no truth), got {truth_factor}")
    layers = make_scene(width, height, frames, seed)
    with VideoWriter(out, fps, width, height, codec=codec, crf=crf) as writer:
        for i in range(frames):
            writer.write(torch.from_numpy(render(layers, float(i), width, height)).permute(2, 0, 1))
    if truth_factor:
        f = int(truth_factor)
        times = np.arange((frames - 1) * f + 1) / f
        truth = np.stack([render(layers, float(t), width, height) for t in times])
        write_truth_npz(out, (truth * 255.0).round().astype(np.uint8), f)
    return out


def write_moving_fraction_clip(out, width: int, height: int, frames: int, fps: float, codec: str,
                               seed: int, fraction: float, truth_factor: int | None = None) -> Path:
    """A static-camera clip: `fraction` of the frame moves, the rest is still (0: all still).
    With truth_factor F also OUT.truth.npz, as write_clip."""
    from pipeline.media.moving_fraction import render_clip, write_lossy

    still = fraction == 0
    f = truth_factor or 1
    images, _ = render_clip(height, width, 1 if still else frames, 1.0 if still else fraction,
                            seed, None if still else truth_factor)
    if still:  # the moving scene's first frame, held: not a pixel changes
        images = np.repeat(images, (frames - 1) * f + 1, axis=0)
    write_lossy(out, images[::f], fps, codec=codec)
    if truth_factor:
        write_truth_npz(out, images, f)
    return Path(out)


def ensure_synthetic_set(root, count: int, width: int, height: int, frames: int, fps: float,
                         codec: str, seed: int, moving_fraction: float | None = None,
                         truth_factor: int | None = None) -> list[Path]:
    """`count` clips under root/<name derived from the parameters>/, written once and reused:
    a later call with the same parameters returns the cached files. moving_fraction: static-camera
    clips where that fraction of the frame moves (write_moving_fraction_clip); truth_factor: each
    clip with its true frames at t = i + k/F beside it (CLIP.truth.npz)."""
    ext = CONTAINER[codec]
    name = f"{codec}_{width}x{height}_{frames}f_{fps:g}fps_seed{seed}"
    if moving_fraction is not None:
        name += f"_moving{moving_fraction:g}"
    if truth_factor:
        name += f"_truth{truth_factor}"
    folder = Path(root) / name
    paths = [folder / f"clip{i:04d}{ext}" for i in range(count)]
    stamp = folder / "params.json"
    params = dict(width=width, height=height, frames=frames, fps=fps, codec=codec, seed=seed)
    if moving_fraction is not None:
        from pipeline.media.moving_fraction import SCENE_VERSION

        params.update(moving_fraction=moving_fraction, moving_scene=SCENE_VERSION)
    if truth_factor:
        params.update(truth_factor=truth_factor)

    def made(p: Path) -> bool:
        return (p.exists() and p.stat().st_size > 0
                and (not truth_factor or truth_path(p).exists()))

    if stamp.exists() and json.loads(stamp.read_text()) == params and all(map(made, paths)):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(paths):
        if not (made(p) and stamp.exists()):
            clip_args = dict(width=width, height=height, frames=frames, fps=fps, codec=codec,
                             seed=seed * 100003 + i, truth_factor=truth_factor)
            if moving_fraction is None:
                write = partial(write_clip, **clip_args)
            else:
                write = partial(write_moving_fraction_clip, fraction=moving_fraction, **clip_args)
            write_in_place(p, write, bool(truth_factor))
    stamp.write_text(json.dumps(params))
    return paths


def write_in_place(path: Path, write, with_truth: bool) -> Path:
    """`write(tmp)` under a temporary name beside `path`, then renamed into place: a cached set
    never holds half a clip, and an error (or Ctrl-C) leaves neither the clip nor its truth."""
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        truth_path(tmp).unlink(missing_ok=True)
        raise
    if with_truth:  # the truth first: a clip in place means its truth is too
        truth_path(tmp).replace(truth_path(path))
    tmp.replace(path)
    return path


def add_clip_flag(ap: argparse.ArgumentParser, name: str, default, help: str = "", **kwargs):
    """--NAME for field `name` of the benchmark config's videos.synthetic, held to that field's
    bounds (one rule for a clip made here and one a config asks for); the help shows them."""
    from pipeline.config.fields import entry, range_text, scalar_of, value_problem
    from pipeline.config.schema import SyntheticSpec  # not at import: decode workers import us

    field = entry(SyntheticSpec, name)
    spec, kind = field.spec, scalar_of(field.hint)

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {expected}, got '{text}'") from None
        problem = value_problem(value, spec)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = kind.__name__
    limits = f"[{range_text(spec, kind is int)}]"
    ap.add_argument("--" + name.replace("_", "-"), type=parse, default=default,
                    help=f"{help} {limits}" if help else limits, **kwargs)


def check_even_size(ap: argparse.ArgumentParser, width: int, height: int, hint: str = "") -> None:
    """The project's writer (encode.py) makes 4:2:0 video from 2x2 blocks of chroma, for every
    codec (though VP8 and VP9 themselves take odd sizes): an odd side is refused here, before
    anything is rendered. `hint`: where the command can write one instead."""
    for flag, value in (("--width", width), ("--height", height)):
        if value % 2:
            ap.error(f"{flag}: must be even (4:2:0 video{hint}); got {value}")


def report_write_error(target: Path, exc: Exception) -> int:
    """One line for an output that cannot be written (no such folder, no space, a name whose
    format FFmpeg cannot tell); the flags were checked before."""
    print(f"error: {target}: {exc}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    import av

    from pipeline.media.encode import CONTAINER_CODECS, pick_codec

    ap = argparse.ArgumentParser(prog="flavr-synthetic", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="output file (.webm, .mp4 or .mkv: one that holds --codec), or "
                                "a folder to write --count clips into")
    add_clip_flag(ap, "width", 128, "frame width, even")
    add_clip_flag(ap, "height", 128, "frame height, even")
    add_clip_flag(ap, "frames", 16, "frames in the clip")
    add_clip_flag(ap, "fps", 24.0, "frame rate written into the clip")
    ap.add_argument("--codec", default="vp9", choices=sorted(CONTAINER))
    add_clip_flag(ap, "seed", 0, "seed of the content")
    add_clip_flag(ap, "truth_factor", None, "also write the true frames at t = i + k/F to "
                                            "OUT.truth.npz (default: none)", metavar="F")
    add_clip_flag(ap, "count", 1, "clips to write when OUT is a folder")
    args = ap.parse_args(argv)
    check_even_size(ap, args.width, args.height)
    out = Path(args.out)
    if out.suffix and out.suffix.lower() not in CONTAINER_CODECS:
        # FFmpeg would write whatever container the extension names (VP9 in an .avi): only the
        # ones the project writes and reads back, as the help says.
        print(f"error: {out}: extension '{out.suffix}' is not a container flavr-synthetic "
              f"writes; use {', '.join(CONTAINER_CODECS)}", file=sys.stderr)
        return 2
    if out.suffix:
        targets = [out]
    else:
        targets = [out / f"clip{i:04d}{CONTAINER[args.codec]}" for i in range(args.count)]
    try:  # an encoder this PyAV build lacks, or a container that cannot hold the codec
        pick_codec(targets[0], args.codec)
    except ValueError as exc:
        ap.error(f"--codec: {exc}")
    for i, target in enumerate(targets):
        try:
            write_in_place(target, partial(
                write_clip, width=args.width, height=args.height, frames=args.frames,
                fps=args.fps, codec=args.codec, seed=args.seed + i,
                truth_factor=args.truth_factor), bool(args.truth_factor))
        except (OSError, ValueError, av.FFmpegError) as exc:
            return report_write_error(target, exc)
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
