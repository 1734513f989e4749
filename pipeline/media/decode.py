"""Decode a clip (or a range of it) into float RGB frames on a device, choosing the backend.

Backends (pipeline/media/backends/, one module each behind `DecodeBackend`):

    pynvvideocodec  NVIDIA PyNvVideoCodec on NVDEC (H.264, HEVC, VP9, AV1), one decoder kept
                    across clips
    dali-gpu        NVIDIA DALI's mixed video decoder on NVDEC (same codecs), one per clip
    dali-cpu        DALI's CPU video decoder: VP8 and VP9 only (DALI 2.x has no CPU H.264/HEVC)
    pyav            PyAV (FFmpeg) on the CPU: H.264, HEVC, VP8, VP9 and AV1, onto any device

`choose_backend` is the one place that picks, by device and codec (GPU devices: NVDEC's codecs
through PyNvVideoCodec, else through DALI, VP8 on DALI's CPU decoder; CPU devices: DALI's CPU
decoder for VP8/VP9, PyAV for the rest); `--decode-backend` forces one. Every backend converts
to RGB with the stream's own matrix (colour.py), so they agree to a fraction of a grey level.

Errors: every failure to produce the asked frames is a `VideoError` naming the file: missing,
empty or unreadable file, unsupported codec, fewer than 2 frames, data cut short or with broken
packet framing (found by `probe` before any backend decodes, NVDEC included), a decoder that
raises, or fewer frames than the file lists. A GPU whose NVDEC lacks the codec is not the file's
fault: the default choice then decodes it with PyAV (FrameDecoder). What no backend can see is
damage confined to one frame's entropy-coded payload: the containers carry no checksums and
decoders decode such data as a valid, wrong picture.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

from pipeline.errors import CodecUnsupportedError, VideoError
from pipeline.media.backends import BACKENDS, backend_class
from pipeline.media.backends.base import DecodeBackend, FrameSource
from pipeline.media.phases import NO_PHASES, Phases
from pipeline.media.probe import SUPPORTED_CODECS, VideoInfo, probe

__all__ = ["BACKENDS", "FrameDecoder", "choose_backend", "iter_frame_chunks", "parse_device",
           "resize"]


def parse_device(device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", 0)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda:N', got '{device}'")
    return dev


def choose_backend(device: str, codec: str) -> tuple[str, str]:
    """(backend, reason) for decoding `codec` onto `device`. Raises ValueError for a codec we do
    not decode, and RuntimeError when a GPU device is asked for but neither PyNvVideoCodec nor
    DALI can be imported (a GPU run must not fall back to CPU decoding unnoticed).

    On a GPU, NVDEC's codecs go to PyNvVideoCodec where it imports: its decoders are kept across
    clips, where DALI opens one per clip, and on two H200s it served the shipped 256x256 configs
    3.5-3.9x faster than DALI (README, Decode). DALI on NVDEC is next, then the error."""
    dev = parse_device(device)
    if codec not in SUPPORTED_CODECS:
        raise ValueError(f"unsupported codec '{codec}' (supported: {', '.join(SUPPORTED_CODECS)})")
    if dev.type == "cuda":
        return _gpu_backend(dev, codec)
    dali_cpu = backend_class("dali-cpu")
    if codec in dali_cpu.codecs:
        missing = dali_cpu.unavailable()
        if not missing:
            return "dali-cpu", f"{codec} on cpu: DALI's CPU video decoder"
        return "pyav", f"{codec} on cpu: PyAV, because nvidia-dali does not import ({missing})"
    return "pyav", f"{codec} on cpu: PyAV (DALI's CPU decoder handles VP8/VP9 only)"


def _gpu_backend(dev: torch.device, codec: str) -> tuple[str, str]:
    pynvc, nvdec = backend_class("pynvvideocodec"), backend_class("dali-gpu")
    if codec not in nvdec.codecs:  # VP8: decoded on the CPU whichever library does it
        missing = backend_class("dali-cpu").unavailable()
        if missing:
            return "pyav", (f"{codec} is not sent to NVDEC: PyAV on the CPU, because nvidia-dali "
                            f"does not import ({missing}), frames then copied to {dev}")
        return "dali-cpu", (f"{codec} is not sent to NVDEC: DALI's CPU decoder, frames then "
                            f"copied to {dev}")
    pynvc_missing = pynvc.unavailable()
    if not pynvc_missing:
        return "pynvvideocodec", (f"{codec} on {dev}: NVDEC through PyNvVideoCodec, its decoder "
                                  f"kept across clips (measured faster than DALI's per-clip "
                                  f"decoders)")
    dali_missing = nvdec.unavailable()
    if not dali_missing:
        return "dali-gpu", (f"{codec} on {dev}: NVDEC through DALI's mixed video decoder "
                            f"(device_id={dev.index}), because PyNvVideoCodec does not import "
                            f"({pynvc_missing})")
    raise RuntimeError(f"GPU decode on {dev} needs pynvvideocodec or nvidia-dali, and neither "
                       f"imports: PyNvVideoCodec: {pynvc_missing}; DALI: {dali_missing}")


def check_backend(name: str, dev: torch.device, codec: str) -> None:
    """ValueError when backend `name` cannot decode `codec` onto `dev`; RuntimeError when its
    library does not import here."""
    cls = backend_class(name)
    if codec not in cls.codecs or dev.type not in cls.devices:
        raise ValueError(f"{name} decodes {', '.join(cls.codecs)} onto "
                         f"{' or '.join(cls.devices)} devices, not {codec} onto {dev}")
    missing = cls.unavailable()
    if missing:
        raise RuntimeError(f"backend {name} cannot run here: {missing}")


def resize(frames: torch.Tensor, resolution: tuple[int, int] | None) -> torch.Tensor:
    if resolution is None or tuple(frames.shape[-2:]) == tuple(resolution):
        return frames
    h, w = resolution
    return F.interpolate(frames, size=(int(h), int(w)), mode="bilinear", align_corners=False,
                         antialias=True).clamp_(0.0, 1.0)


class FrameDecoder:
    """`FrameDecoder("cuda:0").decode("clip.mp4", 16)` -> (T,3,H,W) float32 RGB in [0,1].

    backend "auto" lets choose_backend pick per file (by codec); `last_backend` and
    `last_reason` tell what the last call used. resolution (H, W) resizes on the device
    (bilinear, antialiased). Backends are made once per decoder and kept across files.

    With "auto", a codec that this GPU's NVDEC turns out not to decode (the backend raises
    CodecUnsupportedError, e.g. AV1 on an H200) is decoded by PyAV onto the GPU, that clip and
    every later one of that codec; `take_notices` tells it once. A backend asked for by name
    raises instead."""

    def __init__(self, device: str = "cpu", resolution: tuple[int, int] | None = None,
                 backend: str = "auto"):
        self.device = parse_device(device)
        self.resolution = tuple(resolution) if resolution is not None else None
        if backend != "auto" and backend not in BACKENDS:
            raise ValueError(f"unknown backend '{backend}' (choose from auto, "
                             f"{', '.join(BACKENDS)})")
        self.backend = backend
        self.last_backend: str | None = None
        self.last_reason: str | None = None
        self._backends: dict[str, DecodeBackend] = {}
        # codec -> why PyAV decodes it: this GPU's NVDEC does not (found on a clip, auto only)
        self.nvdec_lacks: dict[str, str] = {}
        self._notices: list[str] = []

    def backend_for(self, info: VideoInfo) -> str:
        try:
            if self.backend == "auto" and info.codec in self.nvdec_lacks:
                name, reason = "pyav", self.nvdec_lacks[info.codec]
            elif self.backend == "auto":
                name, reason = choose_backend(str(self.device), info.codec)
            else:
                check_backend(self.backend, self.device, info.codec)
                name, reason = self.backend, "asked for explicitly"
        except ValueError as e:
            raise VideoError(info.path, str(e)) from None
        self.last_backend, self.last_reason = name, reason
        return name

    def _open(self, info: VideoInfo) -> DecodeBackend:
        name = self.backend_for(info)
        if name not in self._backends:
            self._backends[name] = backend_class(name)(self.device)
        return self._backends[name]

    def _fall_back(self, info: VideoInfo, error: CodecUnsupportedError) -> DecodeBackend:
        """PyAV for the clip's codec from now on, in place of a GPU backend whose NVDEC does not
        decode it; `error` again where the backend was asked for by name."""
        if self.backend != "auto":
            raise error
        reason = (f"{info.codec}: this GPU's NVDEC does not decode it ({error.cause}): PyAV on "
                  f"the CPU, frames copied to {self.device}")
        self.nvdec_lacks[info.codec] = reason
        self._notices.append(reason)
        return self._open(info)

    def take_notices(self) -> list[str]:
        """What the decoder decided on its own since last asked (a codec handed to PyAV because
        this GPU's NVDEC lacks it), each said once."""
        notices, self._notices = self._notices, []
        return notices

    def decode(self, path, n_frames: int | None = None, start: int = 0,
               phases: Phases = NO_PHASES) -> torch.Tensor:
        """Frames start .. start+T-1 with T = min(n_frames, frames available from start).
        `phases` (a phases.PhaseClock, for profiling) is told where each phase ends: probe, the
        backend's own, then "other"; the resize is left to the caller's next mark."""
        info = probe(path)
        phases.mark("probe")
        if start < 0 or (start >= info.frames and info.frames > 0):
            raise VideoError(info.path, f"start frame {start} is outside the clip's "
                                        f"{info.frames} frames")
        available = info.frames - start
        count = available if n_frames is None else min(int(n_frames), available)
        if count < 2:
            raise VideoError(info.path, f"has {info.frames} frame(s) (from frame {start}: "
                                        f"{max(count, 0)}); interpolation needs at least 2")
        backend = self._open(info)
        try:
            with backend.reporting(phases):
                frames = backend.decode(info, start, count)
        except CodecUnsupportedError as e:
            with self._fall_back(info, e).reporting(phases) as fallback:
                frames = fallback.decode(info, start, count)
        phases.mark("other")
        return resize(frames, self.resolution)

    def open(self, path, chunk: int) -> "ResizedSource":
        """The clip's own decoder, open and positioned (backends.base.FrameSource), reading it
        `chunk` frames at a time inside; frames come resized like decode's."""
        info = probe(path)
        return ResizedSource(FallingBackSource(self, info, chunk), self.resolution)

    def iter_chunks(self, path, chunk: int) -> Iterator[torch.Tensor]:
        """Consecutive (t<=chunk, 3, H, W) pieces of the whole clip; memory bounded by one chunk
        of decoded frames (the DALI backends also hold the compressed file in memory)."""
        if chunk < 1:
            raise ValueError("chunk must be >= 1")
        info = probe(path)
        chunks = self._open(info).chunks(info, chunk)
        try:
            first = next(chunks, None)  # where a backend makes its decoder
        except CodecUnsupportedError as e:
            chunks = self._fall_back(info, e).chunks(info, chunk)
            first = next(chunks, None)
        if first is not None:
            yield resize(first, self.resolution)
        for frames in chunks:
            yield resize(frames, self.resolution)


class FallingBackSource(FrameSource):
    """A clip read through the decoder's backend for it; when that backend finds before the
    first frame that this GPU's NVDEC lacks the codec, the backend the decoder falls back to
    (PyAV) reads it from its start instead."""

    def __init__(self, decoder: FrameDecoder, info: VideoInfo, chunk: int):
        self.decoder, self.info, self.chunk = decoder, info, chunk
        self.source = decoder._open(info).open(info, chunk)
        self.started = False

    def read(self, n: int) -> torch.Tensor:
        try:
            frames = self.source.read(n)
        except CodecUnsupportedError as e:
            if self.started:
                raise
            self.source.close()
            self.source = self.decoder._fall_back(self.info, e).open(self.info, self.chunk)
            frames = self.source.read(n)
        self.started = True
        return frames

    def close(self) -> None:
        self.source.close()


class ResizedSource(FrameSource):
    def __init__(self, source: FrameSource, resolution: tuple[int, int] | None):
        self.source, self.resolution = source, resolution

    def read(self, n: int) -> torch.Tensor:
        return resize(self.source.read(n), self.resolution)

    def close(self) -> None:
        self.source.close()


def iter_frame_chunks(path, device: str, chunk: int, resolution: tuple[int, int] | None = None,
                      backend: str = "auto") -> Iterator[torch.Tensor]:
    """Stream a (long) video as consecutive (t<=chunk, 3, H, W) float RGB tensors on `device`."""
    yield from FrameDecoder(device, resolution, backend).iter_chunks(path, chunk)
