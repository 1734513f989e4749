"""What every pipeline child process shares: its identity, its channels to the main process, its
heartbeat, and the start-up handshake (ready -> start -> attached) that replaces a barrier nobody
can escape.

Children talk to the main process only through this context's methods, which put the typed
messages of `pipeline.serving.transport.messages` on one control queue (a request's records are
the typed reports of `pipeline.analysis.records`); the main process answers on the child's own
setup queue: `Start` once, and `Measure` to the client when the warm-ups have finished.
"""
from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import multiprocessing.util
import os
import queue as queue_module
import signal
import sys
import traceback
from dataclasses import dataclass, field

from pipeline.analysis.records import Outcome
from pipeline.errors import CheckpointError, ConfigError, SwitchError, VideoError
from pipeline.serving.heartbeat import Heartbeat
from pipeline.serving.transport.messages import (
    Attached,
    ClientDone,
    Fatal,
    Measure,
    Notice,
    Overflow,
    Ready,
    Record,
    Start,
    Warmed,
)

# Errors that name the file or field at fault and say why: one line is the whole story.
USER_ERRORS = (CheckpointError, ConfigError, SwitchError, VideoError)


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
    heartbeat: Heartbeat | None = None  # None: nobody watches this child's liveness
    queue_key: object = None  # its GPU as per-GPU queues know it (topology.Replica.key)
    _beating: bool = field(default=False, init=False, repr=False)  # start-up has its own limit

    def should_stop(self) -> bool:
        """Polled by every worker loop and every wait, so it is also where the child beats."""
        if self._beating:
            self.heartbeat.beat()
        return self.stop.is_set() or main_process_gone()

    # -- messages to the main process -------------------------------------------------------------
    def ready(self, pool: bytes | None = None) -> None:
        """Warmed up. From now on the child beats, and must keep beating."""
        self.control.put(Ready(self.name, pool))
        if self.heartbeat is not None:
            self._beating = True
            self.heartbeat.beat()

    def attached(self) -> None:
        self.control.put(Attached(self.name))

    def record(self, request_id: int, record) -> None:
        """Part of a request's record: a records.Admission, StepStamps or Outcome."""
        self.control.put(Record(request_id, record))

    def fail(self, request_id: int, reason: str) -> None:
        self.record(request_id, Outcome("error", reason))

    def overflow(self, request_ids, exc: Exception) -> None:
        """A queue overflowed: these requests are dropped, and (RnB's policy) the run stops
        admitting new ones."""
        for rid in request_ids:
            self.record(rid, Outcome("dropped", str(exc)))
        self.control.put(Overflow(self.name, str(exc)))

    def fatal(self, message: str) -> None:
        self.control.put(Fatal(self.name, message))

    def notice(self, text: str) -> None:
        self.control.put(Notice(self.name, text))

    def warmed(self, handled: int, reason: str = "") -> None:
        self.control.put(Warmed(handled, reason))

    def client_done(self, sent: int, reason: str = "") -> None:
        self.control.put(ClientDone(sent, reason))

    # -- liveness ---------------------------------------------------------------------------------
    def allow_silence(self, seconds: float | None = None):
        """Context for one call that may keep this thread from beating for up to `seconds`
        (a large batch on the CPU), or, with None, as long as start-up may take (a first
        compile for a new frame size)."""
        if not self._beating:
            return contextlib.nullcontext()
        return self.heartbeat.allow(seconds)

    # -- the device -------------------------------------------------------------------------------
    @property
    def torch_device(self) -> str:
        return f"cuda:{self.gpu}" if self.device_kind == "cuda" else "cpu"

    @property
    def output_key(self):
        """The key of this child's per-GPU output queue: its GPU, or "node:id" (named nodes)."""
        return self.gpu if self.queue_key is None else self.queue_key

    @property
    def device_label(self) -> str:
        return f"{self.device_kind}:{self.gpu}"

    # -- messages from the main process -----------------------------------------------------------
    def wait_start(self, poll_s: float = 0.1):
        """The main process's start payload (upstream pools, or the warm-up start for the
        client), or None if the run stops first."""
        msg = self._wait_setup(Start, poll_s)
        return None if msg is None else msg.payload

    def wait_measure(self, poll_s: float = 0.05) -> float | None:
        """The client: the measured schedule's start (t0), sent once every warm-up finished;
        None if the run stops first."""
        msg = self._wait_setup(Measure, poll_s)
        return None if msg is None else msg.t0

    def _wait_setup(self, kind: type, poll_s: float):
        while not self.should_stop():
            try:
                msg = self.setup.get(timeout=poll_s)
            except queue_module.Empty:
                continue
            if isinstance(msg, kind):
                return msg
        return None


_kernel_parent: int | None = None  # this child's parent process, noted by enter_child


def enter_child(ctx: ChildContext) -> None:
    """Process-wide settings, before any CUDA work.

    Ctrl-C reaches the whole process group; only the main process acts on it, so children ignore
    SIGINT and stop when the main process sets the stop event (or terminates them). The launcher
    starts them with SIGINT blocked until here, so none is lost or delivered early.
    """
    global _kernel_parent
    # The main process, or the fork server that leaves with it; kept only if the main process
    # was alive after the read, so that a later change of parent means it has gone.
    kernel_parent, parent = os.getppid(), multiprocessing.parent_process()
    _kernel_parent = kernel_parent if parent is not None and parent.is_alive() else None
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
    or read what this process sends any more, so it must stop on its own. A child's parent is
    the main process or the fork server, which leaves with it; either way the dead parent's
    children are adopted by another process, so the parent pid changes (one cheap syscall: every
    worker loop polls this). Before enter_child has noted the parent, multiprocessing's pipe from
    the main process says it (it reads as ready once the main process has gone).
    On Linux the local launcher also has the kernel kill children with their parent; this check
    covers other systems and launchers."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return False
    if _kernel_parent is None:
        return not parent.is_alive()
    return os.getppid() != _kernel_parent


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
        if ctx._beating:  # leaving on its own: no more beats are owed
            ctx.heartbeat.retire()
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
