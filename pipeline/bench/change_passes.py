"""Timed passes of the full model and of change-based inference over the windows of one clip, and
their fidelity, for the threshold sweep (change_sweep.py).

A pass runs every window of the clip in order, one at a time, as one stream (so the first window
with tiles runs whole, and a whole window renews the gates every `refresh` windows). Each window's
model time is taken with the bench's Clock (CUDA events on a GPU, the host clock on the CPU) and
includes, for change-based inference, the change test, the gather, the tiles and the compose.
A pass's time is the sum over its windows; after `warmup` untimed passes (which also let cuDNN
tune every tile-batch shape the clip produces), the median of `repeats` timed passes counts, and
its per-window times say how much of it went to windows run whole to renew the gates.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from models.flavr.change_based import ChangeBasedFLAVR, ChangeConfig, computed_pixels
from models.flavr.change_plan import WindowStats
from models.flavr.model import FLAVR
from pipeline.analysis.fidelity import Fidelity, fidelity
from pipeline.bench.timing import Clock

STREAM = "clip"
LIVELY_GAIN = math.sqrt(6.0)


def liven(model: FLAVR) -> FLAVR:
    """Scale a randomly initialised FLAVR's convolution weights by sqrt(6), in place. PyTorch's
    default init shrinks activations by about that factor per layer, which leaves the network's
    own contribution to its output ~1% of the frame's, too little for tiling errors to show;
    rescaled it is ~10%. Random weights either way: timings are real, frames are not."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose3d)):
                module.weight.mul_(LIVELY_GAIN)
    return model


@dataclass
class PassResult:
    ms: float  # median over the timed passes of the pass's summed model time
    window_ms: list[float]  # per window, in the pass whose sum is that median
    outputs: list[torch.Tensor]  # per window (1, K, 3, H, W), from the last pass
    stats: list[WindowStats] | None = None
    computed: list[torch.Tensor] | None = None  # per window (1, H, W) bool


def _timed(clock: Clock, windows: torch.Tensor, call, warmup: int, repeats: int, reset=None):
    """Run `call(window)` on every window, warmup + repeats times; per pass, the sum of the
    per-window times; returns (median of the timed sums, that pass's per-window times, results
    of the last pass)."""
    passes, results = [], []
    for p in range(warmup + repeats):
        if reset:
            reset()
        marks, results = [], []
        with torch.inference_mode():
            for i in range(windows.shape[0]):
                start = clock.mark()
                results.append(call(windows[i:i + 1]))
                marks.append((start, clock.mark()))
        clock.sync()
        if p >= warmup:
            passes.append([clock.ms(a, b) for a, b in marks])
    middle = sorted(passes, key=sum)[(len(passes) - 1) // 2]  # the median pass (lower of two)
    return sum(middle), middle, results


def full_pass(model: FLAVR, windows: torch.Tensor, clock: Clock, warmup: int,
              repeats: int) -> PassResult:
    return PassResult(*_timed(clock, windows, model, warmup, repeats))


def change_pass(model: FLAVR, config: ChangeConfig, windows: torch.Tensor, clock: Clock,
                warmup: int, repeats: int) -> PassResult:
    cb = ChangeBasedFLAVR(model, config)

    def call(window):
        state = cb.run_stages(cb.begin(window, [STREAM]), "stem", "head")
        return cb.finish(state), state.plan

    ms, window_ms, results = _timed(clock, windows, call, warmup, repeats, reset=cb.reset)
    outputs, plans = (list(r) for r in zip(*results))
    # Measurement only, so outside the timed calls: which pixels the model computed.
    return PassResult(ms, window_ms, outputs, [p.stats[0] for p in plans],
                      [computed_pixels(p) for p in plans])


def refresh_share(result: PassResult) -> float:
    """Share of a change-based pass's time spent in windows run whole only to renew gates."""
    renew = sum(ms for ms, s in zip(result.window_ms, result.stats)
                if s.reason in ("first", "refresh"))
    return renew / result.ms if result.ms else 0.0


def pass_fidelity(result: PassResult, reference: PassResult) -> tuple[Fidelity, float]:
    """Fidelity of the whole clip as one request, and the lowest PSNR of a single window."""
    out, ref = torch.cat(result.outputs), torch.cat(reference.outputs)
    clip = fidelity(out, ref, [s.tiles for s in result.stats], [s.tiles_total for s in result.stats],
                    torch.cat(result.computed))
    worst = min(fidelity(o, r, [s.tiles], [s.tiles_total]).psnr_db
                for o, r, s in zip(result.outputs, reference.outputs, result.stats))
    return clip, worst


def tiled_rows(result: PassResult) -> list[int]:
    return [i for i, s in enumerate(result.stats) if not s.whole]


def tile_psnr(outputs: list[torch.Tensor], reference: PassResult, result: PassResult
              ) -> float | None:
    """PSNR against the full model on the pixels that `result` computed as tiles, over the
    windows it ran as tiles (windows run whole would add exact pixels); `outputs` holds one
    output per such window. None when no window ran as tiles with a tile."""
    rows = tiled_rows(result)
    if not rows:
        return None
    ref = torch.cat([reference.outputs[i] for i in rows])
    mask = torch.cat([result.computed[i] for i in rows])
    return fidelity(torch.cat(outputs), ref, [1], [1], mask).psnr_computed_db


def gate_study(model: FLAVR, config: ChangeConfig, windows: torch.Tensor, reference: PassResult,
               result: PassResult) -> dict[str, float | None]:
    """`tile_psnr` with each source of gate attention, on the windows `result` (cached gates)
    ran as tiles, untimed: "cached" the stream's last whole window's (as in `result`), "own"
    each tile's own average, "exact" the window's own whole-frame attention (recorded by running
    the same window whole first), which leaves only the halo's error. The tiles are the same in
    all three: the plan does not depend on the gates."""
    own = ChangeBasedFLAVR(model, dataclasses.replace(config, gates="own"))
    exact = ChangeBasedFLAVR(model, config)
    outs: dict[str, list] = {"own": [], "exact": []}
    with torch.inference_mode():
        for i in tiled_rows(result):
            window = windows[i:i + 1]
            outs["own"].append(_run(own, window))
            exact.reset()
            _run(exact, window)  # runs whole, as the stream's first window with tiles
            outs["exact"].append(_run(exact, window))
    study = {"cached": tile_psnr([result.outputs[i] for i in tiled_rows(result)], reference, result)}
    study.update({name: tile_psnr(o, reference, result) for name, o in outs.items()})
    return study


def _run(cb: ChangeBasedFLAVR, window: torch.Tensor) -> torch.Tensor:
    return cb.finish(cb.run_stages(cb.begin(window, [STREAM]), "stem", "head"))


def still_psnr(model: FLAVR, frame: torch.Tensor) -> float:
    """PSNR of the full model's new frame for four copies of `frame` (3, H, W) against the frame:
    how far these weights are from reproducing a still scene, the most a copy can differ by."""
    with torch.inference_mode():
        window = frame[:, None].repeat(1, 4, 1, 1)[None]
        out = model(window)
    return fidelity(out, window[:, :, 1][:, None].expand_as(out), [1], [1]).psnr_db
