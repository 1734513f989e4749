"""Batches whose size changes from call to call, run in pieces of a few fixed sizes.

With cudnn.benchmark on (as the runners have it), cuDNN times every convolution's algorithms
again the first time it sees an input shape: seconds for FLAVR at 720p. Change-based inference
makes batches whose size changes every call (the windows that run whole, the tile batch), so
almost every call would meet a new shape (measured on one H200: calls of 2 to 6 s among calls
of 0.2 s). Cut into powers of two (13 rows -> 8 + 4 + 1), a batch of up to `most` rows takes at
most log2(most) + 1 shapes, which a warm-up can tune once each (`tuned_sizes`). A remainder
below `smallest` is padded up to one piece of `smallest`, so that a few left-over rows do not
cost a call each; the padding's outputs are dropped.
"""
from __future__ import annotations

from typing import Callable

import torch


def piece_sizes(n: int, smallest: int = 1) -> list[int]:
    """The pieces `n` rows run in, largest first: powers of two down to `smallest` (a power of
    two), then one piece of `smallest` for what is left below it, padded."""
    _check_power_of_two(smallest)
    pieces, left = [], n
    while left >= smallest:
        piece = 1 << (left.bit_length() - 1)
        pieces.append(piece)
        left -= piece
    if left > 0:
        pieces.append(smallest)
    return pieces


def tuned_sizes(most: int, smallest: int = 1) -> list[int]:
    """Every piece size that `piece_sizes(n, smallest)` uses for 1 <= n <= most."""
    _check_power_of_two(smallest)
    sizes = [smallest]
    while sizes[-1] * 2 <= most:
        sizes.append(sizes[-1] * 2)
    return sizes


def batch_rows(state: dict) -> int:
    """Rows of a state (every tensor in it is batch-first; other entries, like "size", are
    not)."""
    return next(v.shape[0] for v in state.values() if torch.is_tensor(v))


def take(tensor: torch.Tensor, start: int, count: int, pad_to: int | None = None) -> torch.Tensor:
    """Rows start..start+count of a batch-first tensor, zero-padded to `pad_to` rows."""
    part = tensor[start:start + count]
    if pad_to is not None and pad_to > count:
        part = torch.cat([part, part.new_zeros((pad_to - count,) + part.shape[1:])])
    return part


def take_rows(state: dict, start: int, count: int, pad_to: int | None = None) -> dict:
    """`take` of every tensor of `state`; other entries as they are."""
    return {key: take(value, start, count, pad_to) if torch.is_tensor(value) else value
            for key, value in state.items()}


def run_in_pieces(run: Callable[[dict, int, int], dict], state: dict, smallest: int = 1) -> dict:
    """`run(piece, start, count)` on each piece of `state`'s rows (a piece holds rows
    start..start+count, padded to its size); returns the outputs' real rows concatenated, in
    order. A batch that is one piece already runs as it is."""
    n = batch_rows(state)
    sizes = piece_sizes(n, smallest)
    if sizes == [n]:
        return run(state, 0, n)
    outs, start = [], 0
    for size in sizes:
        count = min(size, n - start)
        outs.append(take_rows(run(take_rows(state, start, count, size), start, count), 0, count))
        start += count
    return {key: torch.cat([o[key] for o in outs]) if torch.is_tensor(value) else value
            for key, value in outs[0].items()}


def _check_power_of_two(value: int) -> None:
    if value < 1 or value & (value - 1):
        raise ValueError(f"piece sizes are powers of two, got smallest={value}")
