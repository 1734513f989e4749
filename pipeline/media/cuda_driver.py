"""The few CUDA driver calls a decode backend makes itself (ctypes on libcuda): torch's context,
and copies from raw device addresses.

torch offers no copy from a bare device address, and PyNvVideoCodec hands a decoded surface to
torch as one DLPack capsule per frame: about 40 us of host time each, 0.32 ms of a 256x256
clip's 8 frames, while the surfaces' addresses cost microseconds (docs/results.md, section 9).
So the copy out of the decoder can be made by the driver: one asynchronous device-to-device copy
per surface on torch's stream, each within that surface (one copy of a whole batch of them,
though they lie back to back, was refused: "invalid argument").
"""
from __future__ import annotations

import ctypes

import torch

_libcuda = None


class CudaDriverError(RuntimeError):
    """A CUDA driver call returned an error code."""


def _lib() -> ctypes.CDLL:
    global _libcuda
    if _libcuda is None:
        lib = ctypes.CDLL("libcuda.so.1")
        lib.cuCtxGetCurrent.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        lib.cuCtxPushCurrent_v2.argtypes = [ctypes.c_void_p]
        lib.cuCtxPopCurrent_v2.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        lib.cuMemcpyDtoDAsync_v2.argtypes = [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_size_t,
                                             ctypes.c_void_p]
        lib.cuStreamWaitEvent.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint]
        lib.cuGetErrorName.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
        for name in ("cuCtxGetCurrent", "cuCtxPushCurrent_v2", "cuCtxPopCurrent_v2",
                     "cuMemcpyDtoDAsync_v2", "cuStreamWaitEvent", "cuGetErrorName"):
            getattr(lib, name).restype = ctypes.c_int
        _libcuda = lib
    return _libcuda


def _check(code: int, call: str) -> None:
    if code:
        name = ctypes.c_char_p()
        _lib().cuGetErrorName(code, ctypes.byref(name))
        raise CudaDriverError(f"{call} failed: {(name.value or b'error').decode()} ({code})")


def torch_context(device: torch.device) -> int:
    """The CUDA context torch uses on `device` (its primary context), so that a library's work
    and torch's share one context and can share a stream."""
    torch.zeros(1, device=device)  # torch creates (or retains) the primary context first
    with torch.cuda.device(device):
        ctx = ctypes.c_void_p()
        _check(_lib().cuCtxGetCurrent(ctypes.byref(ctx)), "cuCtxGetCurrent")
    return ctx.value or 0


class AddressCopier:
    """Copies equal-sized blocks from raw device addresses into consecutive parts of a torch
    tensor on `device`, asynchronously on the stream given: after the work already queued on
    it, and after the events in `after` (those of the work that wrote the blocks elsewhere)."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.context = torch_context(self.device)

    def copy(self, out: torch.Tensor, sources: list[int], nbytes: int, stream: int,
             after: tuple[int, ...] = ()) -> None:
        if not out.is_contiguous() or out.device != self.device:
            raise ValueError(f"copies go into a contiguous tensor on {self.device}")
        if out.numel() * out.element_size() < len(sources) * nbytes:
            raise ValueError(f"{len(sources)} blocks of {nbytes} bytes do not fit in "
                             f"{out.numel() * out.element_size()} bytes")
        lib, dst = _lib(), out.data_ptr()
        # pushed, so that the copies need no current context on this thread (and run in torch's)
        _check(lib.cuCtxPushCurrent_v2(self.context), "cuCtxPushCurrent")
        try:
            for event in after:
                _check(lib.cuStreamWaitEvent(stream, event, 0), "cuStreamWaitEvent")
            for i, src in enumerate(sources):
                _check(lib.cuMemcpyDtoDAsync_v2(dst + i * nbytes, src, nbytes, stream),
                       "cuMemcpyDtoDAsync")
        finally:
            popped = ctypes.c_void_p()
            lib.cuCtxPopCurrent_v2(ctypes.byref(popped))
