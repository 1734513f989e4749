"""Moving tensors between pipeline processes without a host round trip.

Each producer owns a fixed pool of slots: buffers allocated once on its device and shared once, at
start-up, with every consumer (CUDA IPC on a GPU, shared memory on the CPU). A queue item then only
names a slot. Ordering on the GPU uses one inter-process CUDA event per slot: the producer records it
after writing the slot; the consumer makes its work wait on it; the consumer gives the slot back only
once its read has completed, so the producer never overwrites data still being read.

Same device: the consumer reads the slot in place (no copy). Other GPU: one peer copy, issued on a
stream of the *producer's* GPU that waits on the inter-process event; the consumer's stream then waits
on an ordinary event recorded after the copy. (Making a stream of the consumer's GPU wait directly
on another GPU's inter-process event was seen to hang.)
"""
from __future__ import annotations

import io
import pickle
import queue as queue_module
from dataclasses import dataclass
from multiprocessing.reduction import ForkingPickler

import torch


@dataclass(frozen=True)
class TensorSpec:
    """Largest shape a slot tensor must hold; dim 0 is the batch (rows) dimension."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        n = torch.empty((), dtype=self.dtype).element_size()
        for d in self.shape:
            n *= d
        return n


def spec_of(tensors: dict[str, torch.Tensor], rows: int) -> dict[str, TensorSpec]:
    """Specs that hold `rows` batch rows of tensors shaped like these."""
    return {k: TensorSpec((rows,) + tuple(v.shape[1:]), v.dtype) for k, v in tensors.items()}


@dataclass
class PoolHandle:
    """What a consumer needs to read a producer's pool (pickled with torch's IPC reductions)."""

    pool_id: str
    device: str
    slots: list[dict[str, torch.Tensor]]
    event_handles: list[bytes] | None


class SlotPool:
    """Producer side: fixed slots on the producer's device, plus the queue of free slot ids."""

    def __init__(self, pool_id: str, device: torch.device, spec: dict[str, TensorSpec],
                 n_slots: int, free_queue):
        self.pool_id = pool_id
        self.device = device
        self.spec = spec
        self.free_queue = free_queue
        self.slots = []
        for _ in range(n_slots):
            slot = {k: torch.empty(s.shape, dtype=s.dtype, device=device) for k, s in spec.items()}
            if device.type == "cpu":
                for t in slot.values():
                    t.share_memory_()
            self.slots.append(slot)
        self.is_cuda = device.type == "cuda"
        # Interprocess events cannot carry timing; timing events are separate and local.
        self.events = ([torch.cuda.Event(interprocess=True) for _ in range(n_slots)]
                       if self.is_cuda else None)
        for i in range(n_slots):
            free_queue.put(i)

    @property
    def nbytes(self) -> int:
        return len(self.slots) * sum(s.nbytes for s in self.spec.values())

    def handle_bytes(self) -> bytes:
        """The pool serialised once, for the main process to forward unopened to consumers."""
        handle = PoolHandle(self.pool_id, str(self.device), self.slots,
                            [e.ipc_handle() for e in self.events] if self.is_cuda else None)
        buf = io.BytesIO()
        ForkingPickler(buf, pickle.HIGHEST_PROTOCOL).dump(handle)
        return buf.getvalue()

    def acquire(self, should_stop, poll_s: float = 0.1) -> int | None:
        """A free slot id; waits (backpressure) until one is returned, or None when stopping."""
        while True:
            try:
                return self.free_queue.get(timeout=poll_s)
            except queue_module.Empty:
                if should_stop():
                    return None

    def write(self, slot: int, values: dict[str, torch.Tensor], stream=None) -> int:
        """Copy `values` into the slot (on the current stream); returns the rows written."""
        rows = None
        dst = self.slots[slot]
        for name, value in values.items():
            n = value.shape[0]
            rows = n if rows is None else rows
            if n != rows:
                raise ValueError(f"pool {self.pool_id}: '{name}' has {n} rows, expected {rows}")
            if n > dst[name].shape[0]:
                raise ValueError(f"pool {self.pool_id}: {n} rows exceed the slot's "
                                 f"{dst[name].shape[0]} for '{name}'")
            dst[name][:n].copy_(value, non_blocking=True)
        return rows or 0

    def publish(self, slot: int, stream=None) -> None:
        """Mark the slot's write complete, in stream order (no host wait)."""
        if self.is_cuda:
            self.events[slot].record(stream or torch.cuda.current_stream(self.device))


def load_handle(data: bytes) -> PoolHandle:
    return pickle.loads(data)


class PoolReader:
    """Consumer side of one producer's pool."""

    def __init__(self, handle: PoolHandle, free_queue, device: torch.device):
        self.pool_id = handle.pool_id
        self.src_device = torch.device(handle.device)
        self.slots = handle.slots
        self.free_queue = free_queue
        self.device = device
        self.same_device = self.src_device == device
        self.events = None
        self.copy_stream = None
        if handle.event_handles is not None:
            self.events = [torch.cuda.Event.from_ipc_handle(self.src_device, h)
                           for h in handle.event_handles]
            if not self.same_device:
                self.copy_stream = torch.cuda.Stream(device=self.src_device)

    def release(self, slot: int) -> None:
        self.free_queue.put(slot)

    def wait_host(self, slot: int) -> None:
        """Block the calling thread until the producer's write of `slot` is done."""
        if self.events is not None:
            self.events[slot].synchronize()


@dataclass
class Gathered:
    """A batch of inputs on the consumer's device, and the cost of getting them there."""

    tensors: dict[str, torch.Tensor]
    copy_timers: list  # (start, end) CUDA events of peer copies, or host seconds on the CPU
    copied: bool


class InputGather:
    """Brings the slots of one or more queue items onto the consumer's device as one batch.

    One item from the same device is read in place. Several items (batching) or another GPU's item
    go through a receive buffer allocated once on this device.
    """

    def __init__(self, device: torch.device, stream, spec: dict[str, TensorSpec]):
        self.device = device
        self.stream = stream
        self.spec = spec
        self.recv = None
        self.readers: dict[str, PoolReader] = {}
        self.recv_free = torch.cuda.Event() if device.type == "cuda" else None

    def attach(self, reader: PoolReader) -> None:
        self.readers[reader.pool_id] = reader

    def _recv_buffers(self):
        if self.recv is None:
            self.recv = {k: torch.empty(s.shape, dtype=s.dtype, device=self.device)
                         for k, s in self.spec.items()}
        return self.recv

    def gather(self, items) -> Gathered:
        cuda = self.device.type == "cuda"
        if len(items) == 1:
            item = items[0]
            reader = self.readers[item.pool_id]
            if reader.same_device:
                if cuda:
                    self.stream.wait_event(reader.events[item.slot])
                src = reader.slots[item.slot]
                return Gathered({k: src[k][:item.rows] for k in self.spec}, [], False)
        recv = self._recv_buffers()
        timers = []
        offset = 0
        for item in items:
            reader = self.readers[item.pool_id]
            src = reader.slots[item.slot]
            rows = slice(offset, offset + item.rows)
            if not cuda:
                t = _host_copy(recv, src, rows, item.rows, self.spec)
                timers.append(t)
            elif reader.same_device:
                self.stream.wait_event(reader.events[item.slot])
                with torch.cuda.stream(self.stream):
                    for k in self.spec:
                        recv[k][rows].copy_(src[k][:item.rows], non_blocking=True)
            else:
                cs = reader.copy_stream
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                # The producer GPU's stream waits for the slot's data and for this consumer's
                # previous use of the receive buffer, then pushes the peer copy.
                cs.wait_event(reader.events[item.slot])
                cs.wait_event(self.recv_free)
                with torch.cuda.stream(cs):
                    start.record(cs)
                    for k in self.spec:
                        recv[k][rows].copy_(src[k][:item.rows], non_blocking=True)
                    end.record(cs)
                self.stream.wait_event(end)
                timers.append((start, end))
            offset += item.rows
        return Gathered({k: v[:offset] for k, v in recv.items()}, timers, True)

    def mark_consumed(self) -> None:
        """Record, on the consumer stream, that the receive buffer may be overwritten again."""
        if self.recv_free is not None:
            self.recv_free.record(self.stream)


def _host_copy(recv, src, rows, n, spec) -> float:
    from pipeline.clock import now
    t = now()
    for k in spec:
        recv[k][rows].copy_(src[k][:n])
    return now() - t


def timer_seconds(timer) -> float:
    """Seconds of a copy timer (CUDA event pair, already complete, or host seconds)."""
    if isinstance(timer, tuple):
        return timer[0].elapsed_time(timer[1]) / 1000.0
    return float(timer)
