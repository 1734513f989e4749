"""A decode worker process: turns requests (clip paths) into FLAVR windows on its device.

One worker per GPU entry of the decode step. The decoder (DALI on NVDEC, DALI or PyAV on the CPU)
is chosen per clip by `pipeline.media.decode`; the windows land in a slot of this worker's pool and the
slot is handed to the first model step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.clock import now
from pipeline.errors import VideoError
from pipeline.serving.steps import decode_output_spec
from pipeline.serving.transport.items import Item, Part
from pipeline.serving.transport.queues import Output, QueueFull, get_batch
from pipeline.serving.transport.slots import SlotPool, SlotTooSmall, largest
from pipeline.serving.workers.child import ChildContext, run_child


@dataclass
class DecodeSpec:
    step_name: str
    replica: int
    resolution: tuple[int, int] | None  # frames are resized to this; None keeps each clip's size
    sizes: list  # distinct (H, W) frame sizes of the run: the pool holds the largest
    frames_per_request: int
    backend: str  # "auto" (by device and codec) or a backend of pipeline.media.decode
    warmup_video: str | None
    n_slots: int
    in_queue: object
    output: Output
    free_queue: object


def decode_main(ctx: ChildContext, spec: DecodeSpec) -> None:
    run_child(ctx, lambda c: _serve(c, spec))


def _serve(ctx: ChildContext, spec: DecodeSpec) -> None:
    from models.flavr.windows import make_windows
    from pipeline.media.decode import FrameDecoder

    device = torch.device(ctx.torch_device)
    decoder = FrameDecoder(ctx.torch_device, resolution=spec.resolution, backend=spec.backend)
    if spec.warmup_video:
        # Builds the decoder pipelines and allocations on a real clip before the clock starts.
        try:
            make_windows(decoder.decode(spec.warmup_video, spec.frames_per_request))
        except VideoError:
            pass
    rows = spec.frames_per_request - 1
    pool = SlotPool(ctx.name, device, largest([decode_output_spec(rows, h, w) for h, w in spec.sizes]),
                    spec.n_slots, spec.free_queue)
    router = spec.output.router(ctx.gpu)
    ctx.ready(pool.handle_bytes())
    if ctx.wait_start() is None:
        return
    ctx.attached()
    step = spec.step_name
    while not ctx.should_stop():
        batch, t_get = get_batch(spec.in_queue, 1, ctx.should_stop)
        if not batch:
            break
        req = batch[0]
        base = {f"{step}.device": ctx.device_label, f"{step}.replica": spec.replica,
                f"{step}.queue_wait_s": t_get - req.t_put, f"{step}.batch": 1}
        try:
            t0 = now()
            frames = decoder.decode(req.video, req.frames)
            windows = make_windows(frames)
            if device.type == "cuda":
                torch.cuda.current_stream(device).synchronize()
            decode_s = now() - t0
        except Exception as exc:  # a bad clip or a decoder crash on it fails that request only
            ctx.record(req.request_id, base)
            detail = exc if isinstance(exc, VideoError) else f"{req.video}: {type(exc).__name__}: {exc}"
            ctx.fail(req.request_id, f"decode: {detail}")
            continue
        slot = pool.acquire(ctx.should_stop)
        if slot is None:
            break
        t1 = now()
        try:
            n, layout = pool.write(slot, {"frames": windows})
        except SlotTooSmall as exc:
            pool.give_back(slot)
            ctx.record(req.request_id, base)
            ctx.fail(req.request_id, f"decode: {req.video}: {exc}")
            continue
        pool.publish(slot)
        size = tuple(windows.shape[-2:])
        del frames, windows
        publish_s = now() - t1
        item = Item(pool.pool_id, slot, n, [Part(req.request_id, 0, n, req.video, n + 1)], size,
                    layout)
        ctx.record(req.request_id, {**base, f"{step}.compute_s": decode_s,
                                    f"{step}.handoff_s": 0.0, f"{step}.handoff_exposed_s": 0.0,
                                    f"{step}.publish_s": publish_s,
                                    "frames": n + 1})
        try:
            if not router.put(item, ctx.should_stop):
                break
        except QueueFull as exc:
            ctx.overflow([req.request_id], exc)
            pool.give_back(slot)
