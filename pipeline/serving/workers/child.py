"""What every pipeline child process shares: its identity, its channels to the main process, and
the start-up handshake (ready -> start -> attached) that replaces a barrier nobody can escape.

Messages to the main process are plain tuples on one control queue:
    ("ready", name, pool_bytes | None)         warmed up; its output pool, serialised once
    ("attached", name)                         opened its producers' pools; may start
    ("rec", request_id, record)                part of a request's record (records.py: Admission,
                                               StepStamps or Outcome)
    ("fatal", name, message)                   cannot go on; the run stops
    ("overflow", name, message)                a queue overflowed: stop admitting requests
    ("warmed", handled, reason)                the client issued every warm-up it will issue
    ("client_done", sent, reason)              the client issued everything it will issue
    ("log", name, text)                        a notice for the user
"""
from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.util
import os
import queue as queue_module
import signal
import sys
import traceback
from dataclasses import dataclass

from pipeline.analysis.records import Outcome
from pipeline.errors import CheckpointError, ConfigError, VideoError

# Errors that name the file or field at fault and say why: one line is the whole story.
USER_ERRORS = (CheckpointError, ConfigError, VideoError)


@dataclass
class ChildContext:
    name: str
    control: object  # multiprocessing queue to the main process
    setup: object  # multiprocessing queue from the main process to this child
    stop: object  # flag shared with the main process (set / is_set): the run is over
    device_kind: str  # "cuda" or "cpu"
    gpu: int | None = None
    threads: int = 1
    cpu_affinity: list[int] | None = None

    def should_stop(self) -> bool:
        return self.stop.is_set() or main_process_gone()

    def send(self, *msg) -> None:
        self.control.put(msg)

    def record(self, request_id: int, record) -> None:
        """Part of a request's record: a records.Admission, StepStamps or Outcome."""
        self.control.put(("rec", request_id, record))

    def fail(self, request_id: int, reason: str) -> None:
        self.control.put(("rec", request_id, Outcome("error", reason)))

    def overflow(self, request_ids, exc: Exception) -> None:
        """A queue overflowed: these requests are dropped, and (RnB's policy) the run stops
        admitting new ones."""
        for rid in request_ids:
            self.record(rid, Outcome("dropped", str(exc)))
        self.control.put(("overflow", self.name, str(exc)))

    def fatal(self, message: str) -> None:
        self.control.put(("fatal", self.name, message))

    @property
    def torch_device(self) -> str:
        return f"cuda:{self.gpu}" if self.device_kind == "cuda" else "cpu"

    @property
    def device_label(self) -> str:
        return f"{self.device_kind}:{self.gpu}"

    def wait_start(self, poll_s: float = 0.1):
        """The main process's start message (upstream pools), or None if the run stops first."""
        while not self.should_stop():
            try:
                msg = self.setup.get(timeout=poll_s)
            except queue_module.Empty:
                continue
            if msg[0] == "start":
                return msg[1]
        return None


def enter_child(ctx: ChildContext) -> None:
    """Process-wide settings, before any CUDA work.

    Ctrl-C reaches the whole process group; only the main process acts on it, so children ignore
    SIGINT and stop when the main process sets the stop event (or terminates them). The launcher
    starts them with SIGINT blocked until here, so none is lost or delivered early.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if ctx.cpu_affinity and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, ctx.cpu_affinity)
        except OSError:
            pass
    import torch

    torch.set_num_threads(max(1, ctx.threads))
    if ctx.device_kind == "cuda":
        if ctx.gpu is not None:  # the sink and the client own no GPU
            torch.cuda.set_device(ctx.gpu)
        torch.backends.cudnn.benchmark = True


def main_process_gone() -> bool:
    """True in a child whose main process has died (kill -9, say): nobody will set the stop flag
    or read what this process sends any more, so it must stop on its own. The dead parent's
    children are adopted by another process, so the parent pid changes (one cheap syscall)."""
    parent = multiprocessing.parent_process()
    return parent is not None and os.getppid() != parent.pid


def run_child(ctx: ChildContext, body) -> None:
    """Run `body(ctx)`; anything it raises is reported to the main process as fatal, by name."""
    code = 0
    try:
        enter_child(ctx)
        body(ctx)
    except USER_ERRORS as exc:
        ctx.fatal(str(exc))
        code = 1
    except Exception as exc:  # the main process decides what a dead child means
        ctx.fatal(f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}")
        code = 1
    finally:
        if main_process_gone():
            # Orphaned: leave now. A normal exit would wait to flush queued messages into pipes
            # that nobody reads any more, possibly forever.
            os._exit(1)
    if multiprocessing.parent_process() is None:  # not a child (a test calling a body directly)
        if code:
            raise SystemExit(code)
        return
    leave(code)


def leave(code: int) -> None:
    """End the process once everything it sent is delivered, without the interpreter's teardown.

    A child's loop ends within ~0.1 s of the stop flag, but the process then took 2-3 s more to
    disappear on a loaded 2-core machine (longer than the main process's grace period): the
    interpreter freeing torch's and DALI's modules and their native state, which nobody needs
    once the process is ending. So: do what a normal exit does that matters (multiprocessing's
    exit hooks flush every queue this process put to into its pipe, then atexit handlers such as
    torch's), and leave; the operating system and the GPU driver free the rest at once."""
    multiprocessing.util._exit_function()  # the hook a normal exit of a child process runs
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
