"""Whether a GPU's NVDEC decodes a codec at all, and so whether a GPU backend's failure on a clip
means that (CodecUnsupportedError: PyAV can take over) or something about the clip.

The libraries say it in their own words: PyNvVideoCodec raises "Codec not supported on this GPU"
(error code 801); DALI logs "Codec av1 is not supported by NVDEC on this platform." to stderr
but raises only "Failed to create video decoder". So the driver is asked as well
(cuvidGetDecoderCaps, as both libraries do before making a decoder), for 8-bit 4:2:0 (the clips
served here): a codec it decodes is never declared missing because one clip's configuration
(10-bit, 4:4:4) is not, and DALI's silence is told apart from a damaged file.
"""
from __future__ import annotations

import ctypes
import re
import threading

import torch

from pipeline.errors import CodecUnsupportedError

# cudaVideoCodec values of NVDEC's API (cuviddec.h), by FFmpeg codec name
_NVDEC_CODECS = {"h264": 4, "hevc": 8, "vp8": 9, "vp9": 10, "av1": 11}
_CHROMA_420 = 1  # cudaVideoChromaFormat_420
# PyNvVideoCodec: "Codec not supported on this GPU"; DALI: "Codec av1 is not supported by NVDEC
# on this platform." and "Codec configuration not supported on this GPU."
_SAYS_UNSUPPORTED = re.compile(r"Codec[\w ]*? not supported (?:on this GPU|by NVDEC)")


class _DecodeCaps(ctypes.Structure):
    """CUVIDDECODECAPS: the codec asked about, then what the driver fills in."""
    _fields_ = [("codec", ctypes.c_int), ("chroma_format", ctypes.c_int),
                ("bit_depth_minus8", ctypes.c_uint), ("reserved1", ctypes.c_uint * 3),
                ("supported", ctypes.c_ubyte), ("nvdecs", ctypes.c_ubyte),
                ("output_format_mask", ctypes.c_ushort), ("max_width", ctypes.c_uint),
                ("max_height", ctypes.c_uint), ("max_mb_count", ctypes.c_uint),
                ("min_width", ctypes.c_ushort), ("min_height", ctypes.c_ushort),
                ("reserved3", ctypes.c_uint * 11)]


_answers: dict[tuple[int, str], bool | None] = {}
_answers_lock = threading.Lock()


def codec_unsupported(path, library: str, device: torch.device, codec: str,
                      text: str) -> CodecUnsupportedError | None:
    """The error to raise when `text`, `library`'s failure on a `codec` clip on `device`, means
    that GPU's NVDEC does not decode the codec at all; None when it means something else."""
    said = _SAYS_UNSUPPORTED.search(text)
    driver = nvdec_decodes(device, codec)
    if driver is True or (driver is None and said is None):
        return None
    cause = said.group(0) if said else f"the driver lists no 8-bit 4:2:0 {codec} decoder"
    return CodecUnsupportedError(path, codec, str(device), f"{library}: {cause}")


def nvdec_decodes(device: torch.device, codec: str) -> bool | None:
    """Whether `device`'s NVDEC decodes 8-bit 4:2:0 `codec`, as its driver answers; None where
    it cannot be asked (no GPU, no driver library, a failed call). Asked once per GPU and codec."""
    key = (device.index or 0, codec)
    with _answers_lock:
        if key not in _answers:
            _answers[key] = _ask_driver(device, codec)
        return _answers[key]


def _ask_driver(device: torch.device, codec: str) -> bool | None:
    if device.type != "cuda" or codec not in _NVDEC_CODECS:
        return None
    caps = _DecodeCaps(codec=_NVDEC_CODECS[codec], chroma_format=_CHROMA_420, bit_depth_minus8=0)
    try:
        nvcuvid = ctypes.CDLL("libnvcuvid.so.1")
        with torch.cuda.device(device):
            torch.zeros(1, device=device)  # torch's primary context, current on this thread
            status = nvcuvid.cuvidGetDecoderCaps(ctypes.byref(caps))
    except Exception:  # noqa: BLE001 - no driver library, no usable GPU: not known
        return None
    return bool(caps.supported) if status == 0 else None
