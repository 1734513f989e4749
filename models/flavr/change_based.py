"""Change-based inference for FLAVR: run the model only where the scene moves (after CBinfer).

On a fixed camera most of each 4-frame window does not change. Per window, the tiles whose
neighbourhood changed (tiles.py) are cut out with a halo of context, gathered from every window of
the batch into one batch of small frames, and run through FLAVR; every other pixel's new frames are
the window's centre frames, which are equal there. A window whose tiles would cost more than
`fallback` of the whole frame runs whole, so moving footage pays only the change test.

FLAVR pools over the whole frame in two places, which a tile alone cannot see:
- the colour mean subtracted at the stem and added back at the head: tiles get their window's
  exact mean (a cheap reduction of the input), handed to the stem in the state;
- every Gate's channel attention: tiles get the attention recorded from the last window of the
  same stream that ran whole (gates.py), and a stream runs a window whole at least every
  `refresh` windows to renew it ("cached"); "own" lets each tile gate on its own average
  instead, to measure what the cache buys.

Split placements. `begin` (the step that runs "stem") makes the plan: which windows run whole and
which tiles the others compute. The tile batch is a batch of ordinary small frames with its own
"size", so `run_stages` on it splits at any stage boundary exactly as the full model does; later
steps follow the plan and `finish` (after "head") puts the frames together. Each instance records
the gates its own stages run, so every step must see the whole windows of the streams whose tiles
it runs (a stream stays on one replica of each step); a missing reference is an error naming the
stream.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Hashable, Sequence

import torch

from models.flavr.change_plan import ChangeState, Detection, Plan, WindowStats
from models.flavr.gates import imposed_attention, recording_attention
from models.flavr.model import FLAVR, STAGES
from models.flavr.pieces import batch_rows, run_in_pieces, take, tuned_sizes
from models.flavr.tiles import (
    BLOCK,
    TileGrid,
    block_change,
    compose,
    gather_tiles,
    interior_mask,
    pad_frames,
    static_fill,
    tiles_to_compute,
)

GATE_SOURCES = ("cached", "own")
# The tile batch runs in pieces of at least this many tiles (pieces.py): a few tiles left over
# are padded into one such piece rather than making a call of their own.
TILE_PIECE = 16


@dataclass(frozen=True)
class ChangeConfig:
    threshold: float = 0.04  # an 8x8 block changed if its mean pixel change exceeds this (0..1)
    tile: int = 64  # side of a tile's own output square, pixels (multiple of 8)
    halo: int = 16  # context around a tile, and how far a change spreads (multiple of 8)
    feather: int | None = None  # blend band into copied neighbours, pixels (None: halo / 2)
    # Run whole when the tiles, halos included, would cover more than this fraction of the
    # frame's pixels (above 1: tiles even where they cost more than the frame, for tests).
    fallback: float = 0.5
    refresh: int = 16  # run a stream's window whole at least every `refresh` windows
    gates: str = "cached"  # "cached": attention of the stream's last whole window; "own"

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"change_based.{name}: {why}, got {getattr(self, name)!r}")

        if not 0 <= self.threshold < 1:
            bad("threshold", "must be in [0, 1)")
        if self.tile < BLOCK or self.tile % BLOCK:
            bad("tile", f"must be a positive multiple of {BLOCK}")
        if self.halo < 0 or self.halo % BLOCK:
            bad("halo", f"must be a non-negative multiple of {BLOCK}")
        if self.feather is None:
            object.__setattr__(self, "feather", self.halo // 2)
        if not 0 <= self.feather <= self.halo:
            bad("feather", "must be in [0, halo]")
        if self.fallback < 0:
            bad("fallback", "must be >= 0")
        if self.refresh < 1:
            bad("refresh", "must be >= 1")
        if self.gates not in GATE_SOURCES:
            bad("gates", f"must be one of {', '.join(GATE_SOURCES)}")


    @classmethod
    def from_dict(cls, values: dict) -> "ChangeConfig":
        """From a config mapping; an unknown key is an error naming it."""
        known = [f.name for f in fields(cls)]
        for key in values:
            if key not in known:
                raise ValueError(f"change_based.{key}: unknown parameter (known: {', '.join(known)})")
        return cls(**values)

    def max_tiles(self, height: int, width: int) -> int:
        """The most tiles a window of this size computes without running whole: the size of a
        tile batch's buffers per window, for a split's hand-off."""
        grid = TileGrid(height, width, self.tile, self.halo)
        hp, wp = grid.padded
        return min(grid.shape[0] * grid.shape[1], int(self.fallback * hp * wp) // grid.crop ** 2)


class ChangeBasedFLAVR:
    """`out, stats = ChangeBasedFLAVR(model, config)(windows, streams)`, or for a split:
    `state = cb.begin(windows, streams)`, `cb.run_stages(state, first, last)` per step,
    `out = cb.finish(state)`. windows: (B, 3, 4, H, W) in [0, 1]; streams: one key per window
    (consecutive windows of a stream come in order; default: all one stream); out:
    (B, factor-1, 3, H, W) float32."""

    def __init__(self, model: FLAVR, config: ChangeConfig | None = None):
        self.model = model
        self.config = config or ChangeConfig()
        # Planner (the step that runs "stem"): per stream, windows seen and the last whole one.
        self._seen: dict[Hashable, int] = {}
        self._last_whole: dict[Hashable, int] = {}
        # Every step: per stream, {whole window number: {gate name: (C,) attention}}.
        self._attention: dict[Hashable, dict[int, dict[str, torch.Tensor]]] = {}
        self._tuned: set[tuple] = set()  # shapes `tune` has run

    def reset(self) -> None:
        """Forget every stream (the next window of each with tiles runs whole)."""
        self._seen.clear()
        self._last_whole.clear()
        self._attention.clear()

    def end_stream(self, stream: Hashable) -> None:
        """Forget one stream whose windows are over (a clip-per-request run ends one per
        request), so that what is kept per stream does not grow with the requests served."""
        for kept in (self._seen, self._last_whole, self._attention):
            kept.pop(stream, None)

    def __call__(self, windows: torch.Tensor, streams: Sequence[Hashable] | None = None):
        state = self.run_stages(self.begin(windows, streams), STAGES[0], STAGES[-1])
        return self.finish(state), state.plan.stats

    # ---- planning (the step that runs "stem") ---------------------------------------------------

    def detect(self, windows: torch.Tensor) -> Detection | None:
        """The change test of windows (B, 3, 4, H, W), read back to the host (one wait, for this
        work alone: a caller may run it on a stream of its own, so that it does not queue behind
        earlier work). None when tiles do not fit the frame."""
        grid = TileGrid(*windows.shape[-2:], self.config.tile, self.config.halo)
        if not grid.fits:
            return None
        todo = tiles_to_compute(block_change(pad_frames(windows)), grid, self.config.threshold)
        tiles = [tuple(t) for t in todo.nonzero().tolist()]  # the host's one wait
        counts = [0] * windows.shape[0]
        for b, _, _ in tiles:
            counts[b] += 1
        return Detection(counts, tiles)

    def begin(self, windows: torch.Tensor, streams: Sequence[Hashable] | None = None,
              detection: Detection | None = None) -> ChangeState:
        """Plan a batch. detection: `detect(windows)` made beforehand (by default, made here)."""
        if windows.dim() != 5 or windows.shape[1:3] != (3, 4):
            raise ValueError(f"windows must be (B, 3, 4, H, W), got {tuple(windows.shape)}")
        b, _, _, h, w = windows.shape
        streams = [None] * b if streams is None else list(streams)
        if len(streams) != b:
            raise ValueError(f"streams: need one key per window ({b}), got {len(streams)}")
        cfg = self.config
        grid = TileGrid(h, w, cfg.tile, cfg.halo)
        padded = pad_frames(windows)
        n_tiles = grid.shape[0] * grid.shape[1]
        if grid.fits:
            detection = detection or self.detect(windows)
            counts = detection.counts
        else:
            counts = [n_tiles] * b
        hp, wp = grid.padded
        whole_rows, tiled_rows, references, stats = [], [], [], []
        for row, (stream, count) in enumerate(zip(streams, counts)):
            number = self._seen.get(stream, 0)
            self._seen[stream] = number + 1
            last = self._last_whole.get(stream)
            cost = count * grid.crop ** 2 / (hp * wp)
            # Only tiles need gate attention: a window that computes none never runs whole for it.
            reason = ("small" if not grid.fits else
                      "moving" if cost > cfg.fallback else
                      "" if count == 0 or cfg.gates == "own" else
                      "first" if last is None else
                      "refresh" if number - last >= cfg.refresh else "")
            if reason:
                self._last_whole[stream] = number
                whole_rows.append(row)
                stats.append(WindowStats(stream, number, True, reason, n_tiles, n_tiles, 1.0))
            else:
                tiled_rows.append(row)
                references.append(last)
                stats.append(WindowStats(stream, number, False, "", count, n_tiles, cost))
        # The tile list of the tiled windows, built on the host (no further wait for the device).
        position = {row: i for i, row in enumerate(tiled_rows)}
        host = ([], [], [])
        for row, y, x in (detection.tiles if grid.fits else ()):
            if row in position:
                host[0].append(position[row])
                host[1].append(y)
                host[2].append(x)
        sample, ty, tx = (_index(part, windows.device) for part in host)
        plan = Plan(grid, whole_rows, tiled_rows, references, sample, ty, tx, stats, host)

        whole = tiles = centre = None
        if whole_rows:
            frames = (windows if len(whole_rows) == b else
                      windows.index_select(0, _index(whole_rows, windows.device)))
            whole = {"frames": frames, "size": (h, w)}
        if tiled_rows:
            tiled = _index(tiled_rows, windows.device)
            tiled_padded = padded.index_select(0, tiled)
            centre = tiled_padded[:, :, 1:3]
            if len(sample):
                # The exact colour mean of each tile's whole window, as the full model uses it.
                mean = windows.index_select(0, tiled).float().mean(dim=(2, 3, 4))
                crops = gather_tiles(tiled_padded, grid, sample, ty, tx)
                tiles = {"frames": crops, "mean": mean[sample], "size": (grid.crop, grid.crop)}
        return ChangeState(plan, whole, tiles, centre, streams)

    # ---- running a stage range (every step) -----------------------------------------------------

    def run_stages(self, state: ChangeState, first: str, last: str) -> ChangeState:
        """Run stages first..last on the whole windows, then on the tile batch, each in pieces of
        power-of-two sizes (pieces.py: a bounded set of shapes, each tuned once)."""
        plan = state.plan
        if state.whole is not None:
            # Whole windows first: tiles of the same batch may use the gates they record.
            recorded_pieces = []

            def run_whole(piece, start, count):
                with recording_attention(self.model) as recorded:
                    out = self.model.run_stages(piece, first, last)
                recorded_pieces.append(recorded)
                return out

            state.whole = run_in_pieces(run_whole, state.whole)
            recorded = {name: torch.cat([r[name] for r in recorded_pieces])
                        for name in recorded_pieces[0]}
            for i, row in enumerate(plan.whole_rows):
                stats = plan.stats[row]
                kept = self._attention.setdefault(state.streams[row], {})
                kept.setdefault(stats.window, {}).update({k: v[i] for k, v in recorded.items()})
        if state.tiles is not None:
            attention = self._tile_attention(state) if self.config.gates == "cached" else None

            def run_tiles(piece, start, count):
                if attention is None:
                    return self.model.run_stages(piece, first, last)
                rows = batch_rows(piece)
                imposed = {name: take(a, start, count, rows) for name, a in attention.items()}
                with imposed_attention(self.model, imposed):
                    return self.model.run_stages(piece, first, last)

            state.tiles = run_in_pieces(run_tiles, state.tiles, TILE_PIECE)
        self._forget_old(state)
        return state

    def tune(self, first: str, last: str, height: int, width: int, windows: int) -> None:
        """Run stages first..last once on random inputs of every piece size that batches of up
        to `windows` windows of height x width can take (whole windows, and tile batches of up
        to `windows` * max_tiles tiles), so that cuDNN tunes each shape now, in a warm-up,
        rather than when a request first brings it. Shapes run before are skipped."""
        network = self.model
        boundary = network.boundary_before(first)
        device = next(network.parameters()).device
        grid = TileGrid(height, width, self.config.tile, self.config.halo)
        runs = [("whole", n, (height, width)) for n in tuned_sizes(windows)]
        if grid.fits:
            most = windows * self.config.max_tiles(height, width)
            runs += [("tiles", n, (grid.crop, grid.crop)) for n in tuned_sizes(most, TILE_PIECE)]
        for kind, n, size in runs:
            key = (kind, n, size, first, last)
            if key in self._tuned:
                continue
            shapes = network.state_shapes(n, *size)[boundary]
            state = {name: torch.rand(shape, device=device).to(dtype)
                     for name, (shape, dtype) in shapes.items()}
            if kind == "tiles" and first == STAGES[0]:
                state["mean"] = torch.rand((n, 3), device=device)
            state["size"] = size
            network.run_stages(state, first, last)
            self._tuned.add(key)

    def _tile_attention(self, state: ChangeState) -> dict[str, torch.Tensor]:
        """Per gate, the attention (N, C) of each tile's reference window."""
        plan, per_row = state.plan, []
        for row, reference in zip(plan.tiled_rows, plan.references):
            if not plan.stats[row].tiles:
                # No tile of this window runs (a still window of a stream that has not run one
                # whole yet may have no reference at all): a place holder, never indexed.
                per_row.append(None)
                continue
            stream = state.streams[row]
            kept = self._attention.get(stream, {})
            if reference not in kept:
                raise KeyError(f"no gate attention of whole window {reference} of stream "
                               f"{stream!r} here: a stream's windows must all pass this step")
            per_row.append(kept[reference])
        filler = next(a for a in per_row if a is not None)
        per_row = [filler if a is None else a for a in per_row]
        names = per_row[0].keys()
        return {name: torch.stack([a[name] for a in per_row])[plan.sample] for name in names}

    def _forget_old(self, state: ChangeState) -> None:
        """Keep, per stream, only the attention of its last whole window."""
        for stream in set(state.streams):
            kept = self._attention.get(stream)
            if kept and len(kept) > 1:
                newest = max(kept)
                self._attention[stream] = {newest: kept[newest]}

    # ---- putting frames together (after "head") -------------------------------------------------

    def finish(self, state: ChangeState) -> torch.Tensor:
        plan, grid = state.plan, state.plan.grid
        n_out = self.model.config.n_outputs
        parts = {}
        if state.whole is not None:
            if "out" not in state.whole:
                raise ValueError("finish needs the state after 'head'")
            parts.update(zip(plan.whole_rows, state.whole["out"]))
        if plan.tiled_rows:
            fill = static_fill(state.centre, n_out)
            if state.tiles is not None:
                if "out" not in state.tiles:
                    raise ValueError("finish needs the state after 'head'")
                fill = compose(state.tiles["out"], fill, grid, plan.sample, plan.ty, plan.tx,
                               self.config.feather)
            parts.update(zip(plan.tiled_rows, fill[..., :grid.height, :grid.width]))
        return torch.stack([parts[row] for row in range(len(plan.stats))])


def _index(rows: list[int], device) -> torch.Tensor:
    """Host row numbers as an index on `device`, copied without waiting for the device (indexing
    a GPU tensor with a Python list would copy the list with a wait)."""
    return torch.tensor(rows, dtype=torch.long).to(device, non_blocking=True)


def computed_pixels(plan: Plan) -> torch.Tensor:
    """(B, H, W) bool: the pixels whose new frames the model computed under `plan`."""
    grid = plan.grid
    mask = torch.zeros(len(plan.stats), grid.height, grid.width, dtype=torch.bool,
                       device=plan.sample.device)
    mask[plan.whole_rows] = True
    if plan.tiled_rows:
        tiled = interior_mask(grid, len(plan.tiled_rows), plan.sample, plan.ty, plan.tx)
        mask[plan.tiled_rows] = tiled[:, :grid.height, :grid.width]
    return mask
