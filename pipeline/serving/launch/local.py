"""The local launcher: every process of a run is a spawned child of the main process, on this
machine; queues are multiprocessing queues and tensors cross by CUDA IPC (shared memory on the CPU).
"""
from __future__ import annotations

import multiprocessing as mp
import signal
import time

from pipeline.serving.launch.base import Launcher


class Flag:
    """A one-way flag (set / is_set) shared by processes, read without taking a lock.

    A multiprocessing.Event takes a lock on every is_set(); a child killed while holding it would
    leave it taken, and the next set() or is_set() anywhere would wait forever. Here the flag is
    a semaphore's count, read with sem_getvalue, which locks nothing.
    """

    def __init__(self, ctx):
        self._sem = ctx.Semaphore(0)

    def set(self) -> None:
        if not self.is_set():
            self._sem.release()

    def is_set(self) -> bool:
        return self._sem.get_value() > 0


class LocalLauncher(Launcher):
    def __init__(self):
        # spawn everywhere: CUDA cannot survive fork, and the main process owns no CUDA context.
        self.mp = mp.get_context("spawn")
        self.procs: dict[str, mp.Process] = {}
        self.roles: dict[str, str] = {}

    def queue(self, maxsize: int = 0):
        return self.mp.Queue(maxsize=maxsize)

    def event(self) -> "Flag":
        return Flag(self.mp)

    def start(self, name: str, role: str, target, *args) -> None:
        """`role` says what the process is for error messages, e.g. "step 'encoder' on GPU 0"."""
        # Not daemonic: a step may start helpers of its own (compile workers, decoder threads);
        # the orchestrator always calls stop(), which ends every process it started.
        proc = self.mp.Process(target=target, args=args, name=name, daemon=False)
        # Ctrl-C reaches the whole process group, and a child takes seconds (imports) before it
        # can ignore SIGINT itself: start it with SIGINT blocked (the mask survives fork and
        # exec), so an early Ctrl-C stops the run through the main process alone, without a
        # KeyboardInterrupt traceback from every child. enter_child unblocks it.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        self.procs[name] = proc
        self.roles[name] = role

    def dead(self) -> list[tuple[str, str, int]]:
        """(name, role, exit code) of every process that has exited."""
        return [(n, self.roles[n], p.exitcode) for n, p in self.procs.items()
                if p.exitcode is not None]

    def pid(self, name: str) -> int | None:
        return self.procs[name].pid

    def stop(self, grace_s: float = 3.0, pump=None) -> list[str]:
        """Wait up to `grace_s` for every process to leave on its own, then terminate, then kill.
        `pump()` runs while waiting: a child cannot exit while data it queued sits unread in a
        full pipe, so the caller keeps reading. Returns the names that had to be forced."""
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(p.is_alive() for p in self.procs.values()):
            if pump is not None:
                pump()
            time.sleep(0.02)
        forced = []
        for name, proc in self.procs.items():
            if proc.is_alive():
                forced.append(name)
                proc.terminate()
        for proc in self.procs.values():
            proc.join(1.0)
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        return forced
