"""The client process: issues requests on the load generator's schedule into the decode queue.

Two phases. Warm-up requests go first, on a schedule of their own; the main process waits until
every one of them has finished, then sends the start of the measured schedule, so measured
requests never queue behind warm-up work (at -mi 0 they would all be due at once with it).

A stream's segments go to the input queue of the decode worker that owns the stream (one queue
per worker; workload.stream_owner), so one worker decodes all of them, in order; clip requests go
to the decode step's one queue.

Every request it handles is recorded (records.Admission: scheduled, sent and issued times); one
refused by a full queue is recorded as dropped, and under the 'stop' policy nothing is issued after
it.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.analysis.records import Admission, Outcome
from pipeline.clock import now
from pipeline.serving.loadgen import run_schedule
from pipeline.serving.transport.items import Request
from pipeline.serving.transport.queues import GLOBAL, QueueFull, Router
from pipeline.serving.workers.child import run_child
from pipeline.serving.workload import stream_owner


@dataclass
class ClientSpec:
    requests: list  # (request_id, video, frames, warmup, stream_id, segment), warm-ups first
    warmup_offsets: list  # seconds after the warm-up start, one per warm-up request
    offsets: list  # seconds after the measured start (t0), one per measured request
    out_queues: dict  # GLOBAL -> the decode step's queue; or decode replica -> its own queue
    queue_names: dict  # same keys -> queue name for messages
    bound: int
    on_full: str  # "stop" | "block"
    admit_closed: object  # shared flag (is_set): another queue overflowed, stop issuing


def client_main(ctx, spec: ClientSpec) -> None:
    run_child(ctx, lambda c: _serve(c, spec))


class _Issuer:
    """Puts requests into the first queue and records each one it handles."""

    def __init__(self, ctx, spec: ClientSpec):
        self.ctx, self.spec = ctx, spec
        self.routers = {key: Router(spec.out_queues, True, key, spec.queue_names, spec.bound,
                                    spec.on_full) for key in spec.out_queues}
        self.reason = ""

    def router(self, stream_id):
        if stream_id is None:
            return self.routers[GLOBAL]
        return self.routers[stream_owner(stream_id, len(self.routers))]

    def stopped(self) -> bool:
        return self.ctx.should_stop() or self.spec.admit_closed.is_set()

    def phase(self, requests: list, offsets: list, start: float) -> int:
        """Issue `requests` at start + offsets; returns how many were handled (admitted, or
        dropped at a full queue)."""
        handled = [0]

        def send(i: int, scheduled: float) -> bool:
            sent = now()
            if self.spec.admit_closed.is_set():
                self.reason = "admission closed after a queue overflowed"
                return False
            rid, video, frames, warmup, stream_id, segment = requests[i]
            handled[0] += 1
            request = Request(rid, video, frames, warmup, scheduled, sent, stream_id=stream_id,
                              segment=segment)
            try:
                ok = self.router(stream_id).put(request, self.ctx.should_stop)
            except QueueFull as exc:
                self.ctx.record(rid, Admission(scheduled, sent, None))
                self.ctx.record(rid, Outcome("dropped", str(exc)))
                self.reason = str(exc)
                return False
            if ok:  # in the queue now: the put's own time (retries under 'block') is the client's
                self.ctx.record(rid, Admission(scheduled, sent, now()))
            else:
                handled[0] -= 1  # the run is stopping: never issued
            return ok

        run_schedule(offsets, start, send, self.stopped)
        return handled[0]


def _serve(ctx, spec: ClientSpec) -> None:
    ctx.ready()
    t_warm = ctx.wait_start()
    if t_warm is None:
        return
    issuer = _Issuer(ctx, spec)
    n_warm = len(spec.warmup_offsets)
    warm = issuer.phase(spec.requests[:n_warm], spec.warmup_offsets, t_warm)
    ctx.warmed(warm, issuer.reason)
    t0 = ctx.wait_measure()
    if t0 is None:
        return
    sent = warm + issuer.phase(spec.requests[n_warm:], spec.offsets, t0)
    ctx.client_done(sent, issuer.reason)
