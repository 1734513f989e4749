"""The YCbCr -> RGB arithmetic that every backend shares, and how PyNvVideoCodec's NV12 surfaces
reach it: fewer kernel launches must not change a single bit."""
import itertools
from fractions import Fraction
from pathlib import Path

import torch

from pipeline.media.backends.pynvc import PyNvVideoCodecBackend
from pipeline.media.colour import apply_3x3, yuv_to_rgb, yuv_to_rgb_matrix
from pipeline.media.probe import MATRICES, Colour, VideoInfo


def three_terms(m, a, b, c):
    """The conversion written out in full, every term multiplied and added."""
    m = m.tolist()
    return torch.stack([m[i][0] * a + m[i][1] * b + m[i][2] * c for i in range(3)],
                       1).clamp_(0.0, 1.0)


def planes(seed=0, t=3, h=6, w=8):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(t, h, w, generator=g) * 1.2 - 0.1,
            torch.rand(t, h, w, generator=g) - 0.5, torch.rand(t, h, w, generator=g) - 0.5)


def test_skipping_zero_and_unit_coefficients_keeps_every_bit():
    a, b, c = planes()
    for matrix, full in itertools.product(MATRICES, (False, True)):
        m = yuv_to_rgb_matrix(Colour(matrix=matrix, full_range=full))
        assert torch.equal(apply_3x3(m, a, b, c), three_terms(m, a, b, c)), (matrix, full)
    dense = torch.tensor([[0.9, -0.2, 0.3], [0.1, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    out = apply_3x3(dense, a, b, c)
    assert torch.equal(out, three_terms(dense, a, b, c))
    assert torch.equal(out[:, 2], torch.zeros_like(a))  # a row of zeros is black, not an error


def test_nv12_surfaces_are_split_into_the_planes_they_hold():
    t, h, w = 3, 4, 6
    g = torch.Generator().manual_seed(1)
    surfaces = [torch.randint(0, 256, (h + h // 2, w), generator=g, dtype=torch.uint8)
                for _ in range(t)]
    colour = Colour(matrix="bt709", full_range=False)
    info = VideoInfo(path=Path("clip.mp4"), codec="h264", width=w, height=h, frames=t,
                     rate=Fraction(25), colour=colour)
    got = PyNvVideoCodecBackend(torch.device("cpu"))._to_rgb(surfaces, info)
    y = torch.stack([s[:h] for s in surfaces])
    u = torch.stack([s[h:, 0::2] for s in surfaces])  # NV12: Cb and Cr interleaved, Cb first
    v = torch.stack([s[h:, 1::2] for s in surfaces])
    assert torch.equal(got, yuv_to_rgb(y, u, v, colour))
