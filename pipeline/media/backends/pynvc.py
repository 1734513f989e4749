"""NVIDIA PyNvVideoCodec (PyPI `pynvvideocodec`, 2.2) on NVDEC: decoders that live across clips.

`pynvvideocodec`: H.264, HEVC, VP9 and AV1 onto a GPU. Creating an NVDEC decoder (parser,
decoder, surface pool) costs more than decoding a few small frames, so one `SimpleDecoder` is
kept per backend and pointed at the next clip with `reconfigure_decoder(path)`, which reuses it
(or one of the few it caches, `decoder_cache_size`, for other codecs and sizes) instead of making
a new one per clip. A stream (`open`) gets a decoder of its own, read front to back with
`get_batch_frames`. A GPU whose NVDEC lacks the codec (AV1 on an H200) raises
CodecUnsupportedError (nvdec_support.py), so that the default choice can hand the codec to PyAV.

Frames come out in their native NV12 (use_device_memory, OutputColorType.NATIVE), a surface of
(H + H/2, W) uint8 per frame: the Y plane over the interleaved Cb/Cr plane. They are
converted with the stream's own matrix by colour.yuv_to_rgb, exactly as PyAV's planes are, so
the two backends agree to NVDEC's and FFmpeg's decoding of the same bitstream; small frames
through a CUDA graph of those kernels (colour_graphs.py), the same bits in one launch. The
decoder runs in torch's CUDA context on torch's current stream of the device, so the conversion
that follows is ordered after it; the planes are copied out at once (the decoder reuses its
surfaces). The driver copies each packed 8-bit surface from its address (cuda_driver.py), which
costs microseconds where a DLPack import per frame costs about 40 us of host time; DLPack reads
any other layout, and everything with `FLAVR_PYNVC_COPY=dlpack`.

The wheel (manylinux_2_28, cp312: pynvvideocodec-2.2.4, 26.9 MB) declares no dependencies: it
brings its own libavformat/libavutil for demuxing and loads the driver's libnvcuvid at run time.
"""
from __future__ import annotations

import os
import warnings
from typing import Iterator

import torch

from pipeline.errors import VideoError
from pipeline.media.backends.base import DecodeBackend
from pipeline.media.colour_graphs import NV12ToRGB
from pipeline.media.cuda_driver import AddressCopier, CudaDriverError, torch_context
from pipeline.media.nvdec_support import codec_unsupported
from pipeline.media.probe import VideoInfo
from pipeline.switches import env_choice

_import_error: str | None = None
COPY_ENV = "FLAVR_PYNVC_COPY"  # driver (default) | dlpack


def driver_copies_wanted() -> bool:
    return env_choice(COPY_ENV, ("driver", "dlpack")) == "driver"


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
        self._driver_copies = driver_copies_wanted()
        self._copier: AddressCopier | None = None  # made with the first decoder; None: DLPack
        self._nv12 = None  # PyNvVideoCodec's NV12 pixel format

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
        if self._driver_copies and self._copier is None:
            self._nv12 = getattr(getattr(nvc, "Pixel_Format", None), "NV12", None)
            try:
                self._copier = AddressCopier(self.device)
            except (OSError, CudaDriverError) as e:  # no libcuda to call: DLPack reads them
                self._driver_copies_off(e)
        return nvc.SimpleDecoder(
            str(info.path), gpu_id=self.device.index, cuda_context=torch_context(self.device),
            cuda_stream=torch.cuda.current_stream(self.device).cuda_stream,
            use_device_memory=True, output_color_type=nvc.OutputColorType.NATIVE)

    def _to_rgb(self, frames, info: VideoInfo) -> torch.Tensor:
        if not frames:
            raise VideoError(info.path, "PyNvVideoCodec returned no frames: truncated or "
                                        "corrupt data")
        h, w = info.height, info.width
        if h % 2 or w % 2:
            raise VideoError(info.path, f"{w}x{h}: odd frame sizes are not read as NV12 here")
        # one copy of every surface into a stack, then the planes as views of it
        fill = self._fill_by_address(frames, info)
        if fill is None:
            rgb = self._convert(self._surfaces(frames, info), h, w, info.colour, self.phases)
        else:
            rgb = self._convert.convert(len(frames), h, w, info.colour, fill, self.phases)
        self.phases.mark("colour")
        return rgb

    def _fill_by_address(self, frames, info: VideoInfo):
        """A fill that has the driver copy each surface from its address, where the copies are
        on and every surface is packed 8-bit NV12; else None (DLPack reads it, and says what is
        wrong with a surface it cannot take)."""
        if self._copier is None or self._nv12 is None:
            return None
        h, w = info.height, info.width
        nbytes = (h + h // 2) * w
        sources, events = [], set()
        try:
            for frame in frames:
                if (frame.format != self._nv12 or frame.framesize() != nbytes
                        or tuple(frame.shape) != (h + h // 2, w)
                        or tuple(frame.strides) != (w, 1)):
                    return None
                sources.append(frame.GetPtrToPlane(0))
                # the decoder's work on it, which its DLPack export has the consumer wait for
                # (the decoder was given our stream, so there is normally nothing left to wait)
                events.add(frame.decoder_stream_event)
        except AttributeError as e:  # a PyNvVideoCodec whose frames say less
            self._driver_copies_off(e)
            return None
        copier, stream = self._copier, torch.cuda.current_stream(self.device).cuda_stream
        after = tuple(e for e in events if e)

        def fill(nv12: torch.Tensor) -> None:
            try:
                copier.copy(nv12, sources, nbytes, stream, after)
            except CudaDriverError as e:  # this driver will not copy from the decoder's memory
                self._driver_copies_off(e)
                torch.stack(self._surfaces(frames, info), out=nv12)
        return fill

    def _driver_copies_off(self, why: Exception) -> None:
        self._driver_copies, self._copier = False, None
        warnings.warn(f"PyNvVideoCodec's frames on {self.device} are read through DLPack from "
                      f"now on: {why}", RuntimeWarning, stacklevel=3)

    def _surfaces(self, frames, info: VideoInfo) -> list[torch.Tensor]:
        """Views of the decoder's own surfaces (which it reuses on its next call) as DLPack
        hands them over, each checked to be 8-bit NV12 of the clip's size."""
        h, w = info.height, info.width
        surfaces = []
        for frame in frames:
            nv12 = torch.from_dlpack(frame)
            if nv12.dim() == 3 and nv12.shape[-1] == 1:
                nv12 = nv12[..., 0]
            if tuple(nv12.shape) != (h + h // 2, w) or nv12.dtype != torch.uint8:
                raise VideoError(info.path, f"PyNvVideoCodec gave a {nv12.dtype} surface of "
                                            f"shape {tuple(nv12.shape)}, not NV12 "
                                            f"({h + h // 2}, {w}): only 8-bit 4:2:0 is read")
            surfaces.append(nv12)
        return surfaces


def _check_count(info: VideoInfo, frames: torch.Tensor, count: int) -> None:
    if frames.shape[0] != count:
        raise VideoError(info.path, f"decoded {frames.shape[0]} of {count} frames: truncated or "
                                    f"corrupt data")
