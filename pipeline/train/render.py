"""Synthetic motion rendered from photos, on the device, every time step at once.

A sample is a background photo under a moving camera (pan, rotation, zoom, with acceleration)
and 2-4 layers cut from other photos by soft-edged irregular masks, each moving with its own
sub-pixel affine motion and occluding what lies below. The motion is known exactly at every real
time, so the frames between the inputs are as true as the inputs themselves. A share of samples
(`still_camera`) keeps the camera fixed, as video analytics' cameras are: the model must then
give back static texture as it is, which a moving camera never asks of it. Another share
(`sway`) bends the background in place, unevenly and back and forth, as foliage and water do:
motion that is neither rigid nor steady. A share (`flutter`) jitters it by small displacements
drawn afresh in every frame, as leaves in wind move: the frame between two inputs is then not
predictable from them, and the loss teaches the model to hedge there (towards the average of
the possible frames) instead of committing to one. Optional sensor noise (`noise`) differs from
frame to frame, targets included, as in real footage.

Each source (background or layer) is one `grid_sample` call: the T time steps are stacked along
the output's height, so the photo is read once per sample and never copied T times.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline.train.config import SyntheticSection

HARMONICS = (2, 3, 4)  # angular harmonics that bend a layer's ellipse into a blob


class _Draw:
    """Uniform draws from one generator on one device (the renderer's only randomness)."""

    def __init__(self, gen: torch.Generator, device):
        self.gen, self.device = gen, device

    def uniform(self, shape, lo, hi) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(shape, generator=self.gen, device=self.device)

    def log_uniform(self, shape, lo, hi) -> torch.Tensor:
        return self.uniform(shape, math.log(lo), math.log(hi)).exp()

    def in_disc(self, shape, radius) -> torch.Tensor:
        """Points uniform over a disc of `radius` (per sample): (*shape, 2)."""
        r = radius * self.uniform(shape, 0.0, 1.0).sqrt()
        a = self.uniform(shape, -math.pi, math.pi)
        return torch.stack([r * a.cos(), r * a.sin()], -1)


def _motion(draw: _Draw, batch: int, crop: int, speed: float, rot_deg: float, zoom: float,
            accel: float, spin0: float, spread: float):
    """Per-sample affine motion in output pixels: start centre, velocity, acceleration, angle,
    angular velocity, log-zoom rate."""
    centre = crop / 2 + draw.uniform((batch, 2), -spread, spread) * crop
    return dict(centre=centre,
                vel=draw.in_disc((batch,), speed),
                acc=draw.in_disc((batch,), accel),
                angle=draw.uniform((batch,), -spin0, spin0),
                spin=draw.uniform((batch,), -1.0, 1.0) * math.radians(rot_deg),
                zoom=draw.uniform((batch,), -zoom, zoom))


def _local_coords(m: dict, times: torch.Tensor, crop: int) -> torch.Tensor:
    """Where each output pixel centre lands in the source's own frame (output pixels at t = 0,
    origin at the source's centre): (B, T, H, W, 2)."""
    dev = times.device
    pix = torch.arange(crop, device=dev, dtype=torch.float32) + 0.5
    qy, qx = torch.meshgrid(pix, pix, indexing="ij")
    q = torch.stack([qx, qy], -1)                                              # (H, W, 2)
    t = times[None, :, None]                                                   # (1, T, 1)
    pos = m["centre"][:, None] + m["vel"][:, None] * t + 0.5 * m["acc"][:, None] * t ** 2  # (B, T, 2)
    angle = m["angle"][:, None] + m["spin"][:, None] * times[None]            # (B, T)
    scale = torch.exp(-m["zoom"][:, None] * times[None])                      # > 1 zooms out
    cos, sin = angle.cos() * scale, angle.sin() * scale
    d = q[None, None] - pos[:, :, None, None]                                  # (B, T, H, W, 2)
    # Inverse rotation of the offset: the source turns by +angle, so we look up by -angle.
    lx = cos[..., None, None] * d[..., 0] + sin[..., None, None] * d[..., 1]
    ly = -sin[..., None, None] * d[..., 0] + cos[..., None, None] * d[..., 1]
    return torch.stack([lx, ly], -1)


def _sample_photo(photos: torch.Tensor, idx: torch.Tensor, local: torch.Tensor,
                  src_scale: torch.Tensor, src_centre: torch.Tensor) -> torch.Tensor:
    """Bilinear look-up of photos[idx] at src_centre + src_scale * local: (B, 3, T, H, W)."""
    b, t, h, w, _ = local.shape
    hp, wp = photos.shape[-2:]
    pts = src_centre[:, None, None, None] + src_scale[:, None, None, None, None] * local
    # align_corners=False: the photo's outer edges are at -1 and +1. (Python scalars, not a small
    # device tensor: making one would copy from the host and wait for the GPU every batch.)
    grid = torch.stack([pts[..., 0] * (2 / wp) - 1, pts[..., 1] * (2 / hp) - 1], -1).reshape(b, t * h, w, 2)
    src = photos.index_select(0, idx).float().div_(255)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.reshape(b, 3, t, h, w)


def _blob_mask(draw: _Draw, local: torch.Tensor, crop: int, size: tuple[float, float],
               edge_px: float) -> torch.Tensor:
    """Soft-edged irregular blob around the layer's origin, moving with it: (B, 1, T, H, W)."""
    b = local.shape[0]
    diameter = draw.uniform((b,), size[0], size[1]) * crop
    aspect = draw.log_uniform((b,), 0.5, 2.0).sqrt()
    rx, ry = diameter / 2 * aspect, diameter / 2 / aspect
    shape = (b, 1, 1, 1)
    ex, ey = local[..., 0] / rx.view(shape), local[..., 1] / ry.view(shape)
    rho = torch.sqrt(ex ** 2 + ey ** 2)
    phi = torch.atan2(ey, ex)
    boundary = torch.ones_like(rho)
    for k in HARMONICS:
        amp = draw.uniform((b,), 0.0, 0.35 / k).view(shape)
        phase = draw.uniform((b,), -math.pi, math.pi).view(shape)
        boundary = boundary + amp * torch.cos(k * phi + phase)
    # (boundary - rho) is in units of the radius: times the radius gives roughly pixels.
    radius_px = torch.sqrt(rx * ry).view(shape)
    return ((boundary - rho) * radius_px / edge_px + 0.5).clamp_(0, 1).unsqueeze(1)


def _sway(draw: _Draw, batch: int, times: torch.Tensor, crop: int, amplitude: float,
          on: torch.Tensor) -> torch.Tensor:
    """A smooth displacement that oscillates in time, differently at every place, in output
    pixels: (B, T, H, W, 2), zero for samples where `on` is 0. d(q, t) = a(q) sin(wt) +
    b(q) cos(wt), with a and b random vectors on a coarse grid, bilinearly upsampled (smooth in
    space), and w a per-sample frequency of 0.2 to 0.8 radians per frame (up to ~1.6 px/frame at
    2 px)."""
    grid = 6
    a, b = (draw.in_disc((batch, grid, grid), amplitude / math.sqrt(2)).permute(0, 3, 1, 2)
            for _ in range(2))
    a, b = (F.interpolate(f, size=(crop, crop), mode="bilinear", align_corners=False)
            for f in (a, b))                                                  # (B, 2, H, W)
    w = draw.uniform((batch,), 0.2, 0.8)
    phase = w[:, None] * times[None]                                          # (B, T)
    d = (a[:, None] * phase.sin()[..., None, None, None]
         + b[:, None] * phase.cos()[..., None, None, None])                   # (B, T, 2, H, W)
    return d.permute(0, 1, 3, 4, 2) * on.view(batch, 1, 1, 1, 1)


def _flutter(draw: _Draw, batch: int, frames: int, crop: int, amplitude: float,
             on: torch.Tensor) -> torch.Tensor:
    """Displacements drawn independently for every frame, in output pixels: (B, T, H, W, 2),
    zero for samples where `on` is 0. Each frame's field is the sum of two random fields, on
    grids of 4 and 12 px cells (bilinearly upsampled), each up to half the amplitude with a
    per-sample weight, times a smooth envelope in [0, 1] (a 3x3 grid) so that some places
    flutter and others stay still. Fixed grid sizes keep every draw on the device."""
    fields = 0
    for cell in (4, 12):
        n = max(2, round(crop / cell))
        g = draw.in_disc((batch * frames, n, n), amplitude / 2).permute(0, 3, 1, 2)
        g = F.interpolate(g, size=(crop, crop), mode="bilinear", align_corners=False)
        weight = draw.uniform((batch, 1, 1, 1, 1), 0.0, 1.0)
        fields = fields + weight * g.view(batch, frames, 2, crop, crop)
    envelope = draw.uniform((batch, 1, 3, 3), 0.0, 1.0)
    envelope = F.interpolate(envelope, size=(crop, crop), mode="bilinear", align_corners=False)
    d = fields * envelope[:, None]                                            # (B, T, 2, H, W)
    return d.permute(0, 1, 3, 4, 2) * on.view(batch, 1, 1, 1, 1)


def render_batch(photos: torch.Tensor, batch: int, frames: int, crop: int,
                 cfg: SyntheticSection, gen: torch.Generator) -> torch.Tensor:
    """`batch` synthetic clips of `frames` frames, (B, 3, T, crop, crop) float in [0, 1] on the
    photos' device, rounded to 8-bit levels like the real clips."""
    dev = photos.device
    draw = _Draw(gen, dev)
    n = photos.shape[0]
    hp, wp = photos.shape[-2:]
    times = torch.arange(frames, device=dev, dtype=torch.float32) - (frames - 1) / 2  # centred
    n_sources = 1 + cfg.layers_max
    idx = torch.randint(n, (n_sources, batch), generator=gen, device=dev)
    layers = torch.randint(cfg.layers_min, cfg.layers_max + 1, (batch,), generator=gen, device=dev)
    scale_lo, scale_hi = cfg.source_scale

    def source(k: int, m: dict, bend: torch.Tensor | None = None) -> torch.Tensor:
        scale = draw.log_uniform((batch,), scale_lo, scale_hi)
        # Centre the look-up where the crop's footprint fits inside the photo (if it can).
        lo = torch.stack([(scale * crop / 2).clamp(max=wp / 2), (scale * crop / 2).clamp(max=hp / 2)], -1)
        size = torch.stack([torch.full_like(scale, wp), torch.full_like(scale, hp)], -1)
        centre = lo + (size - 2 * lo) * draw.uniform((batch, 2), 0.0, 1.0)
        local = _local_coords(m, times, crop)
        if bend is not None:
            local = local + bend
        return _sample_photo(photos, idx[k], local, scale, centre), local

    camera = _motion(draw, batch, crop, cfg.camera_speed, cfg.rotation_deg, cfg.zoom,
                     cfg.accel, spin0=math.radians(5), spread=0.0)
    if cfg.still_camera > 0:  # drawn only when asked: configs without it replay as before
        moving = (draw.uniform((batch,), 0.0, 1.0) >= cfg.still_camera).float()
        for key in ("vel", "acc", "spin", "zoom"):
            camera[key] = camera[key] * moving.view(-1, *[1] * (camera[key].dim() - 1))
    bend = None
    if cfg.sway > 0:  # drawn only when asked, as above
        swaying = (draw.uniform((batch,), 0.0, 1.0) < cfg.sway).float()
        bend = _sway(draw, batch, times, crop, cfg.sway_px, swaying)
    if cfg.flutter > 0:  # drawn only when asked, as above
        fluttering = (draw.uniform((batch,), 0.0, 1.0) < cfg.flutter).float()
        jitter = _flutter(draw, batch, frames, crop, cfg.flutter_px, fluttering)
        bend = jitter if bend is None else bend + jitter
    out, _ = source(0, camera, bend)
    for k in range(1, n_sources):
        m = _motion(draw, batch, crop, cfg.layer_speed, cfg.rotation_deg, cfg.zoom,
                    cfg.accel, spin0=math.pi, spread=0.35)
        tex, local = source(k, m)
        mask = _blob_mask(draw, local, crop, tuple(cfg.layer_size), cfg.edge_px)
        mask = mask * (k <= layers).to(mask.dtype).view(batch, 1, 1, 1, 1)  # 2-4 layers each
        out = torch.lerp(out, tex, mask)
    if cfg.noise > 0:
        sigma = draw.uniform((batch, 1, 1, 1, 1), 0.0, cfg.noise / 255.0)
        noise = torch.randn(out.shape, generator=gen, device=dev, dtype=out.dtype)
        out = out.add_(noise.mul_(sigma)).clamp_(0.0, 1.0)
    return out.mul_(255).round_().div_(255)
