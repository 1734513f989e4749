"""Stand-ins for decode backends on a machine without a GPU, for the tests of what FrameDecoder
does when a GPU's NVDEC lacks a codec. A test registers them in place of the real ones by
monkeypatching pipeline.media.backends.REGISTRY ("nvdec_fakes:NvdecWithoutCodecs")."""
from __future__ import annotations

import torch

from pipeline.errors import CodecUnsupportedError
from pipeline.media.backends.base import DecodeBackend
from pipeline.media.backends.pyav import PyAvBackend

CAUSE = "fake NVDEC: Codec not supported on this GPU"


class NvdecWithoutCodecs(DecodeBackend):
    """A GPU backend whose NVDEC decodes none of its codecs, as PyNvVideoCodec finds AV1 on an
    H200: every clip raises CodecUnsupportedError. `asked` lists the clips it was given."""

    name = "pynvvideocodec"
    codecs = ("h264", "hevc", "vp9", "av1")
    devices = ("cuda",)
    asked: list = []

    def decode(self, info, start, count):
        self.asked.append(info.path)
        raise self._unsupported(info)

    def chunks(self, info, chunk):
        # a generator, as the real backends' are: the error comes with the first chunk
        self.asked.append(info.path)
        raise self._unsupported(info)
        yield  # noqa: unreachable - makes this a generator

    def _unsupported(self, info) -> CodecUnsupportedError:
        return CodecUnsupportedError(info.path, info.codec, str(self.device), CAUSE)


class PyAvOnTheCpu(PyAvBackend):
    """PyAV whose frames stay on the CPU whatever device it is made for (no GPU to copy to)."""

    def __init__(self, device: torch.device):
        super().__init__(torch.device("cpu"))
