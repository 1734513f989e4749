"""Heartbeats: how the main process tells a frozen child from a busy one.

Each child owns two floats in memory shared with the main process (no lock, no queue traffic:
one clock read and two stores per beat, so beating on every turn of a worker loop costs nothing
even at thousands of requests a second): when it last beat, and the time by which it promises to
beat again. The beat comes from the thread that does the work (the child's should_stop(), which
every worker loop and every wait polls), so a child that is alive but stuck inside a CUDA or DALI
call, or stopped (SIGSTOP), falls silent; the main process names it once its promise has passed.

A child beats only once it has reported ready: start-up (imports, model build, warm-up,
compilation) has its own, longer limit. A call known to take long (a first compile for a frame
size, a large CPU batch) is wrapped in `allow(seconds)`, which extends the promise for that call.
"""
from __future__ import annotations

import contextlib

from pipeline.clock import now


class Heartbeat:
    """A child's end: picklable with the process's start arguments (the floats are shared)."""

    def __init__(self, times, index: int, limit_s: float, long_call_s: float):
        self._times = times  # 2 floats per child: last beat, promised next beat
        self._at = 2 * index
        self.limit_s = float(limit_s)
        self.long_call_s = float(long_call_s)  # allow()'s default: as long as start-up may take
        self._until = 0.0  # a longer promise made by allow()

    def beat(self) -> None:
        t = now()
        # The promise first: the main process reads the beat first, so it never pairs a new
        # beat with an old promise.
        self._times[self._at + 1] = max(t + self.limit_s, self._until)
        self._times[self._at] = t

    def retire(self) -> None:
        """The child is leaving on its own: no more beats will come, and none are owed."""
        self._times[self._at + 1] = float("inf")

    @contextlib.contextmanager
    def allow(self, seconds: float | None = None):
        """The work inside may keep this thread silent for up to `seconds` (None: as long as
        start-up may take, for a first compile)."""
        seconds = self.long_call_s if seconds is None else seconds
        self._until = now() + max(float(seconds), self.limit_s)
        self.beat()
        try:
            yield
        finally:
            self._until = 0.0
            self.beat()


class HeartbeatBoard:
    """The main process's end: every child's last beat and promise."""

    def __init__(self, times, names: list[str], limit_s: float, long_call_s: float):
        if len(times) < 2 * len(names):
            raise ValueError(f"{len(times)} shared floats cannot hold {len(names)} heartbeats")
        self._times = times
        self.index = {name: i for i, name in enumerate(names)}
        self.limit_s = float(limit_s)
        self.long_call_s = float(long_call_s)

    def heart(self, name: str) -> Heartbeat:
        return Heartbeat(self._times, self.index[name], self.limit_s, self.long_call_s)

    def last_beat(self, name: str) -> float | None:
        t = self._times[2 * self.index[name]]
        return t or None

    def overdue(self, at: float | None = None) -> list[tuple[str, float]]:
        """(name, seconds since its last beat) of every child past its promise, most silent
        first. Children that have not beaten yet (still starting) are not judged here."""
        at = now() if at is None else at
        late = []
        for name, i in self.index.items():
            last, promise = self._times[2 * i], self._times[2 * i + 1]
            # A second look: a value read while the child wrote it (a torn read) cannot read the
            # same twice, and a child that is writing is not silent.
            if last and at > promise and (last, promise) == (self._times[2 * i],
                                                            self._times[2 * i + 1]):
                late.append((name, at - last))
        return sorted(late, key=lambda x: -x[1])
