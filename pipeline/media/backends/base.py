"""The decode-backend interface: one library's way of turning a clip into frames on a device."""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import Iterator

import torch

from pipeline.media.phases import NO_PHASES, Phases
from pipeline.media.probe import VideoInfo


class DecodeBackend(ABC):
    """Decodes clips to float32 RGB frames (T,3,H,W) in [0,1], in the stream's own colours, on
    `device`. One instance per decoder and device, kept across clips (a backend may keep its
    decoder open). Failures on a clip raise VideoError naming the file; a GPU backend whose
    NVDEC lacks the clip's codec raises its subclass CodecUnsupportedError, which FrameDecoder
    answers by decoding with PyAV instead (unless the backend was asked for by name)."""

    name: str  # as --decode-backend spells it
    codecs: tuple[str, ...]  # FFmpeg codec names (probe.VideoInfo.codec) it decodes
    devices: tuple[str, ...]  # device types its frames can land on ("cpu", "cuda")
    # Where `decode` marks the end of each phase it has (phases.py): set only while a decode is
    # profiled (`reporting`). Optional: a backend that marks nothing still decodes.
    phases: Phases = NO_PHASES

    def __init__(self, device: torch.device):
        self.device = device

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this backend cannot run here (its library does not import), or None."""
        return None

    @abstractmethod
    def decode(self, info: VideoInfo, start: int, count: int) -> torch.Tensor:
        """Frames start .. start+count-1 of the clip (the caller has checked they exist)."""

    @abstractmethod
    def chunks(self, info: VideoInfo, chunk: int) -> Iterator[torch.Tensor]:
        """The whole clip in consecutive pieces of at most `chunk` frames, memory bounded by one."""

    @contextmanager
    def reporting(self, phases: Phases):
        """`decode` reports its phases to `phases` inside the block."""
        self.phases = phases
        try:
            yield self
        finally:
            self.phases = NO_PHASES

    def open(self, info: VideoInfo, chunk: int) -> "FrameSource":
        """The clip's decoder of its own, kept open and positioned between reads (a stream): one
        per clip, so that several can be read in turns. By default a reader over `chunks`; a
        backend whose `chunks` shares state across clips overrides it."""
        return ChunkedSource(self.chunks(info, chunk))


class FrameSource(ABC):
    """A clip being read front to back: `read(n)` returns its next n frames (T,3,H,W), fewer
    only at its end, and raises EOFError once nothing is left."""

    @abstractmethod
    def read(self, n: int) -> torch.Tensor:
        ...

    def close(self) -> None:
        """Let the decoder go (also when the clip was not read to its end)."""


class ChunkedSource(FrameSource):
    """A FrameSource over an iterator of frame chunks, keeping what a read did not take."""

    def __init__(self, chunks: Iterator[torch.Tensor]):
        self._chunks = chunks
        self._held: list[torch.Tensor] = []
        self._count = 0  # frames in _held
        self._ended = False

    def read(self, n: int) -> torch.Tensor:
        while self._count < n and not self._ended:
            try:
                piece = next(self._chunks)
            except StopIteration:
                self._ended = True
                break
            self._held.append(piece)
            self._count += piece.shape[0]
        if not self._held:
            raise EOFError("the clip has no more frames")
        frames = self._held[0] if len(self._held) == 1 else torch.cat(self._held)
        out, rest = frames[:n], frames[n:]
        self._held = [rest] if rest.shape[0] else []
        self._count = rest.shape[0]
        return out

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
