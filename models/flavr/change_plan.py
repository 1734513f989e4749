"""What change-based inference decides per batch (change_based.py): each window's figures, the
change test's result on the host, the plan of a batch, and the state that passes between the
steps of a split."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

import torch

from models.flavr.tiles import TileGrid


@dataclass(frozen=True)
class WindowStats:
    stream: Hashable
    window: int  # the window's number within its stream
    whole: bool
    reason: str  # why it ran whole: "first", "refresh", "moving", "small"; "" when tiled
    tiles: int  # tiles computed (all of them when whole)
    tiles_total: int
    cost: float  # pixels the model ran on, halos included, over the padded frame's

    @property
    def computed_fraction(self) -> float:
        return self.tiles / self.tiles_total


@dataclass
class Detection:
    """The change test's result on the host: per window, how many tiles changed, and every
    changed tile as (window, tile row, tile column), in row-major order."""

    counts: list[int]
    tiles: list[tuple[int, int, int]]

    @staticmethod
    def merge(parts: list["Detection"], rows: list[int]) -> "Detection":
        """The detections of consecutive groups of windows as one (rows: windows per group)."""
        out, offset = Detection([], []), 0
        for part, n in zip(parts, rows):
            out.counts += part.counts
            out.tiles += [(b + offset, y, x) for b, y, x in part.tiles]
            offset += n
        return out


@dataclass
class Plan:
    grid: TileGrid
    whole_rows: list[int]  # rows of the batch that run whole
    tiled_rows: list[int]  # rows whose new frames are copied, plus computed tiles
    references: list[int]  # per tiled row: the whole window whose gates its tiles use
    sample: torch.Tensor  # (N,) per tile: its index into tiled_rows
    ty: torch.Tensor  # (N,) tile row
    tx: torch.Tensor  # (N,) tile column
    stats: list[WindowStats]
    # The tile list on the host (sample, ty, tx as lists), when the plan was made from one.
    host: tuple[list, list, list] | None = None


@dataclass
class ChangeState:
    """What passes between the steps of a split: the plan, the FLAVR state of the windows that
    run whole and of the tile batch (each None when empty), and the padded centre frames of the
    tiled windows (B_t, 3, 2, Hp, Wp), the copy's source."""

    plan: Plan
    whole: dict | None
    tiles: dict | None
    centre: torch.Tensor | None
    streams: list  # one key per window of the batch
