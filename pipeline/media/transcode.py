"""Re-encode a video the pipeline's decoders cannot read (e.g. MS-MPEG-4 or Cinepak in AVI, as in
Debian's opencv-doc samples) into H.264 they can, optionally resized: stream footage for
configs/streams-*.yaml (scripts/stream_clips.sh).

    python -m pipeline.media.transcode IN.avi OUT.mp4 [--size 720x1280] [--crf 12] [--fps F]

Any format FFmpeg reads goes in; frames are scaled (bicubic, by FFmpeg) and written through
encode.VideoWriter (BT.709 tags, 4:2:0), one at a time.
"""
from __future__ import annotations

import argparse
import sys
from typing import Iterator

import av
import torch

from pipeline.media.encode import VideoWriter


def target_format(container, size: tuple[int, int] | None = None, fps: float | None = None
                  ) -> tuple[float, int, int]:
    """(frame rate, height, width) to write an open container's video at: the source's (sides
    made even) unless given."""
    stream = container.streams.video[0]
    h, w = size or (stream.height - stream.height % 2, stream.width - stream.width % 2)
    return fps or float(stream.average_rate or stream.guessed_rate or 25), h, w


def rgb_frames(container, height: int, width: int) -> Iterator[torch.Tensor]:
    """The container's video frames, one at a time, as (3, H, W) float RGB in [0, 1] at the
    given size (bicubic, by FFmpeg)."""
    for frame in container.decode(container.streams.video[0]):
        rgb = frame.reformat(width=width, height=height, format="rgb24",
                             interpolation="BICUBIC").to_ndarray()
        yield torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)


def transcode(src, dst, size: tuple[int, int] | None = None, crf: int = 12,
              fps: float | None = None, codec: str = "h264") -> int:
    """Write `src` to `dst`; returns the frames written. size (H, W) must be even."""
    with av.open(str(src)) as container:
        rate, h, w = target_format(container, size, fps)
        with VideoWriter(dst, rate, w, h, codec=codec, crf=crf) as writer:
            for frame in rgb_frames(container, h, w):
                writer.write(frame)
            return writer.frames_written


def even_size(text: str | None, ap: argparse.ArgumentParser) -> tuple[int, int] | None:
    """--size HxW as (H, W), both even and at least 16 (4:2:0 video), or None when not given."""
    if not text:
        return None
    try:
        size = tuple(int(x) for x in text.lower().split("x"))
    except ValueError:
        size = ()
    if len(size) != 2 or size[0] % 2 or size[1] % 2 or min(size) < 16:
        ap.error("--size: HxW with even sides >= 16")
    return size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--size", default=None, help="HxW, even (default: the source's, made even)")
    ap.add_argument("--crf", type=int, default=12, help="quality, lower is better (12)")
    ap.add_argument("--fps", type=float, default=None, help="frame rate written (the source's)")
    args = ap.parse_args(argv)
    size = even_size(args.size, ap)
    n = transcode(args.src, args.dst, size, args.crf, args.fps)
    print(f"{args.dst}: {n} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
