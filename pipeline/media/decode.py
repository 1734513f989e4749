"""Decode a clip (or a range of it) into float RGB frames on a device.

Backends, chosen by `choose_backend` (the one place that decides):

    dali-gpu  NVIDIA DALI's mixed video decoder on NVDEC (H.264, HEVC, VP9, AV1), device_id = N
    dali-cpu  DALI's CPU video decoder: VP8 and VP9 only (DALI 2.x has no CPU H.264/HEVC)
    pyav      PyAV (FFmpeg) on the CPU: H.264, HEVC and AV1 on CPU devices

DALI opens one NVDEC decoder per clip. With short clips (a few frames per request) that, not
NVDEC's decode rate, is what limits: on four H200s eight to twelve workers together decoded ~69
720p clips/s, whatever their number, while PyAV on 64 cores fed four GPUs at 84 clips/s
(docs/results.md). `--decode-backend pyav` picks it for GPU runs too (planes are converted on the GPU).

Colour. Both libraries turn YCbCr into RGB by their own conventions, which differ from each other
and from the standard: DALI's video decoders (CPU and NVDEC alike) always apply the BT.601 matrix
(limited range, or full range when the stream flags it) with bilinear, centre-sited chroma
upsampling, whatever matrix the stream declares, and `decoders.video` has no YCbCr output
option; PyAV's `to_ndarray('rgb24')` goes through swscale's fast path (nearest-neighbour chroma,
no accurate rounding: about -1 to -1.5 grey levels of bias on our lossless BT.709 test clips even
though PyAV 18 reads the matrix from the frame; swscale's own default, and older PyAV, is
BT.601: -5 grey levels on red and green). Measured on a BT.709 clip, plain DALI and plain PyAV
differ by 3 to 5 grey levels per channel on average, frame 0 included: the systematic gap once
seen between the backends. So the conversion is ours, driven by the stream's colour tags
(`video_probe.Colour`: BT.709 for HD / BT.601 for SD when untagged, limited range unless
flagged full):
  * pyav: we take the decoder's raw Y, Cb, Cr planes and convert them ourselves on the target
    device (chroma upsampled bilinearly, centre-sited, like DALI; then the stream's matrix).
  * dali-*: DALI's BT.601 RGB is an invertible linear function of the same normalised (Y, Cb,
    Cr) for the range DALI read from the same flag, so one 3x3 matrix, M = YCbCr->RGB(stream) @
    RGB->YCbCr(BT.601), maps it to the stream's standard (identity for BT.601 streams). Limits:
    DALI rounds to 8 bits and clips to [0, 255] before we see it, so colours outside the BT.601
    gamut (strongly saturated ones in BT.709 content) keep a residual error: over uniformly
    random RGB colours 15% are clipped, mean error 0.8 grey levels, up to ~37 on vivid ones;
    over colours of moderate saturation (max-min < 0.5) 0.3 mean. Exact would need YCbCr out
    of DALI's decoder, which `decoders.video` in DALI 2.4 does not offer.
Measured on generated BT.709 VP9 clips (64x64 and 1280x720): DALI CPU vs PyAV after this fix
differ by 0.27 / 0.21 / 0.26 grey levels (R/G/B mean absolute; max 0.6), and both have a
signed error against the true frames under 0.07 (tests/test_decode.py holds them to < 0.5).

Errors: every failure to produce the asked frames is a `VideoError` naming the file: missing,
empty or unreadable file, unsupported codec, fewer than 2 frames, data cut short or with broken
packet framing (found by `probe` before any backend decodes, NVDEC included), a decoder that
raises (FFmpeg through PyAV runs with error detection on, `err_detect=...explode`; a DALI error
invalidates its pipeline, which is rebuilt for the next file), or fewer frames than the file
lists. What no backend can see is damage confined to one frame's entropy-coded payload: the
containers carry no checksums and decoders decode such data as a valid, wrong picture.
"""
from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import torch
import torch.nn.functional as F

from pipeline.errors import VideoError
from pipeline.media.probe import MATRICES, SUPPORTED_CODECS, Colour, VideoInfo, probe

BACKENDS = ("dali-gpu", "dali-cpu", "pyav")
NVDEC_CODECS = ("h264", "hevc", "vp9", "av1")
DALI_CPU_CODECS = ("vp8", "vp9")


# ----------------------------------------------------------------------------- backend choice

def parse_device(device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", 0)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda:N', got '{device}'")
    return dev


_dali_import_error: str | None = None


def dali_available() -> bool:
    """Whether nvidia.dali imports here (cached); the reason it does not is kept for messages."""
    global _dali_import_error
    if _dali_import_error is None:
        try:
            import nvidia.dali  # noqa: F401
            _dali_import_error = ""
        except Exception as e:  # noqa: BLE001 - ImportError, or a broken CUDA runtime
            _dali_import_error = f"{type(e).__name__}: {e}"
    return _dali_import_error == ""


def choose_backend(device: str, codec: str) -> tuple[str, str]:
    """(backend, reason) for decoding `codec` onto `device`. Raises ValueError for a codec we do
    not decode, and RuntimeError when a GPU device is asked for but DALI cannot be imported (a
    GPU run must not fall back to CPU decoding unnoticed)."""
    dev = parse_device(device)
    if codec not in SUPPORTED_CODECS:
        raise ValueError(f"unsupported codec '{codec}' (supported: {', '.join(SUPPORTED_CODECS)})")
    if dev.type == "cuda":
        if not dali_available():
            raise RuntimeError(f"GPU decode on {dev} needs nvidia-dali, which does not import: "
                               f"{_dali_import_error}")
        if codec in NVDEC_CODECS:
            return "dali-gpu", (f"{codec} on {dev}: NVDEC through DALI's mixed video decoder "
                                f"(device_id={dev.index})")
        return "dali-cpu", (f"{codec} is not sent to NVDEC: DALI's CPU decoder, frames then "
                            f"copied to {dev}")
    if codec in DALI_CPU_CODECS:
        if dali_available():
            return "dali-cpu", f"{codec} on cpu: DALI's CPU video decoder"
        return "pyav", f"{codec} on cpu: PyAV, because nvidia-dali does not import " \
                       f"({_dali_import_error})"
    return "pyav", f"{codec} on cpu: PyAV (DALI's CPU decoder handles VP8/VP9 only)"


def _check_backend(backend: str, dev: torch.device, codec: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend '{backend}' (choose from auto, {', '.join(BACKENDS)})")
    if backend == "dali-gpu" and (dev.type != "cuda" or codec not in NVDEC_CODECS):
        raise ValueError(f"dali-gpu decodes {', '.join(NVDEC_CODECS)} onto a cuda device, not "
                         f"{codec} onto {dev}")
    if backend == "dali-cpu" and codec not in DALI_CPU_CODECS:
        raise ValueError(f"dali-cpu decodes {', '.join(DALI_CPU_CODECS)} only, not {codec}")
    if backend.startswith("dali") and not dali_available():
        raise RuntimeError(f"backend {backend} needs nvidia-dali: {_dali_import_error}")


# ------------------------------------------------------------------------------------- colour

def _yuv_to_rgb_matrix(colour: Colour) -> torch.Tensor:
    """3x3 matrix taking normalised (y, cb, cr), y in [0,1], cb/cr in [-.5,.5], to RGB."""
    kr, kb = colour.kr_kb
    kg = 1.0 - kr - kb
    return torch.tensor([
        [1.0, 0.0, 2.0 * (1.0 - kr)],
        [1.0, -2.0 * kb * (1.0 - kb) / kg, -2.0 * kr * (1.0 - kr) / kg],
        [1.0, 2.0 * (1.0 - kb), 0.0],
    ], dtype=torch.float64)


def _rgb_to_yuv_matrix(matrix: str) -> torch.Tensor:
    kr, kb = MATRICES[matrix]
    kg = 1.0 - kr - kb
    return torch.tensor([
        [kr, kg, kb],
        [-0.5 * kr / (1.0 - kb), -0.5 * kg / (1.0 - kb), 0.5],
        [0.5, -0.5 * kg / (1.0 - kr), -0.5 * kb / (1.0 - kr)],
    ], dtype=torch.float64)


def yuv_to_rgb(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, colour: Colour) -> torch.Tensor:
    """uint8 planes Y (T,H,W), Cb and Cr (T,h,w) (any subsampling) on a device -> RGB float32
    (T,3,H,W) in [0,1] on that device, using the stream's matrix and range."""
    T, H, W = y.shape
    yf = y.float()
    uv = torch.stack([u, v], 1).float()
    if uv.shape[-2:] != (H, W):
        # bilinear with align_corners=False = chroma sited at the centre of its luma block,
        # the same upsampling DALI's decoders apply (so the backends agree).
        uv = F.interpolate(uv, size=(H, W), mode="bilinear", align_corners=False)
    if colour.full_range:
        yn = yf / 255.0
        uvn = (uv - 128.0) / 255.0
    else:
        yn = (yf - 16.0) / 219.0
        uvn = (uv - 128.0) / 224.0
    return _apply_3x3(_yuv_to_rgb_matrix(colour), yn, uvn[:, 0], uvn[:, 1])


def _apply_3x3(m: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor):
    """(T,3,H,W) = m @ (a, b, c) per pixel, clamped to [0,1]. Elementwise on purpose (no matmul
    reduction whose order depends on the batch): a frame converts to the same bits whether it
    is decoded alone, in a chunk or in the whole clip, on CPU or GPU."""
    m = m.tolist()
    return torch.stack([m[i][0] * a + m[i][1] * b + m[i][2] * c for i in range(3)],
                       1).clamp_(0.0, 1.0)


# DALI's NVDEC path lands its chroma half a code value high: measured on one H200 against the
# true frames of generated BT.709 clips (scripts/decode_colour_check.py), Cb and Cr were +0.54 to
# +0.61 code values off for H.264 and VP9 alike (luma +0.1, like every other backend), which made
# R and B about +1.2 grey levels too bright. Its CPU decoder shows no such offset (+0.04). Half a
# code value is what rounding twice (once in the chroma upsampling, once in the conversion) gives.
DALI_GPU_CHROMA_OFFSET = 0.5


def dali_rgb_to_stream_rgb(rgb: torch.Tensor, colour: Colour,
                           chroma_offset: float = 0.0) -> torch.Tensor:
    """DALI's BT.601 RGB (T,3,H,W float [0,1]) -> RGB under the stream's own matrix, taking
    `chroma_offset` (in 8-bit code values) off Cb and Cr on the way."""
    if colour.matrix == "bt601" and not chroma_offset:
        return rgb
    m, shift = _dali_correction(colour, chroma_offset)
    out = _apply_3x3(m, rgb[:, 0], rgb[:, 1], rgb[:, 2])
    if chroma_offset:
        for i in range(3):
            out[:, i].sub_(shift[i])
        out.clamp_(0.0, 1.0)
    return out


@lru_cache(maxsize=64)
def _dali_correction(colour: Colour, chroma_offset: float) -> tuple[torch.Tensor, list[float]]:
    """The 3x3 matrix from DALI's BT.601 RGB to the stream's RGB, and the chroma offset carried
    through the stream's YCbCr->RGB matrix (per RGB channel); once per stream colour, not per
    request."""
    m = _yuv_to_rgb_matrix(colour) @ _rgb_to_yuv_matrix("bt601")
    c = chroma_offset / (255.0 if colour.full_range else 224.0)  # in normalised chroma
    shift = (_yuv_to_rgb_matrix(colour) @ torch.tensor([0.0, c, c], dtype=torch.float64)).tolist()
    return m, shift


def resize(frames: torch.Tensor, resolution: tuple[int, int] | None) -> torch.Tensor:
    if resolution is None or tuple(frames.shape[-2:]) == tuple(resolution):
        return frames
    h, w = resolution
    return F.interpolate(frames, size=(int(h), int(w)), mode="bilinear", align_corners=False,
                         antialias=True).clamp_(0.0, 1.0)


# -------------------------------------------------------------------------------------- PyAV

_PYAV_ERROR_OPTS = {
    # Make FFmpeg's decoders report damaged data instead of concealing it: 'explode' turns a
    # detected bitstream error into a decode error, crccheck/bitstream enable the checks.
    "err_detect": "crccheck+bitstream+buffer+explode",
}


def _planes(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frame's 8-bit Y, Cb, Cr planes (views without line padding)."""
    if frame.format.name not in ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p",
                                 "yuvj444p"):
        # other layouts (10-bit, semi-planar): to 8-bit 4:4:4 planes, no colour matrix involved
        frame = frame.reformat(format="yuv444p")
    out = []
    for plane in frame.planes[:3]:
        buf = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        out.append(buf[:, : plane.width])
    return out[0], out[1], out[2]


def _pyav_frames(info: VideoInfo, start: int, count: int | None) -> Iterator[av.VideoFrame]:
    """Decoded frames start..start+count-1 (count None: to the end); raises VideoError on any
    decoder error, a frame flagged corrupt, or fewer frames than the file lists."""
    path = info.path
    want = info.frames - start if count is None else count
    n = 0
    try:
        with av.open(str(path), mode="r") as container:
            stream = container.streams.video[0]
            stream.codec_context.options = dict(_PYAV_ERROR_OPTS)
            stream.thread_type = "AUTO"
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


def _to_device_rgb(frames: list[av.VideoFrame], info: VideoInfo, dev: torch.device):
    ys, us, vs = zip(*(_planes(f) for f in frames))
    # uint8 planes travel to the device (1.5 bytes/pixel at 4:2:0) and are converted there.
    y = torch.from_numpy(np.stack(ys)).to(dev, non_blocking=True)
    u = torch.from_numpy(np.stack(us)).to(dev, non_blocking=True)
    v = torch.from_numpy(np.stack(vs)).to(dev, non_blocking=True)
    return yuv_to_rgb(y, u, v, info.colour)


# -------------------------------------------------------------------------------------- DALI

_pipelines: dict = {}
_pipelines_lock = threading.Lock()


def _dali_video_op():
    from nvidia.dali import fn

    # DALI 2.x: fn.decoders.video (formerly fn.experimental.decoders.video).
    decoders = getattr(fn, "decoders", None)
    op = getattr(decoders, "video", None) if decoders is not None else None
    return op or fn.experimental.decoders.video


def _dali_pipeline(kind: str, backend: str, device_id: int | None, chunk: int = 0):
    """A built pipeline, cached per (kind, backend, device, chunk) and reused across files.

    kind 'range': external_source feeds one file's bytes plus start_frame and sequence_length
    (as per-sample argument inputs) into the video decoder: any file, any range, one pipeline.
    kind 'stream': fn.experimental.inputs.video, which decodes one fed file `chunk` frames per
    run without decoding it all at once (for long videos)."""
    key = (kind, backend, device_id, chunk)
    with _pipelines_lock:
        pipe = _pipelines.get(key)
        if pipe is not None:
            return pipe
        from nvidia.dali import fn, pipeline_def, types

        op_device = "mixed" if backend == "dali-gpu" else "cpu"

        # DALI 2.x's default (dynamic) executor, one iteration in flight: each run() decodes
        # exactly what was fed just before it.
        @pipeline_def(batch_size=1, num_threads=2, device_id=device_id, prefetch_queue_depth=1)
        def build():
            if kind == "range":
                encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
                start = fn.external_source(name="start", dtype=types.INT32, ndim=0)
                length = fn.external_source(name="length", dtype=types.INT32, ndim=0)
                return _dali_video_op()(encoded, device=op_device, start_frame=start,
                                        sequence_length=length, pad_mode="none")
            return fn.experimental.inputs.video(name="encoded", sequence_length=chunk,
                                                device=op_device, last_sequence_policy="partial")

        pipe = build()
        pipe.build()
        _pipelines[key] = pipe
        return pipe


def _drop_pipeline(kind: str, backend: str, device_id: int | None, chunk: int = 0) -> None:
    # after an error a DALI pipeline is no longer usable: the next call builds a fresh one
    with _pipelines_lock:
        _pipelines.pop((kind, backend, device_id, chunk), None)


def _dali_output_to_torch(out, dev: torch.device) -> torch.Tensor:
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


def _dali_rgb(raw: torch.Tensor, info: VideoInfo, backend: str) -> torch.Tensor:
    rgb = raw.permute(0, 3, 1, 2).float().div_(255.0)
    offset = DALI_GPU_CHROMA_OFFSET if backend == "dali-gpu" else 0.0
    return dali_rgb_to_stream_rgb(rgb, info.colour, offset)


# ------------------------------------------------------------------------------- the decoder

class FrameDecoder:
    """`FrameDecoder("cuda:0").decode("clip.mp4", 16)` -> (T,3,H,W) float32 RGB in [0,1].

    backend "auto" lets choose_backend pick per file (by codec); `last_backend` and
    `last_reason` tell what the last call used. resolution (H, W) resizes on the device
    (bilinear, antialiased)."""

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

    def backend_for(self, info: VideoInfo) -> str:
        if self.backend == "auto":
            try:
                name, reason = choose_backend(str(self.device), info.codec)
            except ValueError as e:
                raise VideoError(info.path, str(e)) from None
        else:
            try:
                _check_backend(self.backend, self.device, info.codec)
            except ValueError as e:
                raise VideoError(info.path, str(e)) from None
            name, reason = self.backend, "asked for explicitly"
        self.last_backend, self.last_reason = name, reason
        return name

    @property
    def _device_id(self) -> int | None:
        return self.device.index if self.device.type == "cuda" else None

    def decode(self, path, n_frames: int | None = None, start: int = 0) -> torch.Tensor:
        """Frames start .. start+T-1 with T = min(n_frames, frames available from start)."""
        info = probe(path)
        if start < 0 or (start >= info.frames and info.frames > 0):
            raise VideoError(info.path, f"start frame {start} is outside the clip's "
                                        f"{info.frames} frames")
        available = info.frames - start
        count = available if n_frames is None else min(int(n_frames), available)
        if count < 2:
            raise VideoError(info.path, f"has {info.frames} frame(s) (from frame {start}: "
                                        f"{max(count, 0)}); interpolation needs at least 2")
        backend = self.backend_for(info)
        if backend == "pyav":
            frames = _to_device_rgb(list(_pyav_frames(info, start, count)), info, self.device)
        else:
            frames = self._dali_range(info, backend, start, count)
        return resize(frames, self.resolution)

    def _dali_range(self, info: VideoInfo, backend: str, start: int, count: int):
        return _dali_rgb(self._dali_raw(info, backend, start, count), info, backend)

    def _dali_raw(self, info: VideoInfo, backend: str, start: int, count: int) -> torch.Tensor:
        """Frames start.. of the clip as DALI decodes them: (count, H, W, 3) uint8 on the device."""
        device_id = self._device_id if backend == "dali-gpu" else None
        pipe = _dali_pipeline("range", backend, device_id)
        encoded = np.fromfile(info.path, dtype=np.uint8)
        try:
            pipe.feed_input("encoded", [encoded])
            pipe.feed_input("start", [np.array(start, dtype=np.int32)])
            pipe.feed_input("length", [np.array(count, dtype=np.int32)])
            (out,) = pipe.run()
            raw = _dali_output_to_torch(out, self.device)
        except Exception as e:  # noqa: BLE001 - DALI raises RuntimeError with C++ context
            _drop_pipeline("range", backend, device_id)
            raise _dali_error(info.path, e) from None
        self._check_shape(info, raw, count)
        return raw

    @staticmethod
    def _check_shape(info: VideoInfo, raw: torch.Tensor, count: int) -> None:
        if raw.dim() != 4 or raw.shape[0] != count or tuple(raw.shape[1:]) != (
                info.height, info.width, 3):
            raise VideoError(info.path, f"decoder returned frames of shape {tuple(raw.shape)}, "
                                        f"expected ({count}, {info.height}, {info.width}, 3): "
                                        f"truncated or corrupt data")

    def iter_chunks(self, path, chunk: int) -> Iterator[torch.Tensor]:
        """Consecutive (t<=chunk, 3, H, W) pieces of the whole clip; memory bounded by one chunk
        of decoded frames (the DALI backends also hold the compressed file in memory)."""
        if chunk < 1:
            raise ValueError("chunk must be >= 1")
        info = probe(path)
        backend = self.backend_for(info)
        if backend == "pyav":
            batch: list[av.VideoFrame] = []
            for frame in _pyav_frames(info, 0, None):
                batch.append(frame)
                if len(batch) == chunk:
                    yield resize(_to_device_rgb(batch, info, self.device), self.resolution)
                    batch = []
            if batch:
                yield resize(_to_device_rgb(batch, info, self.device), self.resolution)
            return
        yield from self._dali_stream(info, backend, chunk)

    def _dali_stream(self, info: VideoInfo, backend: str, chunk: int) -> Iterator[torch.Tensor]:
        device_id = self._device_id if backend == "dali-gpu" else None
        pipe = _dali_pipeline("stream", backend, device_id, chunk)
        done = 0
        try:
            try:
                pipe.feed_input("encoded", [np.fromfile(info.path, dtype=np.uint8)])
            except Exception as e:  # noqa: BLE001
                raise _dali_error(info.path, e) from None
            while done < info.frames:
                want = min(chunk, info.frames - done)
                try:
                    (out,) = pipe.run()
                    raw = _dali_output_to_torch(out, self.device)
                except Exception as e:  # noqa: BLE001
                    raise _dali_error(info.path, e) from None
                self._check_shape(info, raw, want)
                done += want
                yield resize(_dali_rgb(raw, info, backend), self.resolution)
        finally:
            if done < info.frames:
                # an error, or a consumer that stopped early: the operator still holds this
                # file's remaining frames, which must not leak into the next file
                _drop_pipeline("stream", backend, device_id, chunk)


def iter_frame_chunks(path, device: str, chunk: int, resolution: tuple[int, int] | None = None,
                      backend: str = "auto") -> Iterator[torch.Tensor]:
    """Stream a (long) video as consecutive (t<=chunk, 3, H, W) float RGB tensors on `device`."""
    yield from FrameDecoder(device, resolution, backend).iter_chunks(path, chunk)
