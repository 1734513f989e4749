"""NVIDIA DALI's video decoder: on NVDEC (`dali-gpu`: H.264, HEVC, VP9, AV1, frames stay on that
GPU) or on the CPU (`dali-cpu`: VP8 and VP9 only; DALI 2.x has no CPU H.264/HEVC decoder).

One built pipeline per (kind, backend, device, chunk) is kept and reused across files; a file's
bytes are fed to it. DALI opens one decoder per clip: with short clips that, not NVDEC's decode
rate, is what limits (on four H200s eight to twelve workers together decoded ~69 720p clips/s,
whatever their number: docs/results.md). A stream (`open`) gets a pipeline of its own, whose decoder stays open
across its reads. A DALI error invalidates its pipeline, which is dropped
and rebuilt for the next file; where the GPU's NVDEC lacks the clip's codec the error is a
CodecUnsupportedError (nvdec_support.py). DALI's RGB is BT.601 whatever the stream says;
colour.py maps it to the stream's own matrix.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from pipeline.errors import VideoError
from pipeline.media.backends.base import ChunkedSource, DecodeBackend
from pipeline.media.colour import DALI_GPU_CHROMA_OFFSET, dali_rgb_to_stream_rgb
from pipeline.media.nvdec_support import codec_unsupported
from pipeline.media.probe import VideoInfo

_import_error: str | None = None


def dali_unavailable() -> str | None:
    """Why nvidia.dali does not import here (cached), or None when it does."""
    global _import_error
    if _import_error is None:
        try:
            import nvidia.dali  # noqa: F401
            _import_error = ""
        except Exception as e:  # noqa: BLE001 - ImportError, or a broken CUDA runtime
            _import_error = f"{type(e).__name__}: {e}"
    return _import_error or None


class DaliBackend(DecodeBackend):
    op_device: str  # where DALI's decoder operator runs: "mixed" (NVDEC) or "cpu"
    chroma_offset = 0.0  # code values DALI adds to Cb and Cr (colour.DALI_GPU_CHROMA_OFFSET)

    @classmethod
    def unavailable(cls) -> str | None:
        return dali_unavailable()

    @property
    def _device_id(self) -> int | None:
        return self.device.index if self.op_device == "mixed" else None

    def decode(self, info: VideoInfo, start: int, count: int) -> torch.Tensor:
        rgb = dali_rgb(self.raw(info, start, count), info, self.chroma_offset)
        self.phases.mark("colour")  # only our correction: DALI's own conversion is in "decode"
        return rgb

    def raw(self, info: VideoInfo, start: int, count: int) -> torch.Tensor:
        """Frames start.. of the clip as DALI decodes them: (count, H, W, 3) uint8 on the device."""
        pipe = _pipeline("range", self.op_device, self._device_id)
        encoded = np.fromfile(info.path, dtype=np.uint8)
        try:
            pipe.feed_input("encoded", [encoded])
            pipe.feed_input("start", [np.array(start, dtype=np.int32)])
            pipe.feed_input("length", [np.array(count, dtype=np.int32)])
            self.phases.mark("setup")
            # DALI makes the clip's decoder inside run(): its set-up is counted in "decode"
            (out,) = pipe.run()
            self.phases.mark("decode")
            raw = _to_torch(out, self.device)
            self.phases.mark("copy")
        except Exception as e:  # noqa: BLE001 - DALI raises RuntimeError with C++ context
            _drop_pipeline("range", self.op_device, self._device_id)
            raise self._error(info, e) from None
        _check_shape(info, raw, count)
        return raw

    def chunks(self, info: VideoInfo, chunk: int) -> Iterator[torch.Tensor]:
        yield from self._chunks(info, chunk, _pipeline("stream", self.op_device,
                                                       self._device_id, chunk), shared=True)

    def open(self, info: VideoInfo, chunk: int) -> ChunkedSource:
        # A stream keeps its position between reads while others are read: a pipeline of its
        # own (one fn.experimental.inputs.video, whose decoder stays open for the whole file).
        pipe = _build("stream", self.op_device, self._device_id, chunk)
        return ChunkedSource(self._chunks(info, chunk, pipe, shared=False))

    def _chunks(self, info: VideoInfo, chunk: int, pipe, shared: bool) -> Iterator[torch.Tensor]:
        done = 0
        try:
            try:
                pipe.feed_input("encoded", [np.fromfile(info.path, dtype=np.uint8)])
            except Exception as e:  # noqa: BLE001
                raise self._error(info, e) from None
            while done < info.frames:
                want = min(chunk, info.frames - done)
                try:
                    (out,) = pipe.run()
                    raw = _to_torch(out, self.device)
                except Exception as e:  # noqa: BLE001
                    raise self._error(info, e) from None
                _check_shape(info, raw, want)
                done += want
                yield dali_rgb(raw, info, self.chroma_offset)
        finally:
            if shared and done < info.frames:
                # an error, or a consumer that stopped early: the operator still holds this
                # file's remaining frames, which must not leak into the next file
                _drop_pipeline("stream", self.op_device, self._device_id, chunk)

    def _error(self, info: VideoInfo, e: Exception) -> VideoError:
        """CodecUnsupportedError where this GPU's NVDEC lacks the codec, else a VideoError."""
        nvdec = self.op_device == "mixed"
        return ((nvdec and codec_unsupported(info.path, "DALI", self.device, info.codec, str(e)))
                or _dali_error(info.path, e))


class DaliGpuBackend(DaliBackend):
    name = "dali-gpu"
    codecs = ("h264", "hevc", "vp9", "av1")
    devices = ("cuda",)
    op_device = "mixed"
    chroma_offset = DALI_GPU_CHROMA_OFFSET


class DaliCpuBackend(DaliBackend):
    name = "dali-cpu"
    codecs = ("vp8", "vp9")
    devices = ("cpu", "cuda")  # on a GPU device the frames are copied there
    op_device = "cpu"


def dali_rgb(raw: torch.Tensor, info: VideoInfo, chroma_offset: float) -> torch.Tensor:
    """DALI's (T,H,W,3) uint8 BT.601 RGB -> (T,3,H,W) float RGB in the stream's colours."""
    rgb = raw.permute(0, 3, 1, 2).float().div_(255.0)
    return dali_rgb_to_stream_rgb(rgb, info.colour, chroma_offset)


# -- pipelines, shared by every backend instance of a process -------------------------------------

_pipelines: dict = {}
_pipelines_lock = threading.Lock()


def _video_op():
    from nvidia.dali import fn

    # DALI 2.x: fn.decoders.video (formerly fn.experimental.decoders.video).
    decoders = getattr(fn, "decoders", None)
    op = getattr(decoders, "video", None) if decoders is not None else None
    return op or fn.experimental.decoders.video


def _pipeline(kind: str, op_device: str, device_id: int | None, chunk: int = 0):
    """A built pipeline, cached per (kind, operator device, device, chunk) and reused across files.

    kind 'range': external_source feeds one file's bytes plus start_frame and sequence_length
    (as per-sample argument inputs) into the video decoder: any file, any range, one pipeline.
    kind 'stream': fn.experimental.inputs.video, which decodes one fed file `chunk` frames per
    run without decoding it all at once (for long videos)."""
    key = (kind, op_device, device_id, chunk)
    with _pipelines_lock:
        pipe = _pipelines.get(key)
        if pipe is None:
            pipe = _pipelines[key] = _build(kind, op_device, device_id, chunk)
        return pipe


def _build(kind: str, op_device: str, device_id: int | None, chunk: int = 0):
    from nvidia.dali import fn, pipeline_def, types

    # DALI 2.x's default (dynamic) executor, one iteration in flight: each run() decodes
    # exactly what was fed just before it.
    @pipeline_def(batch_size=1, num_threads=2, device_id=device_id, prefetch_queue_depth=1)
    def build():
        if kind == "range":
            encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
            start = fn.external_source(name="start", dtype=types.INT32, ndim=0)
            length = fn.external_source(name="length", dtype=types.INT32, ndim=0)
            return _video_op()(encoded, device=op_device, start_frame=start,
                               sequence_length=length, pad_mode="none")
        return fn.experimental.inputs.video(name="encoded", sequence_length=chunk,
                                            device=op_device, last_sequence_policy="partial")

    pipe = build()
    pipe.build()
    return pipe


def _drop_pipeline(kind: str, op_device: str, device_id: int | None, chunk: int = 0) -> None:
    # after an error a DALI pipeline is no longer usable: the next call builds a fresh one
    with _pipelines_lock:
        _pipelines.pop((kind, op_device, device_id, chunk), None)


def _to_torch(out, dev: torch.device) -> torch.Tensor:
    """DALI's (1,F,H,W,3) uint8 output -> torch uint8 (F,H,W,3) on `dev` (GPU stays on GPU)."""
    from nvidia.dali.backend import TensorListGPU

    tensor = out.as_tensor()
    shape = tuple(tensor.shape())
    if isinstance(out, TensorListGPU):
        from nvidia.dali.plugin.pytorch import feed_ndarray

        if dev.type != "cuda":
            raise RuntimeError("DALI produced GPU frames for a CPU device")
        dst = torch.empty(shape, dtype=torch.uint8, device=dev)
        with torch.cuda.device(dev):
            # copy ordered on torch's current stream of that GPU: later torch work sees it
            feed_ndarray(tensor, dst, cuda_stream=torch.cuda.current_stream(dev))
        return dst[0]
    return torch.from_numpy(np.array(out.as_array()[0])).to(dev, non_blocking=True)


def _dali_error(path: Path, e: Exception) -> VideoError:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    detail = next((ln for ln in lines if "Error" in ln or "rror" in ln), lines[0] if lines else "")
    return VideoError(path, f"DALI could not decode it: {detail[:300]}")


def _check_shape(info: VideoInfo, raw: torch.Tensor, count: int) -> None:
    if raw.dim() != 4 or raw.shape[0] != count or tuple(raw.shape[1:]) != (
            info.height, info.width, 3):
        raise VideoError(info.path, f"decoder returned frames of shape {tuple(raw.shape)}, "
                                    f"expected ({count}, {info.height}, {info.width}, 3): "
                                    f"truncated or corrupt data")
