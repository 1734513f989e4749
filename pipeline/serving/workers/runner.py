"""A runner process: one replica of one step, on one device, with its own CUDA stream.

Loop: take up to `batch` items from the input queue -> bring them onto this device (in place, or
a peer copy per group of tensors) -> take a slot of this runner's pool -> run the step's stage range
on this process's stream, writing each group of outputs into the slot (and marking it ready) as
soon as the stage that finishes it has run -> hand the slot to the next queue. GPU work is never
waited for in that loop: a thread stamps each batch's completion as it happens (_Completions), and
the loop gives back its input slots and reports its timings (records.StepStamps) once it has;
input slots that were copied from another GPU go back earlier, as their copies land
(transport/slot_returns.py).
"""
from __future__ import annotations

import collections
import contextlib
import queue as queue_module
import sys
import threading
from dataclasses import dataclass, field, replace

import torch

from pipeline.analysis.records import StepStamps
from pipeline.clock import now
from pipeline.serving.steps import is_out_of_memory, make_step
from pipeline.serving.transport.gather import InputGather
from pipeline.serving.transport.items import Item
from pipeline.serving.transport.queues import Output, QueueFull, get_batch
from pipeline.serving.transport.slots import (
    SlotPool,
    largest,
    load_handle,
    open_reader,
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
    """Start/end marks on the step's stream: CUDA events on a GPU, host clock on the CPU.
    `blocking`: the end event puts a thread waiting on it to sleep instead of spinning."""

    def __init__(self, stream, blocking: bool = False):
        self.stream = stream
        if stream is not None:
            self.start = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True, blocking=blocking)

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

    def seconds(self) -> float:
        if self.stream is not None:
            return self.start.elapsed_time(self.end) / 1000.0
        return self.t1 - self.t0


@dataclass
class _InFlight:
    items: list
    taken: float  # host: the batch's turn began
    total: _Timer  # the whole step: its stages and its slot writes
    writes: list = field(default_factory=list)  # one _Timer per group written into the slot
    inputs: object = None  # the gathered inputs (gather.Gathered)
    returned: frozenset = frozenset()  # items whose slots went back as their copies landed
    gathered: float | None = None  # host: inputs gathered (copies issued)
    slot_held: float | None = None  # host: output slot in hand, work launched
    handed_on: float | None = None  # host: the output item was in the next queue
    finished: float | None = None  # host: the device work was seen complete
    failed: bool = False
    observed: threading.Event = field(default_factory=threading.Event)
    result: object = None  # what the step's call left besides its outputs (steps.ModelStep.run)


class _Completions:
    """Stamps when each batch's device work completes, as soon as it does.

    A thread of the runner waits on the batches' end events one after the other, in launch order,
    which is the order they complete in on the runner's one stream; each is a blocking-sync event,
    so the thread sleeps until the GPU signals it. A batch's completion is then known on the host
    within microseconds, whatever the main thread is doing (launching the next batch, waiting on
    a full queue), and no other GPU's work is waited for on the way. On the CPU the work is done
    when the step returns: no thread."""

    def __init__(self, device: torch.device, name: str):
        self.device = device
        self.cuda = device.type == "cuda"
        self.queue: queue_module.Queue = queue_module.Queue()
        if self.cuda:
            self.thread = threading.Thread(target=self._watch, name=f"{name}-completions",
                                           daemon=True)
            self.thread.start()

    def watch(self, flight: _InFlight) -> None:
        if not self.cuda:
            flight.finished = flight.total.t1
            flight.observed.set()
        else:
            self.queue.put(flight)

    def _watch(self) -> None:
        torch.cuda.set_device(self.device)  # the current device is per thread
        while True:
            flight = self.queue.get()
            if flight is None:
                return
            try:
                flight.total.end.synchronize()
                flight.finished = now()
            finally:  # a CUDA error surfaces in the main thread; never leave it waiting here
                flight.observed.set()

    def close(self) -> None:
        if self.cuda:
            self.queue.put(None)
            self.thread.join(timeout=5.0)


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
        if self.cuda:
            # The completion thread needs the GIL to stamp a batch; the default switch interval
            # (5 ms) could keep it waiting that long behind this thread launching kernels.
            sys.setswitchinterval(0.0002)
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
        self.gather = InputGather(self.device, self.stream, self.ctx.name)
        self.router = spec.output.router(self.ctx.output_key)
        self.ctx.ready(self.pool.handle_bytes())
        handles = self.ctx.wait_start()
        if handles is None:
            return
        for data in handles.values():
            handle = load_handle(data)
            self.gather.attach(open_reader(handle, spec.upstream_free[handle.pool_id], self.device))
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
                self.step.run(fake, size, n, lambda group, tensors, n_rows=None: None)
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
        self.completions = _Completions(self.device, ctx.name)
        try:
            while not ctx.should_stop():
                items, _ = get_batch(self.spec.in_queue, self.spec.batch, ctx.should_stop,
                                     idle=self._retire_done)
                if not items:
                    break
                # One model call per frame size among the items taken; a later size's batch
                # waits its turn (its queue wait runs until then).
                for size in dict.fromkeys(it.size for it in items):
                    self._run_batch([it for it in items if it.size == size], now())
                self._retire_done()
                # Bound the work queued ahead on the GPU (and the input slots held).
                while len(self.pending) > 2:
                    self._retire(self.pending.popleft(), wait=True)
            while self.pending:
                self._retire(self.pending.popleft(), wait=True)
        finally:
            self.completions.close()
            self.gather.close()

    def _run_batch(self, items: list[Item], taken: float) -> None:
        parts, offset = [], 0
        for item in items:
            for p in item.parts:
                parts.append(replace(p, start=offset + p.start))  # keeps the stream fields
            offset += item.rows
        flight = _InFlight(items, taken, _Timer(self.stream, blocking=True))
        slot = None
        try:
            with torch.inference_mode(), _on(self.stream):
                flight.inputs = self.gather.gather(items)
                flight.returned = flight.inputs.returned
                flight.gathered = now()
                # The slot is taken before the stages run: groups are written as they finish.
                slot = self.pool.acquire(self.ctx.should_stop)
                flight.slot_held = now()
                if slot is None:  # the run is stopping
                    flight.failed = True
                else:
                    layout, rows = {}, set()

                    def publish(group: int, tensors: dict, n_rows: int | None = None) -> None:
                        timer = _Timer(self.stream)
                        timer.begin()
                        n, written = self.pool.write(slot, tensors, n_rows)
                        timer.finish()
                        self.pool.publish(slot, self.stream, group)
                        flight.writes.append(timer)
                        layout.update(written)
                        rows.add(n)

                    flight.total.begin()
                    shape, started = (items[0].size, len(parts)), now()
                    with self.ctx.allow_silence(self._silence_allowed(shape)):
                        flight.result = self.step.run(flight.inputs.tensors, items[0].size,
                                                      len(parts), publish, items, flight.inputs)
                    self.call_s[shape] = now() - started
                    flight.total.finish()
                    if flight.result is not None and flight.result.untimed is not None:
                        # Outside the timed work (a change-based fidelity reference).
                        with self.ctx.allow_silence(self._silence_allowed(shape)):
                            flight.result.untimed()
                    if len(rows) != 1:
                        raise RuntimeError(f"step '{self.spec.step_name}' wrote groups with "
                                           f"different row counts {sorted(rows)}")
            if not flight.failed:
                meta = flight.result.meta if flight.result is not None else None
                out_item = Item(self.pool_id, slot, rows.pop(), parts, items[0].size, layout,
                                change=meta)
                # Watched from now: a put that waits on a full queue must not delay the stamp.
                self.completions.watch(flight)
                if self.router.put(out_item, self.ctx.should_stop):
                    slot = None  # the consumer gives it back
                    flight.handed_on = now()
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
            flight.inputs = None  # frees what the batch took
        if flight.failed and self.cuda:
            # Its inputs are given back at once: let the GPU finish with them first.
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
        if flight.failed and flight.handed_on is None:
            flight.observed.set()  # nothing to observe (or already being watched: harmless)
        if slot is not None:
            self.pool.give_back(slot)
        self.pending.append(flight)

    def _fail(self, parts, reason: str) -> None:
        for p in parts:
            self.ctx.fail(p.request_id, reason)

    def _retire_done(self) -> None:
        while self.pending and self.pending[0].observed.is_set():
            self._retire(self.pending.popleft(), wait=False)

    def _retire(self, flight: _InFlight, wait: bool) -> None:
        """The batch's device work is complete (or waited for): give back its inputs, report."""
        if wait:
            flight.observed.wait()
        # Reports the step left (change-based counts, fidelity) go before the step's stamps,
        # which can make the request final; reading them may wait on the untimed work that still
        # reads the inputs, so before the inputs are given back.
        reports = (flight.result.all_reports()
                   if flight.result is not None and not flight.failed else [])
        self.gather.release(flight.items, flight.returned)
        if flight.failed:
            return
        # Slot writes are interleaved with the stages on one stream: compute is the rest.
        publish_s = sum(t.seconds() for t in flight.writes)
        stamps = StepStamps(
            self.spec.step_name, self.ctx.device_label, self.spec.replica,
            batch=sum(len(item.parts) for item in flight.items),
            taken=flight.taken, gathered=flight.gathered, slot_held=flight.slot_held,
            finished=flight.finished, compute_s=flight.total.seconds() - publish_s,
            publish_s=publish_s, handed_on=flight.handed_on,
            handoff_s=flight.inputs.copy_seconds(),
            handoff_exposed_s=flight.inputs.exposed_seconds())
        for rid, record in reports:
            self.ctx.record(rid, record)
        for item in flight.items:
            for p in item.parts:
                self.ctx.record(p.request_id, stamps)


def _on(stream):
    """`torch.cuda.stream(s)` when s is a stream; nothing on the CPU."""
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
