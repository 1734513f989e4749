"""A decode worker process: turns requests (clip paths) into the model's input rows on its device
(FLAVR: sliding windows of 4 frames; R(2+1)D: clips of 16).

One worker per GPU entry of the decode step. The decoder (NVDEC through PyNvVideoCodec or DALI,
DALI or PyAV on the CPU) is chosen per clip by `pipeline.media.decode`; the rows land in a slot of
this worker's pool and the slot is handed to the first model step.

A stream's segment (a request with a stream id) is read from the stream's own decoder, open and
positioned since its previous segment (pipeline.media.streams); the worker keeps the frames
around the segment that its rows read (ServedModel.stream_behind / stream_ahead), so the rows of
a stream's segments are those of the whole video. The streams this worker owns are opened before
it reports ready.

What the decoder decides on its own (a codec this GPU's NVDEC lacks, decoded by PyAV from then
on) becomes one notice of the run, from the worker that found it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pipeline.analysis.records import StepStamps
from pipeline.clock import now
from pipeline.errors import VideoError
from pipeline.serving.frame_limits import FrameLimits
from pipeline.serving.steps import decode_output_spec
from pipeline.serving.transport.items import Item, Part
from pipeline.serving.transport.queues import Output, QueueFull, get_batch
from pipeline.serving.transport.slots import SlotPool, SlotTooSmall, largest
from pipeline.serving.workers.child import ChildContext, run_child


@dataclass
class DecodeSpec:
    step_name: str
    replica: int
    model: object  # the ServedModel (models/base.py): how frames become rows of model input
    resolution: tuple[int, int] | None  # frames are resized to this; None keeps each clip's size
    sizes: list  # distinct (H, W) frame sizes of the run: the pool holds the largest
    frames_per_request: int
    backend: str  # "auto" (by device and codec) or a backend of pipeline.media.decode
    warmup_video: str | None
    n_slots: int
    in_queue: object
    output: Output
    free_queue: object
    limits: FrameLimits | None = None  # clips outside fail their request before decoding
    # A stream workload: the streams this worker owns (stream id -> file), else None (clips).
    streams: dict | None = field(default=None)


def decode_main(ctx: ChildContext, spec: DecodeSpec) -> None:
    run_child(ctx, lambda c: _serve(c, spec))


def _serve(ctx: ChildContext, spec: DecodeSpec) -> None:
    from pipeline.media.decode import FrameDecoder
    from pipeline.media.streams import StreamSet

    device = torch.device(ctx.torch_device)
    decoder = FrameDecoder(ctx.torch_device, resolution=spec.resolution, backend=spec.backend)
    model, n_frames = spec.model, spec.frames_per_request
    streams = StreamSet(decoder, model.stream_behind, model.stream_ahead, n_frames)
    for stream_id, path in (spec.streams or {}).items():
        try:
            streams.open(stream_id, path)
        except VideoError:
            pass  # its segments fail with the reason
    if spec.warmup_video and spec.streams is None:
        # Builds the decoder pipelines and allocations on a real clip before the clock starts.
        try:
            spec.model.make_rows(decoder.decode(spec.warmup_video, spec.frames_per_request))
        except VideoError:
            pass
    _pass_on_notices(ctx, decoder)
    rows = (model.rows_per_request(n_frames) if spec.streams is None
            else model.rows_per_segment(n_frames))
    pool = SlotPool(ctx.name, device, largest([decode_output_spec(spec.model, rows, h, w)
                                               for h, w in spec.sizes]),
                    spec.n_slots, spec.free_queue)
    router = spec.output.router(ctx.output_key)
    ctx.ready(pool.handle_bytes())
    if ctx.wait_start() is None:
        return
    ctx.attached()
    try:
        _loop(ctx, spec, decoder, streams, pool, router, device, model)
    finally:
        streams.close()


def _loop(ctx, spec, decoder, streams, pool, router, device, model) -> None:
    while not ctx.should_stop():
        batch, _ = get_batch(spec.in_queue, 1, ctx.should_stop)
        if not batch:
            break
        taken = now()
        req = batch[0]
        # The slot first, so the request's path reads like a runner's: slot wait, then the work.
        slot = pool.acquire(ctx.should_stop)
        if slot is None:
            break
        slot_held = now()
        try:
            if spec.limits is not None:  # probing is cached: the decoder's own probe is free
                spec.limits.check(req.video)
            position = 0
            if req.stream_id is None:
                frames = decoder.decode(req.video, req.frames)
                rows_in = model.make_rows(frames)
                n_used = frames.shape[0]
            else:
                frames, behind, ahead = streams.segment(req.stream_id, req.video, req.segment,
                                                        req.frames)
                rows_in = model.make_segment_rows(frames, behind, ahead)
                n_used = frames.shape[0] - behind - ahead
                position = streams.first_frame(req.stream_id)
            if device.type == "cuda":
                torch.cuda.current_stream(device).synchronize()
            decoded = now()
            n, layout = pool.write(slot, {"frames": rows_in})
            pool.publish(slot)
            if device.type == "cuda":
                # Decode is synchronous: its slot is written when it says so, and the copy's
                # time is its own publish time, not the next step's wait.
                torch.cuda.current_stream(device).synchronize()
            finished = now()
        except Exception as exc:  # a bad clip or a decoder crash on it fails that request only
            pool.give_back(slot)
            if isinstance(exc, (VideoError, SlotTooSmall)):
                detail = exc if isinstance(exc, VideoError) else f"{req.video}: {exc}"
            else:
                detail = f"{req.video}: {type(exc).__name__}: {exc}"
            ctx.fail(req.request_id, f"decode: {detail}")
            continue
        finally:
            _pass_on_notices(ctx, decoder)
        size = tuple(rows_in.shape[-2:])
        del frames, rows_in
        part = Part(req.request_id, 0, n, req.video, n_used, req.stream_id, req.segment, position)
        item = Item(pool.pool_id, slot, n, [part], size, layout)
        try:
            if not router.put(item, ctx.should_stop):
                break
        except QueueFull as exc:
            ctx.overflow([req.request_id], exc)
            pool.give_back(slot)
            continue
        ctx.record(req.request_id, StepStamps(
            spec.step_name, ctx.device_label, spec.replica, 1, taken=taken, gathered=taken,
            slot_held=slot_held, finished=finished, compute_s=decoded - slot_held,
            publish_s=finished - decoded, handed_on=now()))


def _pass_on_notices(ctx, decoder) -> None:
    for text in decoder.take_notices():
        ctx.notice(text)
