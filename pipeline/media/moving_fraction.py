"""Clips in which a chosen fraction of the frame moves and the rest is exactly still.

The still part is a textured scene of synthetic.py frozen at t = 0; through one rectangle (the
asked fraction of the frame's area, with the frame's aspect ratio, at a seeded place) a second
scene is seen moving like a camera pan over detail: its texture pans 3 pixels per frame, with no
wavelength over 32 pixels, and discs cross it. So inside the rectangle every 8x8 block changes,
from frame to frame, by more than change-based inference's default threshold absorbs (a slow
sub-pixel pan of a smooth texture would leave most blocks under it, and "100% moving" would not
be). Frames are rounded to 8 bits once, so outside the rectangle every frame is bit-identical to
the first. Written losslessly (FFV1 holding RGB in .mkv) a decoded clip keeps exactly that;
through a lossy codec (H.264) the still part flickers by a few levels, which a change threshold
must absorb (`still_noise` measures by how much).

    python -m pipeline.media.moving_fraction OUT.mkv --fraction 0.1 --width 768 --height 576

`--truth-factor F` also writes the true frames at t = i + k/F beside the clip (OUT.truth.npz,
pipeline/media/truth.py). The benchmark and `interpolate` decode H.264, HEVC, VP8, VP9 and AV1
only, not FFV1: a clip for them is written as .mp4 (H.264, else VP9) or .webm (VP9); .mkv is for
measurements made here (read_frames, still_noise). Size, length, rate, seed and truth factor are
held to the benchmark config's `videos.synthetic` bounds, as in synthetic.py; a bad flag ends the
command with one line naming it (exit 2), before anything is written.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from pipeline.media.decode import resize
from pipeline.media.encode import VideoWriter, check_crf, pick_codec
from pipeline.media.synthetic import (
    add_clip_flag,
    check_even_size,
    make_scene,
    render,
    report_write_error,
    write_in_place,
)
from pipeline.media.truth import write_truth_npz

PAN_PX_PER_FRAME = 3.0  # the moving scene's pan: 72 px/s at 24 fps
MAX_WAVELENGTH_PX = 32.0  # its texture's coarsest detail
SCENE_VERSION = "pan3-wl32"  # names the moving scene in cached clips' parameters


@dataclass(frozen=True)
class Region:
    top: int
    left: int
    height: int
    width: int

    def mask(self, height: int, width: int) -> np.ndarray:
        m = np.zeros((height, width), dtype=bool)
        m[self.top:self.top + self.height, self.left:self.left + self.width] = True
        return m


def fraction_problem(fraction: float) -> str | None:
    """Why `fraction` cannot be the moving share of a frame (at least one pixel moves), or None."""
    if not 0 < fraction <= 1:  # also NaN
        return f"must be > 0 and <= 1; got {fraction:g}"
    return None


def _fraction(text: str) -> float:
    """argparse `type` of --fraction: the reason for a refusal, not argparse's bare 'invalid'."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    problem = fraction_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def moving_region(height: int, width: int, fraction: float, seed: int = 0) -> Region:
    """The rectangle closest in area to `fraction` of the frame, with the frame's aspect ratio."""
    problem = fraction_problem(fraction)
    if problem:
        raise ValueError(f"fraction {problem}")
    h = min(height, max(1, round(height * math.sqrt(fraction))))
    w = min(width, max(1, round(fraction * height * width / h)))
    rng = np.random.default_rng(seed)
    return Region(int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w)


def moving_scene(width: int, height: int, frames: int, seed: int) -> list:
    """synthetic.py's scene with its background panning PAN_PX_PER_FRAME pixels per frame (in its
    own direction) and its texture scaled so that no wavelength exceeds MAX_WAVELENGTH_PX."""
    background, *discs = make_scene(width, height, frames, seed)
    longest = float((1.0 / np.linalg.norm(background.freqs, axis=-1)).max())
    velocity = np.asarray(background.velocity)
    velocity = velocity / np.linalg.norm(velocity) * PAN_PX_PER_FRAME
    background = dataclasses.replace(
        background, freqs=background.freqs * max(1.0, longest / MAX_WAVELENGTH_PX),
        velocity=(float(velocity[0]), float(velocity[1])))
    return [background, *discs]


def render_clip(height: int, width: int, frames: int, fraction: float, seed: int = 0,
                truth_factor: int | None = None) -> tuple[np.ndarray, Region]:
    """(frames, H, W, 3) uint8 RGB with `fraction` of the frame moving, and where it moves. With
    truth_factor F the frames at t = j/F instead, j = 0 .. (frames-1)*F: the clip's true
    in-between frames, its own every F-th (the scene is rendered analytically at any t)."""
    if frames < 1 or height < 1 or width < 1:
        raise ValueError(f"need frames, height and width >= 1, got {frames}, {height}, {width}")
    if truth_factor is not None and truth_factor < 1:
        raise ValueError(f"truth_factor must be >= 1 (or None: no truth), got {truth_factor}")
    f = truth_factor or 1
    times = np.arange((frames - 1) * f + 1) / f
    region = moving_region(height, width, fraction, seed)
    still = render(make_scene(width, height, frames, seed), 0.0, width, height)
    moving = moving_scene(region.width, region.height, frames, seed + 1)
    out = np.empty((len(times), height, width, 3), dtype=np.uint8)
    still_u8 = (still * 255.0).round().astype(np.uint8)
    for j, t in enumerate(times):
        out[j] = still_u8
        window = render(moving, float(t), region.width, region.height)
        out[j, region.top:region.top + region.height, region.left:region.left + region.width] = (
            (window * 255.0).round().astype(np.uint8))
    return out, region


def write_lossless(path, frames: np.ndarray, fps: float = 25.0) -> Path:
    """(T, H, W, 3) uint8 RGB into FFV1 (8-bit RGB, lossless) in .mkv."""
    path = Path(path)
    if path.suffix.lower() != ".mkv":
        raise ValueError(f"path: a lossless FFV1 clip is written as .mkv, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        rate = Fraction(fps).limit_denominator(1001)
        stream = container.add_stream("ffv1", rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "bgr0"
        stream.codec_context.time_base = 1 / rate
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame = frame.reformat(format="bgr0")
            frame.pts, frame.time_base = i, stream.codec_context.time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_lossy(path, frames: np.ndarray, fps: float = 25.0, codec: str = "auto",
                crf: int | None = None) -> str:
    """(T, H, W, 3) uint8 RGB through the project's encoder (4:2:0, as cameras deliver); codec
    "auto" is H.264 where PyAV has an encoder for it, else VP9. Returns the codec used."""
    with VideoWriter(path, fps, frames.shape[2], frames.shape[1], codec=codec, crf=crf) as writer:
        writer.write(torch.from_numpy(frames).permute(0, 3, 1, 2))
    return writer.codec


def read_frames(path, start: int = 0, count: int | None = None,
                size: tuple[int, int] | None = None) -> torch.Tensor:
    """Frames start .. start+count-1 of any clip PyAV decodes, as (T, 3, H, W) float RGB in [0, 1]
    on the CPU, resized to size (H, W) if given (bilinear, antialiased)."""
    images = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= start:
                images.append(frame.to_ndarray(format="rgb24"))
            if count is not None and len(images) >= count:
                break
    if not images or (count is not None and len(images) < count):
        raise ValueError(f"{path}: has {len(images)} frames from frame {start}, {count} asked for")
    frames = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    return resize(frames, size)


def still_noise(frames: torch.Tensor, moving: np.ndarray, margin: int = 0) -> dict | None:
    """How far pixels that should be still drift from the first frame: (T, 3, H, W) frames and a
    (H, W) mask of the moving pixels -> the largest change of each still pixel (any channel)
    over the clip, as the maximum and percentiles over still pixels, in 8-bit levels. `margin`
    leaves out still pixels that lie near the motion (a codec spreads it over its blocks); None when
    no still pixel is left."""
    near = torch.from_numpy(moving)[None, None].float()
    if margin:
        near = torch.nn.functional.max_pool2d(near, 2 * margin + 1, stride=1, padding=margin)
    still = near[0, 0] == 0
    change = (frames - frames[:1]).abs().amax(dim=(0, 1))[still] * 255.0
    if change.numel() == 0:
        return None
    q = torch.quantile(change.double(), torch.tensor([0.5, 0.99, 0.999], dtype=torch.float64))
    return {"max": change.max().item(), "p50": q[0].item(), "p99": q[1].item(), "p999": q[2].item()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.media.moving_fraction",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output clip: .mp4 (H.264, else VP9) or .webm (VP9), which the "
                                "benchmark and interpolate read; or .mkv (lossless FFV1, any "
                                "size), which they do not")
    ap.add_argument("--fraction", type=_fraction, required=True,
                    help="share of the frame that moves [> 0 and <= 1]")
    add_clip_flag(ap, "width", 768, "frame width, even unless .mkv")
    add_clip_flag(ap, "height", 576, "frame height, even unless .mkv")
    add_clip_flag(ap, "frames", 32, "frames in the clip")
    add_clip_flag(ap, "fps", 25.0, "frame rate written into the clip")
    add_clip_flag(ap, "seed", 0, "seed of the content")
    ap.add_argument("--crf", type=int, default=None,
                    help="lossy quality, lower is better (H.264 0..51, VP9 0..63)")
    add_clip_flag(ap, "truth_factor", None, "also write the true frames at t = i + k/F to "
                                            "OUT.truth.npz (default: none)", metavar="F")
    args = ap.parse_args(argv)
    out = Path(args.out)
    lossless = out.suffix.lower() == ".mkv"  # FFV1 holds RGB: any size
    if not lossless:
        check_even_size(ap, args.width, args.height, "; a .mkv clip takes any size")
        try:  # the codec write_lossy will pick
            check_crf(pick_codec(out), args.crf)
        except ValueError as exc:
            ap.error(f"--crf: {exc}")
    frames, region = render_clip(args.height, args.width, args.frames, args.fraction, args.seed,
                                 args.truth_factor)

    def write(path: Path) -> None:
        clip = frames
        if args.truth_factor:
            write_truth_npz(path, frames, args.truth_factor)
            clip = frames[::args.truth_factor]
        if lossless:
            write_lossless(path, clip, args.fps)
        else:
            write_lossy(path, clip, args.fps, crf=args.crf)

    try:
        write_in_place(out, write, bool(args.truth_factor))
    except (OSError, ValueError, av.FFmpegError) as exc:
        return report_write_error(out, exc)
    print(f"{out}: {region.height}x{region.width} of {args.height}x{args.width} moving "
          f"({region.height * region.width / (args.height * args.width):.2%}) at "
          f"top {region.top}, left {region.left}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
