"""Fidelity of change-based inference: its new frames against the full model's on the same windows.

Frames are compared as they would be shown, clamped to [0, 1], with peak 1:
PSNR = 10 log10(1 / MSE), +inf when the frames are identical. A request's PSNR pools the squared
error of all its windows (not a mean of per-window PSNRs, which an identical window would make
infinite). `computed_fraction` is the share of tiles the model ran on, a window that ran whole
counting all of its tiles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class Fidelity:
    psnr_db: float  # new frames against the full model's, whole frames
    psnr_computed_db: float | None  # on the pixels the model computed only (None: none computed)
    computed_fraction: float  # tiles computed / tiles

    def row(self) -> dict:
        """Columns for a per-request table."""
        return {"psnr_vs_full_db": self.psnr_db, "psnr_computed_db": self.psnr_computed_db,
                "tiles_computed_fraction": self.computed_fraction}


def _squared_error(out: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    if out.shape != reference.shape:
        raise ValueError(f"out {tuple(out.shape)} and reference {tuple(reference.shape)} differ in shape")
    return (out.double().clamp(0, 1) - reference.double().clamp(0, 1)).square()


def psnr_db(mse: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def fidelity(out: torch.Tensor, reference: torch.Tensor, tiles_computed: Sequence[int],
             tiles_total: Sequence[int], computed: torch.Tensor | None = None) -> Fidelity:
    """Fidelity of one request's new frames.

    out, reference: (B, K, 3, H, W) new frames of its B windows, change-based and full model;
    tiles_computed, tiles_total: per window; computed: optional (B, H, W) bool, the pixels the
    model computed, for `psnr_computed_db`."""
    if len(tiles_computed) != len(tiles_total) or not tiles_total:
        raise ValueError("tiles_computed and tiles_total: one count per window, at least one")
    err = _squared_error(out, reference)
    psnr_computed = None
    if computed is not None:
        mask = computed[:, None, None].expand_as(err)
        if mask.any():
            psnr_computed = psnr_db(err[mask].mean().item())
    return Fidelity(psnr_db(err.mean().item()), psnr_computed,
                    sum(tiles_computed) / sum(tiles_total))
