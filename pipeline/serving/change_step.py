"""A model step with change-based inference (config `model.change_based`; the model side is
models/flavr/change_based.py).

Roles follow the stage range. The step that runs the first stage *plans*: per batch it asks
`begin` which windows run whole and which tiles the others compute, keyed by stream (a stream's
requests carry stream_id; a clip request is a stream of its own, ended with its batch). The step
that runs the last stage *composes* the frames. A step in between follows the plan.

Between the steps of a split, the change state travels through the ordinary slot pools: every
tensor of the whole windows' state as `whole.<name>`, of the tile batch's as `tiles.<name>`, and
the tiled windows' centre frames as `centre`, each with its own row count (0 when empty), sized
once for the worst case (every window whole, and every window at ChangeConfig.max_tiles). The
plan itself is small host data and rides on the queue item (`Item.change`, a PlanMeta); a batch
of several items merges their plans. Getting the plan onto the host costs one wait, for the
change test (the tile list decides the tile batch's shape). On a GPU the test runs on a stream of
the planner's own that waits only for each item's inputs, so the host waits for the test alone
(a few element-wise passes over the input), not for earlier batches still queued on the step's
stream, which keep the GPU busy meanwhile; the test's GPU time is outside compute_s, the host's
wait inside it only where the GPU had nothing else to do. Everything after it (the tile list,
row indices, the plan on the item) is built on the host and copied without waiting.

A fidelity run (`model.change_based.check`) also hands the input windows on (`check.frames`);
after the timed work of each batch the composing step runs the full model on them and reports
each request's PSNR against it. The reference's GPU time falls outside the batch's compute_s,
but the next batch on that stream waits for it (its stream_wait_s grows): a fidelity run measures
fidelity, not speed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from pipeline.analysis.records import ChangeCounts, Fidelity
from pipeline.config.change import change_config
from pipeline.serving.steps import ModelStep, tensor_specs

PSNR_CAP_DB = 100.0  # identical outputs: a finite figure that averages


@dataclass
class PlanMeta:
    """A change plan as host data, for the steps after the planner (row numbers within the
    item's windows; tile k is tile (ty[k], tx[k]) of tiled row sample[k])."""

    whole_rows: list[int]
    tiled_rows: list[int]
    references: list
    sample: list[int]
    ty: list[int]
    tx: list[int]
    stats: list  # models.flavr.change_based.WindowStats, one per window
    streams: list  # one key per window


@dataclass
class BatchResult:
    """What a step's call leaves besides its outputs: metadata for the output item, work to do
    once the timed work is launched (the fidelity reference), and the reports to record once the
    batch's device work is complete."""

    meta: object = None
    untimed: Callable[[], None] | None = None
    reports: list = field(default_factory=list)  # (request id, record) known at once
    later: Callable[[], list] | None = None  # -> more (request id, record), may wait on the device

    def all_reports(self) -> list:
        return self.reports + (self.later() if self.later is not None else [])


def stream_keys(parts) -> list:
    """One key per window of a batch: its stream, or for a clip request the request itself."""
    keys = []
    for p in parts:
        key = ("stream", p.stream_id) if p.stream_id is not None else ("request", p.request_id)
        keys += [key] * p.rows
    return keys


def merge_metas(metas: list[PlanMeta], rows: list[int]) -> PlanMeta:
    """The plan of items batched together, their windows and tile batches concatenated in order."""
    out = PlanMeta([], [], [], [], [], [], [], [])
    offset = 0
    for meta, n in zip(metas, rows):
        tiled_offset = len(out.tiled_rows)
        out.whole_rows += [r + offset for r in meta.whole_rows]
        out.tiled_rows += [r + offset for r in meta.tiled_rows]
        out.references += meta.references
        out.sample += [s + tiled_offset for s in meta.sample]
        out.ty += meta.ty
        out.tx += meta.tx
        out.stats += meta.stats
        out.streams += meta.streams
        offset += n
    return out


class ChangeModelStep(ModelStep):
    """ModelStep whose stage range runs under change-based inference. Its outputs are one group,
    handed on once the range has run (the tile batch runs after the whole windows)."""

    def __init__(self, step_cfg, model_cfg, device: torch.device):
        super().__init__(step_cfg, model_cfg, device)
        self.change = change_config(model_cfg)
        self.check = model_cfg.change_based.check
        stages = self.network.STAGES
        self.plans = self.first == stages[0]
        self.composes = self.last == stages[-1]
        self.plan = [(self.last, self._state_names(self.last) if not self.composes else ("out",))]
        self.cb = None
        self.side = None  # CUDA: the stream of the change test (see _detect)

    def setup(self) -> None:
        super().setup()
        self.cb = self.served.change_runner(self.model, self.change)
        if self.device.type == "cuda" and self.plans:
            self.side = torch.cuda.Stream(self.device, priority=-1)

    # ---- what crosses a boundary --------------------------------------------------------------

    def _state_names(self, boundary: str) -> tuple[str, ...]:
        live = self.network.LIVE_AFTER[boundary]
        names = [f"whole.{n}" for n in live] + [f"tiles.{n}" for n in live] + ["centre"]
        return tuple(names + (["check.frames"] if self.check else []))

    def _state_spec(self, boundary: str, windows: int, height: int, width: int) -> dict:
        from models.flavr.tiles import TileGrid

        grid = TileGrid(height, width, self.change.tile, self.change.halo)
        tiles = windows * self.change.max_tiles(height, width) if grid.fits else 0
        shapes = {f"whole.{k}": v for k, v in
                  self.model.state_shapes(windows, height, width)[boundary].items()}
        shapes.update({f"tiles.{k}": v for k, v in
                       self.model.state_shapes(tiles, grid.crop, grid.crop)[boundary].items()})
        hp, wp = grid.padded
        shapes["centre"] = ((windows, 3, 2, hp, wp), torch.float32)
        if self.check:
            shapes["check.frames"] = ((windows, 3, 4, height, width), torch.float32)
        return tensor_specs(shapes)

    def specs(self, max_rows: int, height: int, width: int):
        plain_in, plain_out = super().specs(max_rows, height, width)
        before = self.network.boundary_before(self.first)
        ins = plain_in if self.plans else self._state_spec(before, max_rows, height, width)
        outs = plain_out if self.composes else self._state_spec(self.last, max_rows, height, width)
        return ins, outs

    # ---- one batch ----------------------------------------------------------------------------

    def run(self, tensors: dict, size, n_requests: int, publish, items=None, gathered=None):
        from models.flavr.change_plan import ChangeState, Plan, WindowStats
        from models.flavr.tiles import TileGrid

        size = tuple(size)
        if items:
            parts = [p for it in items for p in _offset_parts(items, it)]
            rows = sum(it.rows for it in items)
            streams = stream_keys(parts)
        else:  # warm-up: every window a stream of its own, forgotten afterwards
            parts = None
            rows = next(iter(tensors.values())).shape[0]  # warm-up parts all have these rows
            streams = [("warm-up", r) for r in range(rows)]
        if self.plans:
            windows = tensors["frames"]
            state = self.cb.begin(windows, streams, self._detect(gathered))
            check_frames = windows if self.check else None
        else:
            meta = (merge_metas([it.change for it in items], [it.rows for it in items])
                    if items else PlanMeta(list(range(rows)), [], [], [], [], [],
                                           [WindowStats(k, 0, True, "first", 1, 1, 1.0)
                                            for k in streams], streams))
            grid = TileGrid(*size, self.change.tile, self.change.halo)
            dev = self.device
            as_index = lambda xs: torch.tensor(xs, dtype=torch.long).to(dev, non_blocking=True)
            plan = Plan(grid, meta.whole_rows, meta.tiled_rows, meta.references,
                        as_index(meta.sample), as_index(meta.ty), as_index(meta.tx), meta.stats)
            state = ChangeState(plan, None, None, None, meta.streams)
            part = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items()
                                   if k.startswith(prefix)}
            if meta.whole_rows:
                state.whole = {**part("whole."), "size": size}
            if meta.sample:
                state.tiles = {**part("tiles."), "size": (grid.crop, grid.crop)}
            if meta.tiled_rows:
                state.centre = tensors["centre"]
            check_frames = tensors.get("check.frames")
        state = self.cb.run_stages(state, self.first, self.last)
        result = BatchResult()
        if self.plans and parts is not None:
            result.reports = _counts(parts, state.plan.stats)
        if self.composes:
            out = self.cb.finish(state)
            publish(0, {"out": out})
            if self.check and parts is not None:
                result.untimed, result.later = self._fidelity(check_frames, out, size, parts)
        else:
            publish(0, self._state_tensors(state, size, rows, check_frames), rows)
            result.meta = self._meta(state)
        if items is None:
            if self.device.type == "cuda":
                # cuDNN tunes each new shape when first seen: every piece size that batches of
                # up to these rows can take, now rather than in the measured run.
                self.cb.tune(self.first, self.last, *size, rows)
            self.cb.reset()  # warm-up windows are no stream of the run
        else:
            for key in dict.fromkeys(k for k in streams if k[0] == "request"):
                self.cb.end_stream(key)  # a clip request's windows were all in this batch
        return result

    def _detect(self, gathered):
        """On a GPU, the change test of each item on a stream of its own that waits only for
        that item's inputs, then its result read back: the host's wait for the plan is then
        for the test alone, not for the earlier batches still queued on the step's stream
        (which keep the GPU busy meanwhile). None: `begin` tests on the current stream."""
        from models.flavr.change_plan import Detection

        if self.side is None or gathered is None or not gathered.parts:
            return None
        found = []
        for part, ready in zip(gathered.parts, gathered.ready):
            self.side.wait_event(ready)
            with torch.cuda.stream(self.side):
                detection = self.cb.detect(part["frames"])
            if detection is None:  # tiles do not fit these frames: begin runs them whole
                return None
            found.append(detection)
        return Detection.merge(found, [p["frames"].shape[0] for p in gathered.parts])

    def _state_tensors(self, state, size, rows: int, check_frames) -> dict:
        """The change state as the slot's named tensors; an empty part as 0 rows of its shape."""
        grid = state.plan.grid
        empty = self.model.state_shapes(0, *size)[self.last]
        empty_tiles = self.model.state_shapes(0, grid.crop, grid.crop)[self.last]
        out = {}
        for prefix, part, shapes in (("whole.", state.whole, empty), ("tiles.", state.tiles,
                                                                      empty_tiles)):
            for name, (shape, dtype) in shapes.items():
                out[prefix + name] = (part[name] if part is not None else
                                      torch.empty(shape, dtype=dtype, device=self.device))
        hp, wp = grid.padded
        out["centre"] = (state.centre if state.centre is not None else
                         torch.empty((0, 3, 2, hp, wp), device=self.device))
        if self.check:
            out["check.frames"] = check_frames
        return out

    @staticmethod
    def _meta(state) -> PlanMeta:
        plan = state.plan
        indices = plan.host  # made on the host by begin: no read back
        if indices is None:
            indices = torch.stack([plan.sample, plan.ty, plan.tx]).tolist()
        return PlanMeta(plan.whole_rows, plan.tiled_rows, plan.references, *indices,
                        plan.stats, state.streams)

    def _fidelity(self, frames, out, size, parts):
        """The reference run and its per-request PSNR (run after the timed work)."""
        held = {}

        def untimed():  # on the step's stream, after the batch's end event
            ref = self.model.run_stages({"frames": frames, "size": size})["out"]
            err = (out.clamp(0, 1) - ref.clamp(0, 1)).square().flatten(1).mean(1)
            held["mse"] = torch.stack([err[p.start:p.start + p.rows].mean() for p in parts])
            if held["mse"].is_cuda:
                held["done"] = torch.cuda.Event()
                held["done"].record()

        def later():  # at retirement, on whatever stream is current: wait for the work first
            if "mse" not in held:
                return []
            if "done" in held:
                held["done"].synchronize()
            return [(p.request_id, Fidelity(_psnr(m))) for p, m in
                    zip(parts, held["mse"].tolist())]

        return untimed, later


def _psnr(mse: float) -> float:
    if mse <= 0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, -10.0 * math.log10(mse))


def _offset_parts(items, item) -> list:
    """The item's parts with `start` counted from the batch's first window."""
    from dataclasses import replace

    offset = 0
    for it in items:
        if it is item:
            return [replace(p, start=offset + p.start) for p in it.parts]
        offset += it.rows
    raise ValueError("item not in the batch")


def _counts(parts, stats) -> list:
    """Per request: tiles computed and in all, windows, windows run whole."""
    out = []
    for p in parts:
        own = stats[p.start:p.start + p.rows]
        out.append((p.request_id, ChangeCounts(sum(s.tiles for s in own),
                                               sum(s.tiles_total for s in own), len(own),
                                               sum(s.whole for s in own))))
    return out
