"""A runner process: one replica of one step, on one device, with its own CUDA stream.

Loop: take up to `batch` items from the input queue -> bring them onto this device (in place, or
a peer copy per group of tensors) -> take a slot of this runner's pool -> run the step's stage range
on this process's stream, writing each group of outputs into the slot (and marking it ready) as
soon as the stage that finishes it has run -> hand the slot to the next queue. GPU work is never
waited for in that loop: a batch's input slots are given back, and its CUDA-event timings read, once
its events have completed, which is checked while waiting for the next batch.
"""
from __future__ import annotations

import collections
import contextlib
from dataclasses import dataclass

import torch

from pipeline.clock import now
from pipeline.serving.steps import is_out_of_memory, make_step
from pipeline.serving.transport.items import Item, Part
from pipeline.serving.transport.queues import Output, QueueFull, get_batch
from pipeline.serving.transport.slots import (
    InputGather,
    PoolReader,
    SlotPool,
    largest,
    load_handle,
)
from pipeline.serving.workers.child import ChildContext, run_child

WARM_SIZES = 4  # frame sizes warmed up before the start; others autotune when first seen


@dataclass
class RunnerSpec:
    step_name: str
    step_cfg: object
    model_cfg: object
    replica: int
    sizes: list  # distinct (H, W) frame sizes of the run; the first is the usual one
    rows_per_request: int  # windows of one request
    batch: int  # requests per model call (-b)
    n_slots: int
    in_queue: object
    output: Output
    free_queue: object  # this runner's pool: free slot ids
    upstream_free: dict  # pool id -> free queue of that producer's pool


class _Timer:
    """Start/end marks on the step's stream: CUDA events on a GPU, host clock on the CPU."""

    def __init__(self, stream):
        self.stream = stream
        if stream is not None:
            self.start = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)

    def begin(self):
        if self.stream is not None:
            self.start.record(self.stream)
        else:
            self.t0 = now()

    def finish(self):
        if self.stream is not None:
            self.end.record(self.stream)
        else:
            self.t1 = now()

    def done(self) -> bool:
        return self.stream is None or self.end.query()

    def seconds(self) -> float:
        if self.stream is not None:
            return self.start.elapsed_time(self.end) / 1000.0
        return self.t1 - self.t0


@dataclass
class _InFlight:
    items: list
    t_get: float
    total: _Timer  # the whole step: its stages and its slot writes
    writes: list  # one _Timer per group written into the slot
    gathered: object
    failed: bool = False


def runner_main(ctx: ChildContext, spec: RunnerSpec) -> None:
    run_child(ctx, lambda c: _Runner(c, spec).serve())


class _Runner:
    def __init__(self, ctx: ChildContext, spec: RunnerSpec):
        self.ctx = ctx
        self.spec = spec
        self.device = torch.device(ctx.torch_device)
        self.cuda = self.device.type == "cuda"
        # High priority: the model's kernels go ahead of decode work sharing the GPU.
        self.stream = torch.cuda.Stream(self.device, priority=-1) if self.cuda else None
        self.pending: collections.deque[_InFlight] = collections.deque()
        self.pool_id = ctx.name
        self.call_s: dict[tuple, float] = {}  # (frame size, requests) -> its last call's time

    # -- start-up -------------------------------------------------------------------------------
    def serve(self) -> None:
        spec = self.spec
        self.step = make_step(spec.step_cfg, spec.model_cfg, self.device)
        self.step.setup()
        max_rows = spec.batch * spec.rows_per_request
        specs = [self.step.specs(max_rows, h, w) for h, w in spec.sizes]
        out_spec = largest([o for _, o in specs])
        for (h, w), (size_in, _) in zip(spec.sizes[:WARM_SIZES], specs):
            try:
                self._warm_up(size_in, (h, w))
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                # Requests of this size will fail alone with the same error; the rest can run.
                self.ctx.notice(f"warm-up at {h}x{w} ran out of GPU memory; requests of that size "
                                f"are expected to fail")
                if self.cuda:
                    torch.cuda.synchronize(self.device)
                    torch.cuda.empty_cache()
        self.pool = SlotPool(self.pool_id, self.device, out_spec, spec.n_slots, spec.free_queue,
                             self.step.output_groups())
        self.gather = InputGather(self.device, self.stream)
        self.router = spec.output.router(self.ctx.gpu)
        self.ctx.ready(self.pool.handle_bytes())
        handles = self.ctx.wait_start()
        if handles is None:
            return
        for data in handles.values():
            handle = load_handle(data)
            self.gather.attach(PoolReader(handle, spec.upstream_free[handle.pool_id], self.device))
        self.ctx.attached()
        self._loop()

    def _warm_up(self, in_spec, size) -> None:
        """Run every batch size this replica can see, so autotuning and lazy init happen now."""
        gen = torch.Generator(device="cpu").manual_seed(0)
        for n in range(1, self.spec.batch + 1):
            rows = n * self.spec.rows_per_request
            fake = {k: torch.rand((rows,) + s.shape[1:], generator=gen).to(self.device, s.dtype)
                    for k, s in in_spec.items()}
            t0 = now()
            with torch.inference_mode(), _on(self.stream):
                self.step.run(fake, size, n, lambda group, tensors: None)
            if self.cuda:
                torch.cuda.synchronize(self.device)
            self.call_s[(size, n)] = now() - t0

    def _silence_allowed(self, shape) -> float | None:
        """How long one model call of `shape` (frame size, requests) may keep this thread from
        beating: a few times its last call (a large batch on the CPU takes long); a shape never
        run before may first compile or autotune, which may take as long as start-up (None)."""
        seen = self.call_s.get(shape)
        return None if seen is None else 4.0 * seen

    # -- steady state ---------------------------------------------------------------------------
    def _loop(self) -> None:
        ctx = self.ctx
        while not ctx.should_stop():
            items, t_get = get_batch(self.spec.in_queue, self.spec.batch, ctx.should_stop,
                                     idle=self._retire_done)
            if not items:
                break
            # One model call per frame size among the items taken.
            for size in dict.fromkeys(it.size for it in items):
                self._run_batch([it for it in items if it.size == size], t_get)
            self._retire_done()
            # Bound the work queued ahead on the GPU (and the input slots held).
            while len(self.pending) > 2:
                self._retire(self.pending.popleft(), wait=True)
        while self.pending:
            self._retire(self.pending.popleft(), wait=True)

    def _run_batch(self, items: list[Item], t_get: float) -> None:
        parts, offset = [], 0
        for item in items:
            for p in item.parts:
                parts.append(Part(p.request_id, offset + p.start, p.rows, p.video, p.frames))
            offset += item.rows
        flight = _InFlight(items, t_get, _Timer(self.stream), [], None)
        slot = None
        try:
            with torch.inference_mode(), _on(self.stream):
                flight.gathered = self.gather.gather(items)
                # The slot is taken before the stages run: groups are written as they finish.
                slot = self.pool.acquire(self.ctx.should_stop)
                if slot is None:  # the run is stopping
                    flight.failed = True
                else:
                    layout, rows = {}, set()

                    def publish(group: int, tensors: dict) -> None:
                        timer = _Timer(self.stream)
                        timer.begin()
                        n, written = self.pool.write(slot, tensors)
                        timer.finish()
                        self.pool.publish(slot, self.stream, group)
                        flight.writes.append(timer)
                        layout.update(written)
                        rows.add(n)

                    flight.total.begin()
                    shape, t0 = (items[0].size, len(parts)), now()
                    with self.ctx.allow_silence(self._silence_allowed(shape)):
                        self.step.run(flight.gathered.tensors, items[0].size, len(parts),
                                      publish)
                    self.call_s[shape] = now() - t0
                    flight.total.finish()
                    if len(rows) != 1:
                        raise RuntimeError(f"step '{self.spec.step_name}' wrote groups with "
                                           f"different row counts {sorted(rows)}")
            if not flight.failed:
                out_item = Item(self.pool_id, slot, rows.pop(), parts, items[0].size, layout)
                if self.router.put(out_item, self.ctx.should_stop):
                    slot = None  # the consumer gives it back
        except QueueFull as exc:
            self.ctx.overflow([p.request_id for p in parts], exc)  # dropped, not lost
            flight.failed = True
        except Exception as exc:  # one bad batch must not take the replica down
            if is_out_of_memory(exc):
                h, w = items[0].size
                reason = (f"out of memory in step '{self.spec.step_name}' on "
                          f"{self.ctx.device_label} (batch of {len(parts)} requests, {h}x{w}): "
                          f"{str(exc).splitlines()[0]}")
            else:
                reason = (f"step '{self.spec.step_name}' on {self.ctx.device_label}: "
                          f"{type(exc).__name__}: {exc}")
            self._fail(parts, reason)
            flight.failed = True
            flight.gathered = None  # frees what the batch took
        if flight.failed and self.cuda:
            # Its inputs are given back at once: let the GPU finish with them first.
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
        if slot is not None:
            self.pool.give_back(slot)
        self.pending.append(flight)

    def _fail(self, parts, reason: str) -> None:
        for p in parts:
            self.ctx.fail(p.request_id, reason)

    def _retire_done(self) -> None:
        while self.pending and (self.pending[0].failed or self.pending[0].total.done()):
            self._retire(self.pending.popleft(), wait=False)

    def _retire(self, flight: _InFlight, wait: bool) -> None:
        """The batch's GPU work is complete (or waited for): give back its inputs, send timings."""
        if wait and self.cuda and not flight.failed:
            flight.total.end.synchronize()
        for item in flight.items:
            self.gather.readers[item.pool_id].release(item.slot)
        if flight.failed:
            return
        # Slot writes are interleaved with the stages on one stream: compute is the rest.
        publish_s = sum(t.seconds() for t in flight.writes)
        compute_s = flight.total.seconds() - publish_s
        handoff_s = flight.gathered.copy_seconds()
        exposed_s = flight.gathered.exposed_seconds()
        n_requests = sum(len(item.parts) for item in flight.items)
        step, ctx = self.spec.step_name, self.ctx
        for item in flight.items:
            for p in item.parts:
                ctx.record(p.request_id, {
                    f"{step}.device": ctx.device_label,
                    f"{step}.replica": self.spec.replica,
                    f"{step}.queue_wait_s": flight.t_get - item.t_put,
                    f"{step}.compute_s": compute_s,
                    f"{step}.handoff_s": handoff_s,
                    f"{step}.handoff_exposed_s": exposed_s,
                    f"{step}.publish_s": publish_s,
                    f"{step}.batch": n_requests,
                })


def _on(stream):
    """`torch.cuda.stream(s)` when s is a stream; nothing on the CPU."""
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
