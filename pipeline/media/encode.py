"""Write frames to a video file with PyAV, one frame at a time (bounded memory).

Frames come in as float tensors in [0, 1] (any device). This is the one place where they become
8-bit: they are clamped, converted to YCbCr 4:2:0 in float (BT.709 matrix, limited "tv" range,
2x2 box-averaged chroma sited at the centre of each 2x2 block) and rounded once, then handed to
the encoder with the matching colour tags (colorspace, range, primaries, transfer) so any reader,
our decoder included, knows how to turn them back into RGB.

Codec "auto" is H.264 (libx264) where the PyAV build has that encoder and the container can hold
it, otherwise VP9 (libvpx-vp9). `writer.codec` says which was used.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from pipeline.media.probe import AV_COLORSPACE_OF, AV_RANGE_PC, AV_RANGE_TV, Colour

# Our codec names -> PyAV encoder names, in order of preference.
ENCODERS = {
    "h264": ("libx264",),
    "hevc": ("libx265",),
    "vp9": ("libvpx-vp9",),
    "vp8": ("libvpx",),
    "av1": ("libsvtav1", "libaom-av1"),
}
# The containers the project writes, and the codecs each can hold (FFmpeg's MP4 muxer takes no
# VP8, WebM only the open codecs). Other extensions are left to FFmpeg.
CONTAINER_CODECS = {
    ".mp4": {"h264", "hevc", "vp9", "av1"},
    ".mkv": set(ENCODERS),
    ".webm": {"vp8", "vp9", "av1"},
}
# The crf each encoder accepts (libvpx's VP8 refuses below its minimum quantiser, 4; x264 would
# clamp above 51 where x265 fails).
CRF_RANGE = {"h264": (0, 51), "hevc": (0, 51), "vp8": (4, 63), "vp9": (0, 63), "av1": (0, 63)}


def encoder_available(codec: str) -> str | None:
    """The PyAV encoder name for `codec` if this build has one, else None."""
    for name in ENCODERS.get(codec, ()):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - UnknownCodecError and friends
            continue
    return None


def pick_codec(path, codec: str = "auto") -> str:
    """Resolve "auto" to h264 (if an encoder exists and the container takes it) or vp9."""
    suffix = Path(path).suffix.lower()
    holds = CONTAINER_CODECS.get(suffix, set(ENCODERS))
    if codec == "auto":
        if "h264" in holds and encoder_available("h264"):
            return "h264"
        return "vp9"
    if codec not in ENCODERS:
        raise ValueError(f"unknown codec '{codec}' (choose from auto, {', '.join(ENCODERS)})")
    if encoder_available(codec) is None:
        raise ValueError(f"this PyAV build has no encoder for {codec}")
    if codec not in holds:
        fits = [ext for ext, codecs in CONTAINER_CODECS.items() if codec in codecs]
        raise ValueError(f"a {suffix} file cannot hold {codec}; use {' or '.join(fits)}")
    return codec


def check_crf(codec: str, crf: int | None) -> None:
    """ValueError unless `crf` (None: the writer's default) is one `codec`'s encoder takes."""
    if crf is None:
        return
    lo, hi = CRF_RANGE[codec]
    if not lo <= crf <= hi:
        raise ValueError(f"crf {crf} is outside {codec}'s range {lo}..{hi}")


def as_fraction(fps) -> Fraction:
    """Frame rate as an exact fraction: 30 -> 30, 29.97 -> 30000/1001, Fraction kept as is."""
    if isinstance(fps, Fraction):
        return fps
    f = Fraction(fps).limit_denominator(1001)
    if f <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return f


def rgb_to_yuv420(frames, colour: Colour):
    """(T,3,H,W) float in [0,1] -> uint8 planes Y (T,H,W), U and V (T,H/2,W/2); H, W even.

    Takes a torch tensor (computed where it lives: on the GPU, only the small uint8 planes travel
    to the host) or a numpy array. CPU frames go through numpy on purpose: torch's CPU thread pool
    keeps spinning after each op and starves the encoder's own threads on small machines."""
    x = frames.clip(0.0, 1.0)
    kr, kb = colour.kr_kb
    kg = 1.0 - kr - kb
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    y = kr * r + kg * g + kb * b
    cb = (b - y) * (0.5 / (1.0 - kb))
    cr = (r - y) * (0.5 / (1.0 - kr))

    # Chroma at 4:2:0: the mean of each 2x2 block, i.e. chroma sited at the block centre, which
    # is where the decoder's bilinear upsampling (decode.py) puts it back.
    def pool(c):
        return (c[:, 0::2, 0::2] + c[:, 1::2, 0::2] + c[:, 0::2, 1::2] + c[:, 1::2, 1::2]) * 0.25

    if colour.full_range:
        ys, yo, cs, ylo, yhi, clo, chi = 255.0, 0.0, 255.0, 0, 255, 0, 255
    else:
        ys, yo, cs, ylo, yhi, clo, chi = 219.0, 16.0, 224.0, 16, 235, 16, 240
    planes = ((y * ys + yo).round().clip(ylo, yhi),
              (pool(cb) * cs + 128.0).round().clip(clo, chi),
              (pool(cr) * cs + 128.0).round().clip(clo, chi))
    if isinstance(frames, torch.Tensor):
        return tuple(p.to(torch.uint8) for p in planes)
    return tuple(p.astype(np.uint8) for p in planes)


class VideoWriter:
    """`with VideoWriter(path, fps, width, height) as w: w.write(frames)`.

    frames: (3,H,W) or (T,3,H,W) float in [0,1] on any device, or a list of (3,H,W) frames. Each
    call converts and encodes at once, so memory stays bounded by one call's frames. `crf` trades size for quality (lower is
    better; default near-transparent). Width and height must be even (4:2:0 chroma)."""

    def __init__(self, path, fps, width: int, height: int, codec: str = "auto",
                 crf: int | None = None, colour: Colour = Colour("bt709", False)):
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"frame size must be positive and even for 4:2:0 video, "
                             f"got {width}x{height}")
        self.path = Path(path)
        self.codec = pick_codec(self.path, codec)
        check_crf(self.codec, crf)
        self.encoder = encoder_available(self.codec)
        self.rate = as_fraction(fps)
        self.width, self.height = int(width), int(height)
        self.colour = colour
        self.frames_written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        try:
            self._stream = self._open_stream(crf)
        except Exception:
            self._container.close()
            raise

    def _open_stream(self, crf):
        stream = self._container.add_stream(self.encoder, rate=self.rate)
        stream.width, stream.height = self.width, self.height
        stream.pix_fmt = "yuv420p"
        ctx = stream.codec_context
        ctx.time_base = 1 / self.rate
        ctx.colorspace = AV_COLORSPACE_OF[self.colour.matrix]
        ctx.color_range = AV_RANGE_PC if self.colour.full_range else AV_RANGE_TV
        if self.colour.matrix == "bt709":
            ctx.color_primaries = 1  # BT.709
            ctx.color_trc = 1
        opts = {}
        if self.codec in ("h264", "hevc"):
            opts = {"crf": str(16 if crf is None else crf), "preset": "veryfast"}
            if self.codec == "hevc":
                opts["x265-params"] = "log-level=error"
        elif self.codec in ("vp9", "vp8"):
            # constant-quality mode, realtime speed settings: clips here are short and small.
            opts = {"crf": str(12 if crf is None else crf), "deadline": "realtime",
                    "lag-in-frames": "0"}
            if self.codec == "vp9":
                opts.update({"b": "0", "cpu-used": "8", "row-mt": "1"})
            else:  # libvpx (VP8) takes crf only with a bitrate cap
                opts.update({"b": "20M", "cpu-used": "16"})
        elif self.codec == "av1":  # for test clips: fast presets, near-transparent quality
            speed = {"preset": "12"} if self.encoder == "libsvtav1" else {"cpu-used": "8"}
            # SVT-AV1 prints its whole configuration to stderr unless its log level (an
            # environment variable it reads when an encoder opens) asks for errors only.
            os.environ.setdefault("SVT_LOG", "1")
            opts = {"crf": str(16 if crf is None else crf), **speed}
        stream.options = opts
        return stream

    def write(self, frames) -> None:
        if isinstance(frames, (list, tuple)):
            frames = torch.stack(list(frames))
        if frames.dim() == 3:
            frames = frames[None]
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"expected (T,3,H,W) or (3,H,W) frames, got {tuple(frames.shape)}")
        if tuple(frames.shape[2:]) != (self.height, self.width):
            raise ValueError(f"frames are {frames.shape[3]}x{frames.shape[2]}, the video is "
                             f"{self.width}x{self.height}")
        frames = frames.detach()
        if frames.dtype == torch.uint8:
            frames = frames.float() / 255.0
        if frames.device.type == "cpu":
            frames = frames.float().numpy()
        else:
            frames = frames.float()
        Y, U, V = (p.cpu().numpy() if isinstance(p, torch.Tensor) else p
                   for p in rgb_to_yuv420(frames, self.colour))
        for t in range(Y.shape[0]):
            frame = av.VideoFrame(self.width, self.height, "yuv420p")
            for plane, data in zip(frame.planes, (Y[t], U[t], V[t])):
                # planes may be padded to an aligned line size: write row by row into the view
                view = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
                view[:, : plane.width] = data
            frame.colorspace = self._stream.codec_context.colorspace
            frame.color_range = self._stream.codec_context.color_range
            frame.pts = self.frames_written
            frame.time_base = self._stream.codec_context.time_base
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            self.frames_written += 1

    def close(self) -> None:
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
