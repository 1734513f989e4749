"""PyAV (FFmpeg) on the CPU: H.264, HEVC, VP8, VP9 and AV1 (through whichever decoder FFmpeg has
for it, e.g. libdav1d), frames to the CPU or a GPU.

The decoder's raw Y, Cb, Cr planes travel to the target device as uint8 (1.5 bytes a pixel at
4:2:0) and are converted there with the stream's matrix (colour.yuv_to_rgb). On many CPU cores
this feeds GPUs faster than DALI's per-clip NVDEC decoders for short clips (docs/results.md), so
`--decode-backend pyav` is a choice for GPU runs too. FFmpeg runs with error detection on
(`err_detect=...explode`), so damaged data raises instead of being concealed.
"""
from __future__ import annotations

from typing import Iterator

import av
import numpy as np
import torch

from pipeline.errors import VideoError
from pipeline.media.backends.base import DecodeBackend
from pipeline.media.colour import yuv_to_rgb
from pipeline.media.phases import NO_PHASES, Phases
from pipeline.media.probe import VideoInfo

_ERROR_OPTS = {
    # Make FFmpeg's decoders report damaged data instead of concealing it: 'explode' turns a
    # detected bitstream error into a decode error, crccheck/bitstream enable the checks.
    "err_detect": "crccheck+bitstream+buffer+explode",
}
_PLANAR_8BIT = ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p")


class PyAvBackend(DecodeBackend):
    name = "pyav"
    codecs = ("h264", "hevc", "vp8", "vp9", "av1")
    devices = ("cpu", "cuda")

    def decode(self, info: VideoInfo, start: int, count: int) -> torch.Tensor:
        frames = list(_frames(info, start, count, self.phases))
        self.phases.mark("decode")
        return self._to_device_rgb(frames, info)

    def chunks(self, info: VideoInfo, chunk: int) -> Iterator[torch.Tensor]:
        batch: list[av.VideoFrame] = []
        for frame in _frames(info, 0, None):
            batch.append(frame)
            if len(batch) == chunk:
                yield self._to_device_rgb(batch, info)
                batch = []
        if batch:
            yield self._to_device_rgb(batch, info)

    def _to_device_rgb(self, frames: list[av.VideoFrame], info: VideoInfo) -> torch.Tensor:
        ys, us, vs = zip(*(_planes(f) for f in frames))
        y = torch.from_numpy(np.stack(ys)).to(self.device, non_blocking=True)
        u = torch.from_numpy(np.stack(us)).to(self.device, non_blocking=True)
        v = torch.from_numpy(np.stack(vs)).to(self.device, non_blocking=True)
        self.phases.mark("copy")
        rgb = yuv_to_rgb(y, u, v, info.colour)
        self.phases.mark("colour")
        return rgb


def _planes(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frame's 8-bit Y, Cb, Cr planes (views without line padding)."""
    if frame.format.name not in _PLANAR_8BIT:
        # other layouts (10-bit, semi-planar): to 8-bit 4:4:4 planes, no colour matrix involved
        frame = frame.reformat(format="yuv444p")
    out = []
    for plane in frame.planes[:3]:
        buf = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        out.append(buf[:, : plane.width])
    return out[0], out[1], out[2]


def _frames(info: VideoInfo, start: int, count: int | None,
            phases: Phases = NO_PHASES) -> Iterator[av.VideoFrame]:
    """Decoded frames start..start+count-1 (count None: to the end); raises VideoError on any
    decoder error, a frame flagged corrupt, or fewer frames than the file lists. `phases`: where
    the container is opened and the decoder set up ("setup")."""
    path = info.path
    want = info.frames - start if count is None else count
    n = 0
    try:
        with av.open(str(path), mode="r") as container:
            stream = container.streams.video[0]
            stream.codec_context.options = dict(_ERROR_OPTS)
            stream.thread_type = "AUTO"
            phases.mark("setup")
            for frame in container.decode(stream):
                if frame.is_corrupt:
                    raise VideoError(path, f"corrupt data in frame {n}")
                if n >= start:
                    yield frame
                n += 1
                if n >= start + want:
                    return
    except av.FFmpegError as e:
        raise VideoError(path, f"corrupt or truncated video data near frame {n} "
                               f"({getattr(e, 'strerror', None) or e})") from None
    if n < start + want:
        raise VideoError(path, f"truncated or corrupt: decoded {n} of {info.frames} frames")
