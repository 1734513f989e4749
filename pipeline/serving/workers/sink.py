"""The sink process: the end of the pipeline. It waits (on the host) for each final slot's GPU
work, stamps the request's completion, optionally writes the interpolated video, and gives the
slot back. Completion is stamped before any saving, so saving never inflates latency.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.clock import now
from pipeline.serving.transport.queues import get_batch
from pipeline.serving.transport.slots import PoolReader, load_handle
from pipeline.serving.workers.child import ChildContext, run_child


@dataclass
class SinkSpec:
    in_queue: object
    upstream_free: dict  # pool id -> free queue
    factor: int
    save_dir: str | None  # write each request's interpolated video here
    save_tensors: bool  # with save_dir: the raw output frames as .pt instead (exact comparisons)
    check_outputs: bool  # verify every output value is finite


def sink_main(ctx: ChildContext, spec: SinkSpec) -> None:
    run_child(ctx, lambda c: _serve(c, spec))


def _serve(ctx: ChildContext, spec: SinkSpec) -> None:
    ctx.ready()
    handles = ctx.wait_start()
    if handles is None:
        return
    readers = {}
    for data in handles.values():
        h = load_handle(data)
        readers[h.pool_id] = PoolReader(h, spec.upstream_free[h.pool_id], torch.device(h.device))
    ctx.attached()
    while not ctx.should_stop():
        batch, t_get = get_batch(spec.in_queue, 1, ctx.should_stop)
        if not batch:
            break
        item = batch[0]
        reader = readers[item.pool_id]
        reader.wait_host(item.slot)
        t_done = now()
        out = reader.tensors(item).get("out")
        finite = [True] * len(item.parts)
        if spec.check_outputs and out is not None:  # one host read per item, not per request
            finite = torch.stack([torch.isfinite(out[p.start:p.start + p.rows]).all()
                                  for p in item.parts]).tolist()
        for p, ok in zip(item.parts, finite):
            status = {"status": "ok", "error": ""}
            if not ok:
                status = {"status": "error", "error": "output holds NaN or Inf values"}
            ctx.record(p.request_id, {
                "sink.queue_wait_s": t_get - item.t_put, "sink.handoff_s": 0.0,
                "done_s": t_done, "output_frames": (p.frames - 1) * spec.factor + 1, **status})
            if spec.save_dir and out is not None and status["status"] == "ok":
                try:
                    # a copy: the slot goes back to its producer below
                    _save(spec, p, out[p.start:p.start + p.rows].to("cpu", copy=True))
                except Exception as exc:  # saving is a by-product; the request itself is done
                    ctx.notice(f"request {p.request_id}: could not save: {exc}")
        reader.release(item.slot)


def _save(spec: SinkSpec, part, new_frames: torch.Tensor) -> None:
    """Interleave the clip's input frames with the new ones and encode them."""
    from models.flavr.windows import interleave_tensor
    from pipeline.media.decode import FrameDecoder
    from pipeline.media.encode import VideoWriter
    from pipeline.media.probe import probe

    if spec.save_tensors:
        torch.save(new_frames, Path(spec.save_dir) / f"request{part.request_id:06d}.pt")
        return
    h, w = new_frames.shape[-2:]
    frames = FrameDecoder("cpu", resolution=(h, w)).decode(part.video, part.frames)
    fps = probe(part.video).fps * spec.factor
    path = Path(spec.save_dir) / f"request{part.request_id:06d}-{Path(part.video).stem}.mp4"
    with VideoWriter(path, fps, w, h) as writer:
        writer.write(interleave_tensor(frames, new_frames))
