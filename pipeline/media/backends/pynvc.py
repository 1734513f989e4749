"""NVIDIA PyNvVideoCodec (PyPI `pynvvideocodec`, 2.2) on NVDEC: decoders that live across clips.

`pynvvideocodec`: H.264, HEVC, VP9 and AV1 onto a GPU. Creating an NVDEC decoder (parser,
decoder, surface pool) costs more than decoding a few small frames, so one `SimpleDecoder` is
kept per backend and pointed at the next clip with `reconfigure_decoder(path)`, which reuses it
(or one of the few it caches, `decoder_cache_size`, for other codecs and sizes) instead of making
a new one per clip. A stream (`open`) gets a decoder of its own, read front to back with
`get_batch_frames`. A GPU whose NVDEC lacks the codec (AV1 on an H200) raises
CodecUnsupportedError (nvdec_support.py), so that the default choice can hand the codec to PyAV.

Frames come out in their native NV12 (use_device_memory, OutputColorType.NATIVE), one DLPack
tensor of (H + H/2, W) uint8 per frame: the Y plane over the interleaved Cb/Cr plane. They are
converted with the stream's own matrix by colour.yuv_to_rgb, exactly as PyAV's planes are, so
the two backends agree to NVDEC's and FFmpeg's decoding of the same bitstream; small frames
through a CUDA graph of those kernels (colour_graphs.py), the same bits in one launch. The
decoder runs in torch's CUDA context on torch's current stream of the device, so the conversion
that follows is ordered after it; the planes are copied out at once (the decoder reuses its
surfaces).

The wheel (manylinux_2_28, cp312: pynvvideocodec-2.2.4, 26.9 MB) declares no dependencies: it
brings its own libavformat/libavutil for demuxing and loads the driver's libnvcuvid at run time.
"""
from __future__ import annotations

import ctypes
import os
from typing import Iterator

import torch

from pipeline.errors import VideoError
from pipeline.media.backends.base import DecodeBackend
from pipeline.media.colour_graphs import NV12ToRGB
from pipeline.media.nvdec_support import codec_unsupported
from pipeline.media.probe import VideoInfo

_import_error: str | None = None


def _nvc():
    # Its logger prints a warning on stderr for every WebM/Matroska clip a decoder is pointed at
    # ("Seek accuracy may be impacted"; this backend never seeks): thousands of lines a run.
    # Errors only, unless the user set a level; the library reads it when it loads.
    os.environ.setdefault("LOGGER_LEVEL", "ERROR")
    import PyNvVideoCodec as nvc

    return nvc


class PyNvVideoCodecBackend(DecodeBackend):
    name = "pynvvideocodec"
    codecs = ("h264", "hevc", "vp9", "av1")
    devices = ("cuda",)

    def __init__(self, device: torch.device):
        super().__init__(device)
        self._decoder = None  # the SimpleDecoder reconfigured for each clip
        self._convert = NV12ToRGB(device)

    @classmethod
    def unavailable(cls) -> str | None:
        global _import_error
        if _import_error is None:
            try:
                _nvc()
                _import_error = ""
            except Exception as e:  # noqa: BLE001 - ImportError, or a missing driver library
                _import_error = f"{type(e).__name__}: {e}"
        return _import_error or None

    # -- clips: one decoder, reconfigured -------------------------------------------------------

    def decode(self, info: VideoInfo, start: int, count: int) -> torch.Tensor:
        try:
            if self._decoder is None:
                self._decoder = self._new_decoder(info)
            else:
                self._decoder.reconfigure_decoder(str(info.path))
            self.phases.mark("setup")
            if start == 0:
                frames = self._decoder.get_batch_frames(count)
            else:
                frames = self._decoder.get_batch_frames_by_index(list(range(start,
                                                                            start + count)))
            self.phases.mark("decode")
            out = self._to_rgb(frames, info)
        except VideoError:
            raise
        except Exception as e:  # noqa: BLE001 - the library raises its own exception types
            self._decoder = None  # its state is unknown after a failure: the next clip starts anew
            raise self._error(info, e) from None
        _check_count(info, out, count)
        return out

    # -- streams and long files: a decoder of their own ------------------------------------------

    def chunks(self, info: VideoInfo, chunk: int) -> Iterator[torch.Tensor]:
        try:
            decoder = self._new_decoder(info)
        except Exception as e:  # noqa: BLE001
            raise self._error(info, e) from None
        done = 0
        while done < info.frames:
            want = min(chunk, info.frames - done)
            try:
                out = self._to_rgb(decoder.get_batch_frames(want), info)
            except VideoError:
                raise
            except Exception as e:  # noqa: BLE001
                raise self._error(info, e) from None
            _check_count(info, out, want)
            done += want
            yield out

    # -- helpers --------------------------------------------------------------------------------

    def _error(self, info: VideoInfo, e: Exception) -> VideoError:
        """CodecUnsupportedError where this GPU's NVDEC lacks the codec, else a VideoError."""
        text = " ".join(str(e).split())[:300]
        return (codec_unsupported(info.path, "PyNvVideoCodec", self.device, info.codec, str(e))
                or VideoError(info.path, f"PyNvVideoCodec could not decode it: "
                                         f"{type(e).__name__}: {text}"))

    def _new_decoder(self, info: VideoInfo):
        nvc = _nvc()
        return nvc.SimpleDecoder(
            str(info.path), gpu_id=self.device.index, cuda_context=_torch_context(self.device),
            cuda_stream=torch.cuda.current_stream(self.device).cuda_stream,
            use_device_memory=True, output_color_type=nvc.OutputColorType.NATIVE)

    def _to_rgb(self, frames, info: VideoInfo) -> torch.Tensor:
        if not frames:
            raise VideoError(info.path, "PyNvVideoCodec returned no frames: truncated or "
                                        "corrupt data")
        h, w = info.height, info.width
        if h % 2 or w % 2:
            raise VideoError(info.path, f"{w}x{h}: odd frame sizes are not read as NV12 here")
        surfaces = []  # views of the decoder's own surfaces, which it reuses on its next call
        for frame in frames:
            nv12 = torch.from_dlpack(frame)
            if nv12.dim() == 3 and nv12.shape[-1] == 1:
                nv12 = nv12[..., 0]
            if tuple(nv12.shape) != (h + h // 2, w) or nv12.dtype != torch.uint8:
                raise VideoError(info.path, f"PyNvVideoCodec gave a {nv12.dtype} surface of "
                                            f"shape {tuple(nv12.shape)}, not NV12 "
                                            f"({h + h // 2}, {w}): only 8-bit 4:2:0 is read")
            surfaces.append(nv12)
        # One copy of every surface, then the planes as views of it (colour_graphs.py).
        rgb = self._convert(surfaces, h, w, info.colour, self.phases)
        self.phases.mark("colour")
        return rgb


def _torch_context(device: torch.device) -> int:
    """The CUDA context torch uses on `device` (its primary context), so that the decoder's
    work and torch's share one context and can share a stream."""
    torch.zeros(1, device=device)  # torch creates (or retains) the primary context first
    with torch.cuda.device(device):
        ctx = ctypes.c_void_p()
        if ctypes.CDLL("libcuda.so.1").cuCtxGetCurrent(ctypes.byref(ctx)) != 0:
            raise RuntimeError("cuCtxGetCurrent failed")
    return ctx.value or 0


def _check_count(info: VideoInfo, frames: torch.Tensor, count: int) -> None:
    if frames.shape[0] != count:
        raise VideoError(info.path, f"decoded {frames.shape[0]} of {count} frames: truncated or "
                                    f"corrupt data")
