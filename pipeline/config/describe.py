"""The resolved placement in words (`benchmark.py --dry-run`): steps, replicas per GPU, queues."""
from __future__ import annotations

import collections

from models.registry import served_model
from pipeline.analysis.records import SINK
from pipeline.config.files import resolve_checkpoint
from pipeline.config.schema import Config


def _weights(cfg: Config) -> str:
    """The weights the run will load, as the run resolves them (a missing file is the run's
    ConfigError here too)."""
    path = resolve_checkpoint(cfg)
    if path is None:
        return "none (random weights)"
    return str(path) + (" (the project's weights for this model)"
                        if cfg.model.checkpoint is None else "")


def describe_placement(cfg: Config, cpu_mode: bool | None = None) -> str:
    """The resolved placement, readable: steps, replicas per GPU, and every queue.

    cpu_mode: say that GPU ids are logical device ids (None: assume so when cfg.device is cpu).
    """
    if cpu_mode is None:
        cpu_mode = cfg.device == "cpu"
    lines = [f"config {cfg.name}" + (f" ({cfg.source})" if cfg.source else "")
             + f", device {cfg.device}, launcher {cfg.launcher}"]
    v = cfg.videos
    if v.synthetic is not None:
        s = v.synthetic
        lines.append(f"videos    synthetic: {s.count} clips {s.width}x{s.height}, {s.frames} frames at "
                     f"{s.fps:g} fps, {s.codec}, seed {s.seed}"
                     + (f", {100 * s.moving_fraction:g}% of the frame moving (static camera)"
                        if s.moving_fraction is not None else ""))
    else:
        lines.append(f"videos    {', '.join(v.paths)}")
    lines.append(f"          a clip over {v.max_pixels} pixels per frame (videos.max_pixels) "
                 "fails its own request")
    m = cfg.model
    served, n = served_model(m), cfg.frames_per_request
    rows, outs, unit = served.rows_per_request(n), served.outputs_per_request(n), served.output_unit
    what = f"{n} input frames each"
    if v.streams is not None:  # a running stream's segment (models/base.py, streams)
        rows = served.rows_per_segment(n)
        outs = served.outputs_per_segment(rows)
        what = (f"the next {n} frames of one of {v.streams.count} streams (looping the clips, "
                f"decoder kept open; Poisson per stream)")
    lines.append(f"requests  {what} -> {rows} {served.row_name}{'s' * (rows != 1)} "
                 f"-> {outs} output {unit.removesuffix('s') if outs == 1 else unit}")
    if m.resolution is not None:
        res = f"{m.resolution[0]}x{m.resolution[1]} (HxW)"
    elif served.input_size is not None:
        res = f"{served.input_size[0]}x{served.input_size[1]} (HxW, the model's input size)"
    else:
        res = "native"
    flags = [f for f in ("channels_last", "compile", "cuda_graphs", "trust_checkpoint")
             if getattr(m, f)]
    lines.append(f"model     {served.describe()}, {m.precision}, resolution {res}, "
                 f"checkpoint {_weights(cfg)}" + (f", {', '.join(flags)}" if flags else ""))
    c = m.change_based
    if c is not None:
        lines.append(f"          change-based: tiles of {c.tile} px with a {c.halo} px halo where "
                     f"an 8x8 block changed by more than {c.threshold}; whole above "
                     f"{c.fallback:g} of the frame and every {c.refresh} windows of a stream; "
                     f"gates {c.gates}" + ("; fidelity run (full model too)" if c.check else ""))
    if cpu_mode:
        lines.append("          (CPU mode: GPU ids below are logical device ids)")
    lines.append("")

    first = cfg.steps[0].name if cfg.steps else "?"
    rows = [("step", "kind", "work", "replicas", "output queue"),
            ("client", "-", "issues requests", "1 (host)", f"global -> {first}")]
    for i, step in enumerate(cfg.steps):
        if step.kind == "model":
            work = f"{step.stages[0]}..{step.stages[1]}" if step.stages else "?"
        elif step.kind == "sleep":
            work = f"TEST sleep {step.sleep_ms:g} ms" if step.sleep_ms is not None else "TEST sleep"
        else:
            work = "clip -> frames"
        nxt = cfg.steps[i + 1].name if i + 1 < len(cfg.steps) else SINK
        if i + 1 == len(cfg.steps):
            queue = "global -> sink" + (" (per_gpu ignored: the sink queue is always global)"
                                        if step.queue == "per_gpu" else " (the sink queue is always global)")
        elif step.queue == "per_gpu":
            queue = (f"per_gpu -> {nxt} (one queue per GPU: "
                     + ", ".join(str(g) for g in sorted(set(step.gpus), key=str)) + ")")
        else:
            queue = f"global -> {nxt}"
        rows.append((step.name, step.kind, work, _replicas_text(step.gpus), queue))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    for r in rows:
        lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1])
    lines.append("")
    gpus = sorted({g for s in cfg.steps for g in s.gpus}, key=str)  # ids, or "node:id"
    for g in gpus:
        here = [f"{s.name} x{s.gpus.count(g)}" for s in cfg.steps if g in s.gpus]
        lines.append(f"GPU {g}: " + ", ".join(here))
    return "\n".join(lines)


def _replicas_text(gpus: list[int]) -> str:
    counts = collections.Counter(gpus)
    parts = [f"GPU {g}" + (f" x{n}" if n > 1 else "")
             for g, n in sorted(counts.items(), key=lambda kv: str(kv[0]))]
    return f"{len(gpus)}: " + ", ".join(parts)
