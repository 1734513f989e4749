"""Bringing the slots of queue items onto a consumer's device, and what that cost.

One item on the consumer's own device is read in place; from another GPU of the node, one peer
copy per group of tensors (slots.py says why on a stream of the producer's GPU), after which the
producer's slot goes back at once (slot_returns.py); from another node, a pull (remote.py).
Several items (a batch) are concatenated on the consumer's stream.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from pipeline.serving.transport.slot_returns import SlotReturns, early_returns_wanted
from pipeline.serving.transport.slots import PoolReader


@dataclass
class Gathered:
    """A batch of inputs on the consumer's device, and the cost of getting them there."""

    tensors: dict[str, torch.Tensor]
    copy_timers: list  # (start, end) CUDA event pairs of peer copies, one per group and item
    copied: bool
    exposed_timers: list = field(default_factory=list)  # (could start, landed), one per item
    # Per item: its tensors on this device before any merge, and the CUDA event after which
    # they can be read (None on the CPU), for work that must not queue behind this consumer's
    # stream (change-based inference's change test).
    parts: list = field(default_factory=list)
    ready: list = field(default_factory=list)
    # Indices of the items whose slots go back to their producers as their copies land: the
    # consumer gives back only the others (InputGather.release).
    returned: frozenset = frozenset()

    def copy_seconds(self) -> float:
        """Time the peer copies kept the link busy (call once their events completed)."""
        return sum(timer_seconds(t) for t in self.copy_timers)

    def exposed_seconds(self) -> float:
        """How long, past the moment the consumer could have started, it waited for the last
        byte of any item; 0 when the copies were done by then."""
        return max([max(0.0, timer_seconds(t)) for t in self.exposed_timers], default=0.0)


class InputGather:
    """Brings the slots of one or more queue items (of one frame size) onto the consumer's device.

    One item from the same device is read in place. An item from another GPU costs one peer copy;
    several items (a batch) are concatenated on this device's stream.
    """

    def __init__(self, device: torch.device, stream, name: str = "gather"):
        self.device = device
        self.stream = stream
        self.name = name
        self.readers: dict[str, PoolReader] = {}
        self.early_returns = device.type == "cuda" and early_returns_wanted()
        self.returns: SlotReturns | None = None  # started with the first peer copy
        # Peer copies land through a stream of their own: torch makes a cross-device copy wait
        # for the destination device's *current* stream, and the consumer's compute stream is
        # busy with earlier batches, which would serialise every copy behind that compute.
        self.recv_stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def attach(self, reader: PoolReader) -> None:
        self.readers[reader.pool_id] = reader

    def gather(self, items) -> Gathered:
        """Call with this consumer's stream current."""
        cuda = self.device.type == "cuda"
        parts, timers, exposed, ready = [], [], [], []
        copied = []  # (item index, reader, slot, event after its copies) of peer-copied items
        free = None  # where this consumer's stream stands: it could start this batch from there
        for i, item in enumerate(items):
            reader = self.readers[item.pool_id]
            if reader.remote:  # from another node: pulled into this consumer's own buffers
                dst, copies, exposure, landed = reader.receive(item, self.stream,
                                                               self.recv_stream)
                timers += copies
                exposed.append(exposure)
                parts.append(dst)
                ready.append(landed)
                continue
            src = reader.tensors(item)
            if not cuda or reader.same_device:
                if cuda:
                    self.stream.wait_event(reader.done_event(item.slot))
                parts.append(src)
                ready.append(reader.done_event(item.slot) if cuda else None)
                continue
            if free is None:
                free = torch.cuda.Event()
                free.record(self.stream)
            dst, copies = self._peer_copy(reader, item.slot, src)
            # The hand-off could start once the producer was done and this stream was free.
            ms = reader.mark_stream
            ms.wait_event(reader.done_event(item.slot))
            ms.wait_event(free)
            could_start = torch.cuda.Event(enable_timing=True)
            could_start.record(ms)
            last = copies[-1][1]
            self.stream.wait_event(last)
            for t in dst.values():  # allocated on the receive stream, read on the compute stream
                t.record_stream(self.stream)
            timers += copies
            exposed.append((could_start, last))
            parts.append(dst)
            ready.append(last)
            if self.early_returns:
                landed = torch.cuda.Event(blocking=True)  # a thread sleeps on it
                landed.record(reader.copy_stream)
                copied.append((i, reader, item.slot, landed))
        if len(parts) == 1:
            merged = parts[0]
        else:
            # On the consumer stream, which has waited for every slot and every peer copy.
            with torch.cuda.stream(self.stream) if cuda else contextlib.nullcontext():
                merged = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        # Handed over only now: if anything above raised, the caller gives every slot back.
        if copied and self.returns is None:
            self.returns = SlotReturns(self.name, self.device)
        for _, reader, slot, landed in copied:
            self.returns.add(reader, slot, landed)
        return Gathered(merged, timers, bool(timers) or len(parts) > 1, exposed, parts, ready,
                        frozenset(i for i, *_ in copied))

    def release(self, items, returned: frozenset = frozenset()) -> None:
        """Give the items' slots back to their producers once the consumer is done with them,
        except those (indices) already given back as their copies landed (Gathered.returned)."""
        for i, item in enumerate(items):
            if i not in returned:
                self.readers[item.pool_id].release(item.slot)

    def close(self) -> None:
        """Give back the slots whose copies are still landing, and stop their thread."""
        if self.returns is not None:
            self.returns.close()
            self.returns = None

    def _peer_copy(self, reader: PoolReader, slot: int, src: dict):
        """One copy per group onto this device, on a stream of the producer's GPU that waits for
        that group's event; returns the destination tensors and (start, end) timers per group."""
        cs = reader.copy_stream
        copies = []
        with torch.cuda.stream(self.recv_stream):
            dst = {k: torch.empty_strided(v.shape, v.stride(), dtype=v.dtype,
                                          device=self.device) for k, v in src.items()}
            with torch.cuda.stream(cs):
                for g, names in enumerate(reader.groups):
                    names = [k for k in names if k in src]
                    if not names:
                        continue
                    cs.wait_event(reader.events[slot][g])
                    start = torch.cuda.Event(enable_timing=True)
                    end = torch.cuda.Event(enable_timing=True)
                    start.record(cs)
                    for k in names:
                        dst[k].copy_(src[k], non_blocking=True)
                    end.record(cs)
                    copies.append((start, end))
        return dst, copies


def timer_seconds(timer) -> float:
    """Seconds of a copy timer: a completed CUDA event pair, or a measured span (remote.py)."""
    if hasattr(timer, "seconds"):
        return timer.seconds()
    return timer[0].elapsed_time(timer[1]) / 1000.0
