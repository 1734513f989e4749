"""Queue placement between steps (one global queue, or one per GPU) and the overflow policy.

Queues are created by the launcher; this module only names them and routes puts and gets, so it
works with any queue object that has put/put_nowait/get/get_nowait (multiprocessing here).
"""
from __future__ import annotations

import queue as queue_module
from dataclasses import dataclass

from pipeline.clock import now

GLOBAL = None  # the GPU key of a global queue


def queue_name(step_name: str, gpu) -> str:
    if gpu is GLOBAL:
        return f"{step_name}.in"
    return f"{step_name}.in[{gpu}]" if isinstance(gpu, str) else f"{step_name}.in[gpu{gpu}]"


class QueueFull(RuntimeError):
    """A bounded queue overflowed under the 'stop' policy (RnB's behaviour)."""

    def __init__(self, name: str, size: int):
        self.queue_name = name
        super().__init__(f"queue '{name}' is full (bound {size}); stopping the run "
                         f"(raise -qs, lower the load, or use --on-full block)")


@dataclass
class Output:
    """Where a step's items go: the next step's queues (one, or one per GPU) and their policy."""

    queues: dict  # GPU id (or GLOBAL) -> queue
    names: dict  # same keys -> queue name for messages
    per_gpu: bool
    bound: int
    on_full: str  # "stop" | "block"

    def router(self, gpu) -> "Router":
        return Router(self.queues, self.per_gpu, gpu, self.names, self.bound, self.on_full)


class Router:
    """The producer's view of its output: which queue an item goes to and what a full one does."""

    def __init__(self, queues: dict, per_gpu: bool, gpu: int, names: dict, bound: int,
                 policy: str = "stop"):
        key = gpu if per_gpu else GLOBAL
        self.queue = queues[key]
        self.name = names[key]
        self.bound = bound
        self.policy = policy

    def put(self, item, should_stop) -> bool:
        """Put `item`, stamping its enqueue time; False when the run is stopping."""
        if self.policy == "stop":
            item.t_put = now()
            try:
                self.queue.put_nowait(item)
            except queue_module.Full:
                raise QueueFull(self.name, self.bound) from None
            return True
        while not should_stop():
            item.t_put = now()
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue_module.Full:
                continue
        return False


def take(q, max_items: int, timeout: float) -> list:
    """Up to `max_items` items: waits up to `timeout` for the first, then takes only what is
    already queued; [] when nothing came. A queue that offers `get_many` (a Ray run's queues,
    held by its hub actor: every call is a round trip of a millisecond or two) answers in one
    call; any other is asked once per item."""
    get_many = getattr(q, "get_many", None)
    if get_many is not None:
        return get_many(max_items, timeout)
    try:
        items = [q.get(timeout=timeout)]
    except queue_module.Empty:
        return []
    while len(items) < max_items:
        try:
            items.append(q.get_nowait())
        except queue_module.Empty:
            break
    return items


def get_batch(q, max_items: int, should_stop, poll_s: float = 0.05, idle=None):
    """Up to `max_items` items and the time they were taken: waits for the first item, then
    takes only what is already queued (batching never delays a request to fill a batch).
    `idle()` runs while waiting, e.g. to retire finished GPU work. ([], None) when stopping."""
    while True:
        batch = take(q, max_items, poll_s)
        if batch:
            return batch, now()
        if idle is not None:
            idle()
        if should_stop():
            return [], None


def drain(q, limit: int = 100000) -> list:
    """Whatever is in a queue now, without waiting (used at shutdown)."""
    out = []
    for _ in range(limit):
        try:
            out.append(q.get_nowait())
        except (queue_module.Empty, OSError, ValueError, EOFError):
            break
    return out
