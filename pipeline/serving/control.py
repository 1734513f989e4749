"""The main process's end of a run's control queue: it takes in the children's typed messages
(transport/messages.py), applies each to what the main process knows of the run (RunState), and
watches the children while it waits, so that nothing is ever waited for without also noticing a
child that died, reported a fatal error or fell silent past its heartbeat limit.
"""
from __future__ import annotations

import queue as queue_module
from dataclasses import dataclass, field
from typing import Callable

from pipeline.analysis.records import FINAL, RecordTable
from pipeline.clock import now
from pipeline.serving.transport.messages import (
    Attached,
    ClientDone,
    Fatal,
    Notice,
    Overflow,
    Ready,
    Record,
    Warmed,
)


class RunStopped(Exception):
    """The run cannot go on; the message says why, naming the process at fault."""


@dataclass
class RunState:
    """What the control messages have told the main process about a run so far."""

    table: RecordTable  # every request's reports
    admit_closed: object  # shared flag: no more requests are admitted (a queue overflowed)
    gpus: dict[str, int | None] = field(default_factory=dict)  # child name -> its GPU
    finished: set[int] = field(default_factory=set)  # requests with a final status
    error: str | None = None  # why the run failed (the first cause)
    stop_reason: str | None = None  # why requests stopped being admitted
    notices: list[str] = field(default_factory=list)
    warm_sent: int | None = None  # warm-ups the client issued (or dropped)
    client_sent: int | None = None  # requests the client issued (or dropped), all phases
    on_final: Callable[[int], None] = lambda rid: None  # a request just reached its final status


class ControlChannel:
    """Reads the control queue into a RunState; `launcher` and `heartbeats` (HeartbeatBoard) are
    how it watches the children."""

    def __init__(self, control, state: RunState, launcher, heartbeats):
        self.control = control
        self.state = state
        self.launcher = launcher
        self.heartbeats = heartbeats

    def next(self, deadline: float | None = None, late: Callable[[], str] | None = None,
             poll_s: float = 0.1):
        """One control message (already applied), or None after `poll_s`. Raises RunStopped when
        a child died, reported a fatal error, fell silent past its heartbeat limit, or `deadline`
        passed (`late()` says what was not done by then)."""
        try:
            msg = self.control.get(timeout=poll_s)
        except queue_module.Empty:
            msg = None
        if msg is not None:
            self.apply(msg)
        state = self.state
        dead = [d for d in self.launcher.dead() if d[0] != "client" or d[2] != 0]
        if dead:
            self.drain(timeout_s=0.3)  # its last words, if any, name the cause
            name, role, code = dead[0]
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            cause = self.launcher.cause(name)  # e.g. Ray's word on an actor or node that died
            if cause:
                how = f"died: {cause}"
            raise RunStopped(state.error or f"process '{name}' ({role}) {how}")
        silent = self.heartbeats.overdue()
        if silent:
            name, seconds = silent[0]
            state.error = state.error or (
                f"process '{name}' ({self.launcher.roles[name]}) stopped responding: no "
                f"heartbeat for {seconds:.1f} s (limit {self.heartbeats.limit_s:g} s, "
                f"heartbeat_timeout_s); it is stopped or stuck, e.g. in a GPU or decoder call")
            self.launcher.kill(name)  # it cannot leave by itself; the others get their grace
            raise RunStopped(state.error)
        if deadline is not None and now() > deadline:
            raise RunStopped(late() if late is not None else "a time limit passed")
        return msg

    def late(self, phase: str, waiting) -> str:
        """What ran out of time, and for whom it was still waiting."""
        return (f"{phase} did not finish within its time limit; still waiting for "
                + ", ".join(f"'{n}' ({self.launcher.roles[n]})" for n in sorted(waiting)))

    def apply(self, msg) -> None:
        state = self.state
        match msg:
            case Record(rid, record):
                state.table.update(rid, record)
                if rid not in state.finished and state.table.status(rid) in FINAL:
                    state.finished.add(rid)
                    state.on_final(rid)
            case Fatal(name, text):
                gpu = state.gpus.get(name)
                where = f" (GPU {gpu})" if gpu is not None else ""
                state.error = state.error or f"process '{name}'{where} failed: {text.strip()}"
            case Overflow(_, text):
                if not state.admit_closed.is_set():
                    state.stop_reason = text
                    state.admit_closed.set()
            case Warmed(handled, reason):
                state.warm_sent = handled
                if reason:
                    state.stop_reason = state.stop_reason or reason
            case ClientDone(sent, reason):
                state.client_sent = sent
                if reason:
                    state.stop_reason = state.stop_reason or reason
            case Notice(name, text):
                state.notices.append(f"{name}: {text}")
            case Ready() | Attached():
                pass  # read by the start-up that waits for them
            case _:
                raise TypeError(f"unknown control message {msg!r}")

    def drain(self, timeout_s: float) -> None:
        """Apply what is queued (and, for `timeout_s`, what still arrives)."""
        end = now() + timeout_s
        while True:
            try:
                self.apply(self.control.get(timeout=0.02) if timeout_s
                           else self.control.get_nowait())
            except (queue_module.Empty, OSError, EOFError, ValueError):
                if now() >= end:
                    break
