"""Moving tensors between pipeline processes without a host round trip.

Each producer owns a fixed pool of slots: buffers allocated once on its device and shared once, at
start-up, with every consumer (CUDA IPC on a GPU, shared memory on the CPU). A queue item then only
names a slot. Ordering on the GPU uses inter-process CUDA events: the producer records one after
writing each *group* of a slot's tensors (groups are fixed per pool, in the order the producer
finishes them; most pools have one); the consumer makes its work wait on them; the consumer gives the
slot back only once its read has completed, so the producer never overwrites data still being read.

Same device: the consumer reads the slot in place (no copy), after the last group's event. Other
GPU: one peer copy per group, issued on a stream of the *producer's* GPU that waits on that group's
event, so early groups (a U-Net encoder's first skips) cross while the producer still computes the
rest; the consumer's stream then waits on an ordinary event recorded after the last copy. (Making a
stream of the consumer's GPU wait directly on another GPU's inter-process event was seen to hang.)

On the CPU a slot's buffers are memory files of the producer (memfd), mapped shared: a consumer
maps the same file through /proc/<producer pid>/fd, so one serialised handle opens in every
consumer that reads the pool (the replicas behind a global queue), which torch's own sharing of
CPU tensors (a descriptor handed over once) cannot do. The files have no name: nothing is left in
/dev/shm or the temporary folder, whatever way the processes end.

A consumer on another node (a Ray actor elsewhere) can open neither CUDA IPC handles nor another
machine's /proc: its reader is transport/remote.py's, which pulls each item's tensors over
torch.distributed (gloo on the CPU, NCCL between GPUs). A pool handle therefore says where its
pool lives (node, rank) and keeps the same-node part (IPC handles, memory files) as a blob that
only a consumer on the producer's node unpickles.

Two costs are measured per peer hand-off (gather.py): the copy time (the link's busy time, all
groups) and the exposed time, from the moment the consumer could have started (the producer done
*and* the consumer's stream free) to the moment the last byte landed: what the hand-off adds to the
request.
"""
from __future__ import annotations

import io
import os
import pickle
import weakref
from dataclasses import dataclass
from multiprocessing.reduction import ForkingPickler

import torch

from pipeline.serving.transport.queues import take


@dataclass(frozen=True)
class TensorSpec:
    """A tensor a slot must hold at its largest; dim 0 is the batch (rows) dimension."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def largest(specs: list[dict[str, TensorSpec]]) -> dict[str, TensorSpec]:
    """Per tensor name, the spec with the most elements (pools sized for every frame size)."""
    out: dict[str, TensorSpec] = {}
    for spec in specs:
        for k, s in spec.items():
            if k not in out or s.numel > out[k].numel:
                out[k] = s
    return out


# A slot tensor is one flat buffer per name; an item says how to view it: (shape, stride) per name.
# The producer's memory format (e.g. channels-last 3D) survives the hand-off that way.
Layout = dict[str, tuple[tuple[int, ...], tuple[int, ...]]]


def view(buffer: torch.Tensor, shape, stride) -> torch.Tensor:
    return buffer.as_strided(tuple(shape), tuple(stride))


def _slot_strides(t: torch.Tensor) -> tuple[int, ...]:
    """How `t` is laid out in a slot: its own memory format when that is a standard one
    (contiguous or channels-last), else contiguous. A permuted view (e.g. frames gathered into
    windows) is written contiguous: a peer copy of a contiguous slot is one memcpy over NVLink,
    while a permuted one is an element-wise kernel that was seen to run ~100x slower."""
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    if t.dim() in formats and not t.is_contiguous() and t.is_contiguous(memory_format=formats[t.dim()]):
        return tuple(t.stride())
    strides, step = [], 1
    for n in reversed(t.shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


# Memory files need Linux; elsewhere CPU slots fall back to torch's sharing (one consumer a pool).
_MEMORY_FILES = hasattr(os, "memfd_create")


def _memory_file_tensor(numel: int, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    """A flat CPU tensor in a new memory file of this process, and the file's descriptor (kept
    open, so that consumers can map the file by /proc path)."""
    fd = os.memfd_create("flavr-slot", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, max(1, numel * dtype.itemsize))
        return torch.from_file(f"/proc/self/fd/{fd}", shared=True, size=numel, dtype=dtype), fd
    except BaseException:
        os.close(fd)
        raise


class _MappedBuffer:
    """A producer's CPU slot buffer as a consumer finds it: unpickling maps the producer's memory
    file (by any number of processes, any number of times, while the producer lives)."""

    def __init__(self, pid: int, fd: int, numel: int, dtype: torch.dtype):
        self.pid, self.fd, self.numel, self.dtype = pid, fd, numel, dtype

    def __reduce__(self):
        return _map_buffer, (self.pid, self.fd, self.numel, self.dtype)


def _map_buffer(pid: int, fd: int, numel: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_file(f"/proc/{pid}/fd/{fd}", shared=True, size=numel, dtype=dtype)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


@dataclass
class PoolHandle:
    """What a consumer needs to read a producer's pool. Plain data outside `local`, so it opens on
    any node; `local` (slots and event handles, pickled with torch's IPC reductions) only on the
    producer's node."""

    pool_id: str
    device: str
    node: str  # transport/remote.py current_node() of the producer
    rank: int | None  # the producer's rank in the run's process group (None: one node only)
    serve_key: int | None  # the pool's key in its producer's pull server
    specs: dict[str, tuple[int, torch.dtype]]  # name -> (elements, dtype) of each slot buffer
    n_slots: int
    groups: list[tuple[str, ...]]  # tensor names per event, in the order the producer writes them
    local: bytes  # (slots, event handles per slot), for a consumer on the same node

    def open_local(self):
        """(slots, event_handles) from the same node: maps the buffers, opens the IPC handles."""
        return pickle.loads(self.local)


class SlotTooSmall(ValueError):
    """A request's tensors exceed what the pool was sized for."""


class SlotPool:
    """Producer side: fixed slots on the producer's device, plus the queue of free slot ids.

    `groups` splits the tensor names into the groups the producer publishes one after the other
    (default: one group of everything)."""

    def __init__(self, pool_id: str, device: torch.device, spec: dict[str, TensorSpec],
                 n_slots: int, free_queue, groups: list[tuple[str, ...]] | None = None):
        self.pool_id = pool_id
        self.device = device
        self.spec = spec
        self.groups = [tuple(g) for g in groups] if groups else [tuple(spec)]
        named = [k for g in self.groups for k in g]
        if sorted(named) != sorted(spec):
            raise ValueError(f"pool {pool_id}: groups {self.groups} must name each of "
                             f"{sorted(spec)} exactly once")
        self.free_queue = free_queue
        self._free: list[int] = []  # free slot ids taken from the queue, not yet handed out
        self.slots = []
        self._files: list[dict[str, int]] = []  # CPU: per slot, each buffer's memory file
        for _ in range(n_slots):
            if device.type == "cpu" and _MEMORY_FILES:
                made = {k: _memory_file_tensor(s.numel, s.dtype) for k, s in spec.items()}
                slot = {k: t for k, (t, _) in made.items()}
                self._files.append({k: fd for k, (_, fd) in made.items()})
            else:
                slot = {k: torch.empty(s.numel, dtype=s.dtype, device=device)
                        for k, s in spec.items()}
                if device.type == "cpu":
                    for t in slot.values():
                        t.share_memory_()
            self.slots.append(slot)
        # The mappings outlive the descriptors; a consumer maps a file only while the pool lives.
        weakref.finalize(self, _close_all, [fd for f in self._files for fd in f.values()])
        self.is_cuda = device.type == "cuda"
        # Interprocess events cannot carry timing; timing events are separate and local.
        self.events = ([[torch.cuda.Event(interprocess=True) for _ in self.groups]
                        for _ in range(n_slots)] if self.is_cuda else None)
        for i in range(n_slots):
            free_queue.put(i)

    def handle_bytes(self) -> bytes:
        """The pool serialised once, for the main process to forward unopened to consumers."""
        from pipeline.serving.transport import remote  # torch.distributed only when used

        slots = self.slots
        if self._files:  # CPU: where each buffer's file is, instead of the tensors themselves
            pid = os.getpid()
            slots = [{k: _MappedBuffer(pid, files[k], self.spec[k].numel, self.spec[k].dtype)
                      for k in files} for files in self._files]
        events = ([[e.ipc_handle() for e in per_slot] for per_slot in self.events]
                  if self.is_cuda else None)
        buf = io.BytesIO()
        ForkingPickler(buf, pickle.HIGHEST_PROTOCOL).dump((slots, events))
        rank, key = remote.serve(self)  # (None, None) unless the run spans nodes
        handle = PoolHandle(self.pool_id, str(self.device), remote.current_node(), rank, key,
                            {k: (s.numel, s.dtype) for k, s in self.spec.items()},
                            len(self.slots), self.groups, buf.getvalue())
        return pickle.dumps(handle, pickle.HIGHEST_PROTOCOL)

    def acquire(self, should_stop, poll_s: float = 0.1) -> int | None:
        """A free slot id; waits (backpressure) until one is returned, or None when stopping.

        Takes every slot returned since the last time at once and keeps the rest for the next
        calls: only this pool's producer takes from its free queue, and on a Ray run each call
        to that queue is a round trip to the hub that would sit on every request's path."""
        while not self._free:
            self._free = take(self.free_queue, len(self.slots), poll_s)
            if not self._free and should_stop():
                return None
        return self._free.pop(0)

    def write(self, slot: int, values: dict[str, torch.Tensor],
              rows: int | None = None) -> tuple[int, Layout]:
        """Copy `values` into the slot on the current stream; returns (rows, layout). Given
        `rows`, the tensors may have any row counts (a change-based state: whole windows, tiles),
        and the item counts `rows` (its windows)."""
        ragged, layout = rows is not None, {}
        for name, value in values.items():
            n = value.shape[0]
            rows = n if rows is None else rows
            if n != rows and not ragged:
                raise ValueError(f"pool {self.pool_id}: '{name}' has {n} rows, expected {rows}")
            buf = self.slots[slot][name]
            if value.numel() > buf.numel():
                raise SlotTooSmall(
                    f"'{name}' of shape {tuple(value.shape)} needs {value.numel()} elements; the "
                    f"slot pool was sized for {buf.numel()} (frames larger than the run's "
                    f"largest clip, or more rows than the batch allows)")
            layout[name] = (tuple(value.shape), _slot_strides(value))
            view(buf, *layout[name]).copy_(value, non_blocking=True)
        return rows or 0, layout

    def publish(self, slot: int, stream=None, group: int = -1) -> None:
        """Mark the write of one group of the slot (default: the last, i.e. the whole slot with a
        single group) complete, in stream order (no host wait). Groups are published in order,
        on one stream, so the last group's event also covers the earlier ones."""
        if self.is_cuda:
            self.events[slot][group].record(stream or torch.cuda.current_stream(self.device))

    def give_back(self, slot: int) -> None:
        """Return a slot that was never handed on (its request failed or was dropped)."""
        self.free_queue.put(slot)


def load_handle(data: bytes) -> PoolHandle:
    return pickle.loads(data)


def open_reader(handle: PoolHandle, free_queue, device: torch.device | None = None):
    """The reader of `handle`'s pool for this process: in place / peer copies on the producer's
    node, pulls over the run's process group from anywhere else. `device`: where the consumer
    wants the tensors (None: where they are, or the CPU for a pull)."""
    from pipeline.serving.transport import remote

    if handle.node == remote.current_node():
        return PoolReader(handle, free_queue, device or torch.device(handle.device))
    return remote.RemotePoolReader(handle, free_queue, device or torch.device("cpu"))


class PoolReader:
    """Consumer side of one producer's pool, on the producer's node."""

    remote = False

    def __init__(self, handle: PoolHandle, free_queue, device: torch.device):
        self.pool_id = handle.pool_id
        self.src_device = torch.device(handle.device)
        self.slots, event_handles = handle.open_local()
        self.free_queue = free_queue
        self.device = device
        self.same_device = self.src_device == device
        self.groups = handle.groups
        self.events = None
        self.copy_stream = self.mark_stream = None
        if event_handles is not None:
            self.events = [[torch.cuda.Event.from_ipc_handle(self.src_device, h) for h in per_slot]
                           for per_slot in event_handles]
            if not self.same_device:
                self.copy_stream = torch.cuda.Stream(device=self.src_device)
                # Only marks when a hand-off could have started (for the exposed time).
                self.mark_stream = torch.cuda.Stream(device=self.src_device)

    def tensors(self, item) -> dict[str, torch.Tensor]:
        """The item's tensors, viewed in place in the producer's slot."""
        slot = self.slots[item.slot]
        return {k: view(slot[k], *sl) for k, sl in item.layout.items()}

    def release(self, slot: int) -> None:
        self.free_queue.put(slot)

    def done_event(self, slot: int):
        """The event that completes the producer's write of `slot` (its last group's)."""
        return self.events[slot][-1]

    def wait_host(self, slot: int) -> None:
        """Block the calling thread until the producer's write of `slot` is done."""
        if self.events is not None:
            self.done_event(slot).synchronize()
