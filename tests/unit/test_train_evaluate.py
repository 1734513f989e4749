"""Validation metrics: PSNR and SSIM on pairs whose answer is known, and the two baselines."""
import math

import pytest
import torch

from pipeline.train.evaluate import baselines, psnr, ssim


def test_psnr_of_constant_images_is_exact():
    a = torch.full((3, 16, 16), 0.5)
    b = torch.full((3, 16, 16), 0.625)  # off by 1/8 (exact in float32): MSE 1/64 -> 10 log10 64 dB
    assert float(psnr(a, b)) == 10 * math.log10(64)
    c = torch.full((3, 16, 16), 0.6, dtype=torch.float64)  # MSE 0.01 -> 20 dB
    assert float(psnr(a.double(), c)) == pytest.approx(20.0, abs=1e-9)


def test_psnr_is_per_image_over_channels_and_pixels():
    a = torch.zeros(2, 3, 8, 8, dtype=torch.float64)
    b = a.clone()
    b[0] += 0.1
    b[1, 0] += 0.3  # one channel off by 0.3: MSE 0.03
    assert psnr(a, b).tolist() == pytest.approx([20.0, 10 * math.log10(1 / 0.03)], abs=1e-9)


def test_ssim_of_identical_images_is_one_and_falls_with_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0], abs=1e-12)
    noisy = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert float(ssim(x, noisy).max()) < 0.9


def test_ssim_of_constant_images_follows_the_luminance_term():
    # Flat images: variances and covariance vanish, so SSIM = (2 mx my + C1) / (mx^2 + my^2 + C1).
    x = torch.full((1, 3, 16, 16), 0.2, dtype=torch.float64)
    y = torch.full((1, 3, 16, 16), 0.4, dtype=torch.float64)
    c1 = 0.01 ** 2
    expected = (2 * 0.2 * 0.4 + c1) / (0.2 ** 2 + 0.4 ** 2 + c1)
    assert float(ssim(x, y)) == pytest.approx(expected, abs=1e-12)


def test_ssim_uses_the_11x11_gaussian_window_of_wang_et_al():
    # Its separable passes give what one 2-D Gaussian window (sigma 1.5, 'valid') gives.
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 24, 20, generator=g, dtype=torch.float64)
    y = (x + 0.3 * torch.rand(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    r = torch.arange(11, dtype=torch.float64) - 5
    w = torch.exp(-r ** 2 / (2 * 1.5 ** 2))
    w = torch.outer(w, w) / w.sum() ** 2
    blur = lambda t: torch.nn.functional.conv2d(t, w.expand(3, 1, 11, 11), groups=3)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = (2 * mx * my + c1) * (2 * cov + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    assert torch.allclose(ssim(x, y), s.mean(dim=(1, 2, 3)), rtol=0, atol=1e-14)


def test_baselines_repeat_the_nearest_input_and_average_the_neighbours():
    inputs = torch.stack([torch.full((3, 4, 4), float(v)) for v in (0, 1, 3, 9)], dim=1)[None]
    two = baselines(inputs, 2)
    assert two["nearest"].shape == (1, 1, 3, 4, 4) and float(two["nearest"].mean()) == 1.0
    assert float(two["average"].mean()) == 2.0
    four = baselines(inputs, 4)  # targets at 1/4, 2/4, 3/4 of the gap: 1, 1 (a tie), 3
    assert four["nearest"][0, :, 0, 0, 0].tolist() == [1.0, 1.0, 3.0]
    assert four["average"][0, :, 0, 0, 0].tolist() == [2.0, 2.0, 2.0]
