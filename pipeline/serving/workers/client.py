"""The client process: issues requests on the load generator's schedule into the decode queue.

Every request it handles is recorded (scheduled and issued time); one refused by a full queue is
recorded as dropped, and under the 'stop' policy nothing is issued after it.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.clock import now
from pipeline.serving.loadgen import run_schedule
from pipeline.serving.transport.items import Request
from pipeline.serving.transport.queues import QueueFull, Router
from pipeline.serving.workers.child import run_child


@dataclass
class ClientSpec:
    requests: list  # (request_id, video, frames, warmup)
    offsets: list  # seconds after t0, one per request
    out_queue: object
    queue_name: str
    bound: int
    on_full: str  # "stop" | "block"
    admit_closed: object  # shared flag (is_set): another queue overflowed, stop issuing


def client_main(ctx, spec: ClientSpec) -> None:
    run_child(ctx, lambda c: _serve(c, spec))


def _serve(ctx, spec: ClientSpec) -> None:
    ctx.ready()
    t0 = ctx.wait_start()
    if t0 is None:
        return
    router = Router({None: spec.out_queue}, False, None, {None: spec.queue_name}, spec.bound,
                    spec.on_full)
    stopped = {"reason": ""}
    handled = [0]  # requests recorded: admitted, or dropped at a full queue

    def send(i: int, scheduled: float) -> bool:
        if spec.admit_closed.is_set():
            stopped["reason"] = "admission closed after a queue overflowed"
            return False
        rid, video, frames, warmup = spec.requests[i]
        req = Request(rid, video, frames, warmup, scheduled, issued=now())
        handled[0] += 1
        ctx.record(rid, {"video": video, "frames": frames, "warmup": int(warmup),
                         "scheduled_s": scheduled, "issued_s": req.issued})
        try:
            return router.put(req, ctx.should_stop)
        except QueueFull as exc:
            ctx.record(rid, {"status": "dropped", "error": str(exc)})
            stopped["reason"] = str(exc)
            return False

    stop = lambda: ctx.should_stop() or spec.admit_closed.is_set()
    run_schedule(spec.offsets, t0, send, stop)
    ctx.client_done(handled[0], stopped["reason"])
