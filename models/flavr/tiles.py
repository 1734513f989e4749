"""Tiles of FLAVR windows: where the frames changed, one batch of tiles with their halo, and the
tiles' outputs put back into whole frames.

Geometry (`TileGrid`). Windows are first padded as FLAVR pads them (reflection at the bottom and
right, to a multiple of 8), to Hp x Wp. Along each axis tile i owns the output pixels
[i*tile, (i+1)*tile), clipped to the padded frame; it computes the square [o, o+tile) with
o = min(i*tile, Hp-tile), so the last tile overlaps its neighbour instead of running off the
frame. The model sees a crop of side tile + 2*halo around that square, pushed inward at the frame's
edges (origin clamped into [0, Hp-crop]): a crop never leaves the frame, so at an edge a tile meets
the same zero padding as the full frame does. tile and halo are multiples of 8, so every crop
starts on the model's 8-pixel grid and its strided convolutions sample the same positions as in the
full frame; a crop is then just a small frame, needing no padding of its own.

Change (`block_change`, `tiles_to_compute`). A pixel's change is the largest absolute difference,
over the three colour channels and the four frames, from the window's 2nd frame (the frame the new
frames start from). A block's change is the mean of its 8x8 pixels' changes: a moving object
covers whole blocks and keeps its full change, while isolated pixels and thin lines (a lossy
codec's flicker around edges, a swaying wire) count only for their share of the block. A tile is
computed when some block within `halo` pixels of the pixels it owns (Chebyshev distance) changed
by more than the threshold. That dilation, the halo and the blend band all rest on one
assumption: the model's effective receptive field reaches `halo` pixels.

Putting back (`compose`). Computed tiles place their exact interiors (halo cropped). Around them,
over `feather` pixels of the copied neighbours, the tile's own output in its halo is blended into
the copy with a linear ramp, so the step between the model's output and the copy (the model's own
error on static content) fades out instead of showing as a seam. Interiors are never blended:
they are the most accurate values available.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.flavr.model import PAD_MULTIPLE, padded_size

BLOCK = PAD_MULTIPLE  # change is pooled per 8x8 block, the grid every tile and halo sit on


@dataclass(frozen=True)
class TileGrid:
    height: int  # the frames' size, before padding
    width: int
    tile: int
    halo: int

    @property
    def padded(self) -> tuple[int, int]:
        return padded_size(self.height, self.width)

    @property
    def crop(self) -> int:
        """Side of the square the model runs on for one tile."""
        return self.tile + 2 * self.halo

    @property
    def fits(self) -> bool:
        """Whether a crop fits in the padded frame; if not, tiles cannot run."""
        hp, wp = self.padded
        return min(hp, wp) >= self.crop

    @property
    def shape(self) -> tuple[int, int]:
        """Tiles along (H, W)."""
        hp, wp = self.padded
        return -(-hp // self.tile), -(-wp // self.tile)

    def origins(self, axis: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(interior origins, crop origins) of the tiles along axis 0 (H) or 1 (W)."""
        extent, n = self.padded[axis], self.shape[axis]
        interior = (torch.arange(n, device=device) * self.tile).clamp(max=extent - self.tile)
        crop = (interior - self.halo).clamp(min=0, max=extent - self.crop)
        return interior, crop


def pad_frames(windows: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) reflection-padded at the bottom and right to a multiple of 8, as FLAVR pads
    its input (reflection commutes with FLAVR's mean subtraction, so tiles cut from these frames
    hold exactly the values the full model computes on)."""
    b, c, t, h, w = windows.shape
    hp, wp = padded_size(h, w)
    if (hp, wp) == (h, w):
        return windows
    flat = windows.reshape(b, c * t, h, w)
    return F.pad(flat, (0, wp - w, 0, hp - h), mode="reflect").reshape(b, c, t, hp, wp)


def block_change(padded: torch.Tensor) -> torch.Tensor:
    """(B, 3, 4, Hp, Wp) -> (B, Hp/8, Wp/8): per 8x8 block, the mean over its pixels of each
    pixel's largest change (any channel, any frame) from the window's 2nd frame."""
    change = (padded - padded[:, :, 1:2]).abs().amax(dim=(1, 2))
    return F.avg_pool2d(change[:, None], BLOCK)[:, 0]


def tiles_to_compute(change: torch.Tensor, grid: TileGrid, threshold: float) -> torch.Tensor:
    """(B, Hp/8, Wp/8) block change -> (B, ny, nx) bool: tiles with a block changed by more than
    `threshold` within `halo` pixels of the pixels they own."""
    changed = (change > threshold).to(torch.float32)[:, None]
    per_tile, reach = grid.tile // BLOCK, grid.halo // BLOCK
    ny, nx = grid.shape
    by, bx = changed.shape[-2:]
    # Zero blocks around the frame, so that every tile's window of blocks has the same size.
    changed = F.pad(changed, (reach, nx * per_tile + reach - bx, reach, ny * per_tile + reach - by))
    return F.max_pool2d(changed, per_tile + 2 * reach, stride=per_tile)[:, 0] > 0


def _crop_indices(grid: TileGrid, ty: torch.Tensor, tx: torch.Tensor):
    """Row and column indices (N, crop) of each tile's crop, and each interior's offset in it."""
    iy, cy = grid.origins(0, ty.device)
    ix, cx = grid.origins(1, tx.device)
    span = torch.arange(grid.crop, device=ty.device)
    rows, cols = cy[ty][:, None] + span, cx[tx][:, None] + span
    return rows, cols, iy[ty] - cy[ty], ix[tx] - cx[tx]


def gather_tiles(padded: torch.Tensor, grid: TileGrid, sample: torch.Tensor, ty: torch.Tensor,
                 tx: torch.Tensor) -> torch.Tensor:
    """Crops (N, 3, 4, crop, crop) of tiles (sample[k], ty[k], tx[k]) of padded windows
    (B, 3, 4, Hp, Wp), in one gather."""
    rows, cols, _, _ = _crop_indices(grid, ty, tx)
    crops = padded[sample[:, None, None], :, :, rows[:, :, None], cols[:, None, :]]  # (N, S, S, 3, 4)
    return crops.permute(0, 3, 4, 1, 2).contiguous()


def interior_mask(grid: TileGrid, batch: int, sample: torch.Tensor, ty: torch.Tensor,
                  tx: torch.Tensor) -> torch.Tensor:
    """(batch, Hp, Wp) bool: the pixels inside the interiors of tiles (sample, ty, tx)."""
    iy, _ = grid.origins(0, ty.device)
    ix, _ = grid.origins(1, tx.device)
    span = torch.arange(grid.tile, device=ty.device)
    rows, cols = iy[ty][:, None] + span, ix[tx][:, None] + span
    mask = torch.zeros(batch, *grid.padded, dtype=torch.bool, device=ty.device)
    mask[sample[:, None, None], rows[:, :, None], cols[:, None, :]] = True
    return mask


def static_fill(centre: torch.Tensor, n_outputs: int) -> torch.Tensor:
    """Frames 2 and 3 (B, 3, 2, H, W) -> (B, n_outputs, 3, H, W): the new frames of a window
    whose pixels do not move. Where frames 2 and 3 are equal this is a copy of them; where codec
    noise makes them differ slightly, the straight line between them is the best guess."""
    t = torch.arange(1, n_outputs + 1, device=centre.device, dtype=centre.dtype) / (n_outputs + 1)
    a, b = centre[:, :, 0], centre[:, :, 1]
    return a[:, None] + t[None, :, None, None, None] * (b - a)[:, None]


def _ramp(offset: torch.Tensor, span: int, tile: int, feather: int):
    """Per tile and crop position along one axis: (inside the interior, blend weight)."""
    pos = torch.arange(span, device=offset.device)[None]
    dist = (offset[:, None] - pos).clamp(min=0) + (pos - (offset[:, None] + tile - 1)).clamp(min=0)
    return dist == 0, (1.0 - dist / (feather + 1.0)).clamp(min=0.0)


def compose(tile_out: torch.Tensor, fill: torch.Tensor, grid: TileGrid, sample: torch.Tensor,
            ty: torch.Tensor, tx: torch.Tensor, feather: int) -> torch.Tensor:
    """Tiles' outputs (N, K, 3, crop, crop) into filled frames (B, K, 3, Hp, Wp).

    One accumulating scatter carries each tile's interior (weight 1) and its halo band (ramp
    weights) into per-pixel sums; a pixel inside some computed interior takes the interiors' mean
    (one interior: exactly it; two where a frame's last tile overlaps its neighbour), any other
    pixel the copy blended towards the halo outputs by their summed weight (at most 1)."""
    b, k, c, hp, wp = fill.shape
    n, s = tile_out.shape[0], grid.crop
    rows, cols, oy, ox = _crop_indices(grid, ty, tx)
    in_y, ramp_y = _ramp(oy, s, grid.tile, feather)
    in_x, ramp_x = _ramp(ox, s, grid.tile, feather)
    inside = (in_y[:, :, None] & in_x[:, None, :]).to(tile_out.dtype)[..., None]  # (N, S, S, 1)
    band = (ramp_y[:, :, None] * ramp_x[:, None, :]).to(tile_out.dtype)[..., None] * (1 - inside)
    values = tile_out.reshape(n, k * c, s, s).permute(0, 2, 3, 1)  # (N, S, S, K*3)
    packed = torch.cat([values * inside, inside, values * band, band], dim=-1)
    sums = fill.new_zeros(b, hp, wp, packed.shape[-1])
    sums.index_put_((sample[:, None, None], rows[:, :, None], cols[:, None, :]), packed,
                    accumulate=True)
    kc = k * c
    interior, count = sums[..., :kc], sums[..., kc:kc + 1]
    halo, weight = sums[..., kc + 1:2 * kc + 1], sums[..., -1:]
    copy = fill.reshape(b, kc, hp, wp).permute(0, 2, 3, 1)
    blend = weight.clamp(max=1.0)
    around = copy * (1 - blend) + halo / weight.clamp(min=1e-12) * blend
    out = torch.where(count > 0, interior / count.clamp(min=1.0), around)
    return out.permute(0, 3, 1, 2).reshape(b, k, c, hp, wp)
