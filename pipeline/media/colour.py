"""Turning decoded YCbCr into RGB the same way whichever library decoded it.

Both libraries turn YCbCr into RGB by their own conventions, which differ from each other and
from the standard: DALI's video decoders (CPU and NVDEC alike) always apply the BT.601 matrix
(limited range, or full range when the stream flags it) with bilinear, centre-sited chroma
upsampling, whatever matrix the stream declares, and `decoders.video` has no YCbCr output
option; PyAV's `to_ndarray('rgb24')` goes through swscale's fast path (nearest-neighbour chroma,
no accurate rounding: about -1 to -1.5 grey levels of bias on our lossless BT.709 test clips even
though PyAV 18 reads the matrix from the frame; swscale's own default, and older PyAV, is
BT.601: -5 grey levels on red and green). Measured on a BT.709 clip, plain DALI and plain PyAV
differ by 3 to 5 grey levels per channel on average, frame 0 included: the systematic gap once
seen between the backends. So the conversion is ours, driven by the stream's colour tags
(`probe.Colour`: BT.709 for HD / BT.601 for SD when untagged, limited range unless flagged full):
  * PyAV: we take the decoder's raw Y, Cb, Cr planes and convert them ourselves on the target
    device (`yuv_to_rgb`: chroma upsampled bilinearly, centre-sited, like DALI; then the
    stream's matrix).
  * DALI: its BT.601 RGB is an invertible linear function of the same normalised (Y, Cb, Cr) for
    the range DALI read from the same flag, so one 3x3 matrix, M = YCbCr->RGB(stream) @
    RGB->YCbCr(BT.601), maps it to the stream's standard (`dali_rgb_to_stream_rgb`; identity for
    BT.601 streams). Limits: DALI rounds to 8 bits and clips to [0, 255] before we see it, so
    colours outside the BT.601 gamut (strongly saturated ones in BT.709 content) keep a residual
    error: over uniformly random RGB colours 15% are clipped, mean error 0.8 grey levels, up to
    ~37 on vivid ones; over colours of moderate saturation (max-min < 0.5) 0.3 mean. Exact would
    need YCbCr out of DALI's decoder, which `decoders.video` in DALI 2.4 does not offer.
Measured on generated BT.709 VP9 clips (64x64 and 1280x720): DALI CPU vs PyAV after this fix
differ by 0.27 / 0.21 / 0.26 grey levels (R/G/B mean absolute; max 0.6), and both have a signed
error against the true frames under 0.07 (tests/integration/test_decode.py holds them to < 0.5).
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from pipeline.media.probe import MATRICES, Colour

# DALI's NVDEC path lands its chroma half a code value high: measured on one H200 against the
# true frames of generated BT.709 clips (scripts/decode_colour_check.py), Cb and Cr were +0.54 to
# +0.61 code values off for H.264 and VP9 alike (luma +0.1, like every other backend), which made
# R and B about +1.2 grey levels too bright. Its CPU decoder shows no such offset (+0.04). Half a
# code value is what rounding twice (once in the chroma upsampling, once in the conversion) gives.
DALI_GPU_CHROMA_OFFSET = 0.5


def yuv_to_rgb_matrix(colour: Colour) -> torch.Tensor:
    """3x3 matrix taking normalised (y, cb, cr), y in [0,1], cb/cr in [-.5,.5], to RGB."""
    kr, kb = colour.kr_kb
    kg = 1.0 - kr - kb
    return torch.tensor([
        [1.0, 0.0, 2.0 * (1.0 - kr)],
        [1.0, -2.0 * kb * (1.0 - kb) / kg, -2.0 * kr * (1.0 - kr) / kg],
        [1.0, 2.0 * (1.0 - kb), 0.0],
    ], dtype=torch.float64)


def rgb_to_yuv_matrix(matrix: str) -> torch.Tensor:
    """3x3 matrix taking RGB in [0,1] to normalised (y, cb, cr) under the standard `matrix`."""
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
    return apply_3x3(yuv_to_rgb_matrix(colour), yn, uvn[:, 0], uvn[:, 1])


def nv12_to_rgb(nv12: torch.Tensor, height: int, width: int, colour: Colour) -> torch.Tensor:
    """NV12 frames stacked as (T, H + H/2, W) uint8 (the Y plane over the interleaved Cb/Cr
    plane) -> RGB float32 (T,3,H,W) in [0,1]: yuv_to_rgb on views of the planes."""
    uv = nv12[:, height:].unflatten(-1, (width // 2, 2))
    return yuv_to_rgb(nv12[:, :height], uv[..., 0], uv[..., 1], colour)


def apply_3x3(m: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor):
    """(T,3,H,W) = m @ (a, b, c) per pixel, clamped to [0,1]. Elementwise on purpose (no matmul
    reduction whose order depends on the batch): a frame converts to the same bits whether it
    is decoded alone, in a chunk or in the whole clip, on CPU or GPU.

    Terms with a coefficient of 0 are left out and those of 1 are not multiplied: the sums keep
    their bits (x * 1 == x, x + 0 == x), and YCbCr -> RGB, whose matrix has 1 in its first column
    and two zeros, launches 8 element-wise kernels instead of 15 (small frames are bound by
    launches, not bytes)."""
    rows = []
    for coefficients in m.tolist():
        row = None
        for k, x in zip(coefficients, (a, b, c)):
            if k == 0.0:
                continue
            term = x if k == 1.0 else k * x
            row = term if row is None else row + term
        rows.append(torch.zeros_like(a) if row is None else row)
    return torch.stack(rows, 1).clamp_(0.0, 1.0)


def dali_rgb_to_stream_rgb(rgb: torch.Tensor, colour: Colour,
                           chroma_offset: float = 0.0) -> torch.Tensor:
    """DALI's BT.601 RGB (T,3,H,W float [0,1]) -> RGB under the stream's own matrix, taking
    `chroma_offset` (in 8-bit code values) off Cb and Cr on the way."""
    if colour.matrix == "bt601" and not chroma_offset:
        return rgb
    m, shift = _dali_correction(colour, chroma_offset)
    out = apply_3x3(m, rgb[:, 0], rgb[:, 1], rgb[:, 2])
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
    m = yuv_to_rgb_matrix(colour) @ rgb_to_yuv_matrix("bt601")
    c = chroma_offset / (255.0 if colour.full_range else 224.0)  # in normalised chroma
    shift = (yuv_to_rgb_matrix(colour) @ torch.tensor([0.0, c, c], dtype=torch.float64)).tolist()
    return m, shift
