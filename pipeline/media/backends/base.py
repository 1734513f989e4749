"""The decode-backend interface: one library's way of turning a clip into frames on a device."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterator

import torch

from pipeline.media.probe import VideoInfo


class DecodeBackend(ABC):
    """Decodes clips to float32 RGB frames (T,3,H,W) in [0,1], in the stream's own colours, on
    `device`. One instance per decoder and device, kept across clips (a backend may keep its
    decoder open). Failures on a clip raise VideoError naming the file."""

    name: str  # as --decode-backend spells it
    codecs: tuple[str, ...]  # FFmpeg codec names (probe.VideoInfo.codec) it decodes
    devices: tuple[str, ...]  # device types its frames can land on ("cpu", "cuda")

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
