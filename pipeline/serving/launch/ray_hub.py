"""What a Ray run's processes share, wherever they run: queues, one-way flags, heartbeat floats
and the main process's clock, all held by one actor of the run (the hub) on the main process's
node, and the small objects each process uses to reach it.

Why one actor and not ray.util.queue: each of Ray's queues is an actor (a process) of its own,
and a run has a few dozen queues (every child's setup queue, every pool's free slots); one
asyncio actor serves them all with a call each. Why not a lock or shared memory for the flags and
floats: they must work across hosts, and a process killed while holding a lock would leave it
taken; here a flag is set by one message to the hub and read by another, and nothing is locked.
A hub on the main process's node also reads the same CLOCK_MONOTONIC as the main process, so it
is the reference the actors measure their clock offsets against (clock_sync.py).
"""
from __future__ import annotations

import asyncio
import queue as queue_module
import threading
import time
import uuid

import ray

FLAG_REFRESH_S = 0.05  # a process sees a flag set elsewhere within this
FLOAT_PUSH_S = 0.25  # a heartbeat reaches the hub within this...
FLOAT_JUMP = 1.0  # ...or at once when it moves this much (a longer promise, a retirement)
FLOAT_REFRESH_S = 0.1  # the main process reads the heartbeats this often at most


class Hub:
    """The actor (made with ray.remote in RayLauncher). Every method is a coroutine: one event
    loop serves every process's calls, and a waiting get() holds no thread.

    Ray runs an async actor's calls in the order they reach it, which is not always the order
    they were made, even from one thread: of 3,000 calls made back to back from one process,
    about 230 ran before a call made earlier. So the calls nobody waits for carry the sender's
    own count, and the hub puts them back in order: queue items (put_in_order) and heartbeats
    (set_floats)."""

    def __init__(self):
        self.queues: dict[int, asyncio.Queue] = {}
        self.next_put: dict[tuple[int, str], int] = {}  # (queue, sender) -> the count it awaits
        self.held: dict[tuple[int, str], dict[int, object]] = {}  # items that came early
        self.flags: dict[int, bool] = {}
        self.floats: dict[int, list[float]] = {}
        self.float_stamps: dict[int, dict[int, tuple[str, int]]] = {}  # value -> (writer, count)
        self.clocks: dict[str, tuple[float, float]] = {}  # process -> (offset, error bound)

    async def new_queue(self, qid: int, maxsize: int) -> None:
        self.queues[qid] = asyncio.Queue(maxsize=maxsize)

    async def put(self, qid: int, item, block: bool, timeout: float | None) -> bool:
        q = self.queues[qid]
        if not block:
            try:
                q.put_nowait(item)
                return True
            except asyncio.QueueFull:
                return False
        try:
            await asyncio.wait_for(q.put(item), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def put_in_order(self, qid: int, item, sender: str, count: int) -> None:
        """The `count`-th put (from 0) of `sender` to an unbounded queue: queued after all of
        that sender's earlier ones, held here until they have come."""
        key = (qid, sender)
        expected = self.next_put.get(key, 0)
        if count != expected:
            self.held.setdefault(key, {})[count] = item
            return
        q, held = self.queues[qid], self.held.get(key, {})
        q.put_nowait(item)
        expected += 1
        while expected in held:
            q.put_nowait(held.pop(expected))
            expected += 1
        if not held:
            self.held.pop(key, None)
        self.next_put[key] = expected

    async def get(self, qid: int, block: bool, timeout: float | None):
        q = self.queues[qid]
        if not block:
            try:
                return True, q.get_nowait()
            except asyncio.QueueEmpty:
                return False, None
        items = await self.get_many(qid, 1, timeout)
        return (True, items[0]) if items else (False, None)

    async def get_many(self, qid: int, max_items: int, timeout: float | None) -> list:
        """Up to max_items items: the first waited for (up to timeout), then what is queued."""
        q = self.queues[qid]
        items = []
        if q.empty():
            try:
                items.append(await asyncio.wait_for(q.get(), timeout))
            except asyncio.TimeoutError:
                return items
        while len(items) < max_items and not q.empty():
            items.append(q.get_nowait())
        return items

    async def set_flag(self, index: int) -> None:
        self.flags[index] = True

    async def flag(self, index: int) -> bool:
        return self.flags.get(index, False)

    async def new_floats(self, index: int, n: int) -> None:
        self.floats[index] = [0.0] * n
        self.float_stamps[index] = {}

    async def set_floats(self, index: int, values: dict[int, float], writer: str = "",
                         count: int = 0) -> None:
        """The `count`-th push of `writer`: a value it pushed later that came first stays."""
        block, stamps = self.floats[index], self.float_stamps[index]
        for i, v in values.items():
            last = stamps.get(i)
            if last is not None and last[0] == writer and last[1] > count:
                continue
            block[i] = v
            stamps[i] = (writer, count)

    async def read_floats(self, index: int) -> list[float]:
        return list(self.floats[index])

    async def now(self) -> float:
        """The main process's clock (the same machine's CLOCK_MONOTONIC)."""
        return time.monotonic()

    async def boot_id(self) -> str:
        return _boot_id()

    async def clock_report(self, name: str, offset: float, bound: float) -> None:
        self.clocks[name] = (offset, bound)

    async def clock_reports(self) -> dict[str, tuple[float, float]]:
        return dict(self.clocks)


def _boot_id() -> str:
    """This machine's boot id: two processes with the same one share CLOCK_MONOTONIC."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


class HubQueue:
    """A queue of the run (put/put_nowait/get/get_nowait, raising queue.Full / queue.Empty, and
    get_many)."""

    def __init__(self, hub, qid: int, maxsize: int):
        self.hub, self.qid, self.maxsize = hub, qid, maxsize
        self._sender = uuid.uuid4().hex  # this copy's name at the hub: one per process
        self._puts = 0
        self._lock = threading.Lock()  # a put's number and its call go together

    def __getstate__(self):
        return {"hub": self.hub, "qid": self.qid, "maxsize": self.maxsize}

    def __setstate__(self, state):
        self.__init__(state["hub"], state["qid"], state["maxsize"])

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        if self.maxsize <= 0:
            # Unbounded: never full, so the answer is not waited for; numbered, so that the
            # hub queues this process's items in the order they were put (Hub).
            with self._lock:
                self.hub.put_in_order.remote(self.qid, item, self._sender, self._puts)
                self._puts += 1
            return
        if not ray.get(self.hub.put.remote(self.qid, item, block, timeout)):
            raise queue_module.Full

    def put_nowait(self, item) -> None:
        self.put(item, block=False)

    def get(self, block: bool = True, timeout: float | None = None):
        ok, item = ray.get(self.hub.get.remote(self.qid, block, timeout))
        if not ok:
            raise queue_module.Empty
        return item

    def get_nowait(self):
        return self.get(block=False)

    def get_many(self, max_items: int, timeout: float | None = None) -> list:
        """Up to max_items items in one call to the hub (queues.take): the first waited for up to
        timeout, then only what is already queued; [] when nothing came."""
        return ray.get(self.hub.get_many.remote(self.qid, max_items, timeout))


class HubFlag:
    """A one-way flag (set / is_set). Read through a short cache: loops poll it on every turn."""

    def __init__(self, hub, index: int):
        self.hub, self.index = hub, index
        self._set = False
        self._checked = 0.0

    def __getstate__(self):
        return {"hub": self.hub, "index": self.index, "_set": False, "_checked": 0.0}

    def set(self) -> None:
        self._set = True
        ray.get(self.hub.set_flag.remote(self.index))

    def is_set(self) -> bool:
        if not self._set and time.monotonic() - self._checked > FLAG_REFRESH_S:
            self._checked = time.monotonic()
            self._set = ray.get(self.hub.flag.remote(self.index))
        return self._set


class HubFloats:
    """n floats: each process writes its own (heartbeats), the main process reads them all.
    Writes go to the hub at most every FLOAT_PUSH_S, at once when a value jumps (a beat that
    promises a long silence must be seen before the silence starts)."""

    def __init__(self, hub, index: int, n: int):
        self.hub, self.index, self.n = hub, index, n
        self._local = [0.0] * n
        self._sent = [0.0] * n
        self._dirty: dict[int, float] = {}
        self._pushed = 0.0
        self._read = 0.0
        self._writer = uuid.uuid4().hex  # this copy's name at the hub: one per process
        self._pushes = 0
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"hub": self.hub, "index": self.index, "n": self.n}

    def __setstate__(self, state):
        self.__init__(state["hub"], state["index"], state["n"])

    def __len__(self) -> int:
        return self.n

    def __setitem__(self, i: int, value: float) -> None:
        with self._lock:  # a push's number and its call go together, whichever thread beats
            self._local[i] = value
            self._dirty[i] = value
            t = time.monotonic()
            if t - self._pushed > FLOAT_PUSH_S or abs(value - self._sent[i]) > FLOAT_JUMP:
                # numbered: a push that overtakes a later one at the hub does not undo it
                self.hub.set_floats.remote(self.index, dict(self._dirty), self._writer,
                                           self._pushes)
                self._pushes += 1
                for k, v in self._dirty.items():
                    self._sent[k] = v
                self._dirty.clear()
                self._pushed = t

    def __getitem__(self, i: int) -> float:
        t = time.monotonic()
        if t - self._read > FLOAT_REFRESH_S:
            self._local = ray.get(self.hub.read_floats.remote(self.index))
            self._read = t
        return self._local[i]

    def close(self) -> None:
        pass
