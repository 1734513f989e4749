"""Control messages between a run's child processes and the main process.

Children send them on one control queue (through `ChildContext`'s methods); the main process
sends `Start` on each child's own setup queue, and `Measure` on the client's. They are small
frozen dataclasses: picklable, a few hundred bytes at most, and dispatched by type, so a message
with a missing or misplaced field fails where it is built, not where it is read. Liveness is not a message: children write
heartbeats into shared memory (`pipeline.serving.heartbeat`), which costs no queue traffic.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.analysis.records import Admission, ChangeCounts, Fidelity, Outcome, StepStamps


@dataclass(frozen=True, slots=True)
class Ready:
    """The child has warmed up; `pool` is its output slot pool, serialised once (None: no pool)."""

    name: str
    pool: bytes | None = None


@dataclass(frozen=True, slots=True)
class Attached:
    """The child has opened its producers' pools and may start."""

    name: str


@dataclass(frozen=True, slots=True)
class Record:
    """Part of one request's record, as the process that handled it saw it (the typed reports of
    pipeline.analysis.records); the main process merges them into the request's row."""

    request_id: int
    record: Admission | StepStamps | Outcome | ChangeCounts | Fidelity


@dataclass(frozen=True, slots=True)
class Fatal:
    """The child cannot go on; the run stops with this message, naming the child."""

    name: str
    message: str


@dataclass(frozen=True, slots=True)
class Overflow:
    """A queue overflowed under the 'stop' policy: the run stops admitting requests."""

    name: str
    message: str


@dataclass(frozen=True, slots=True)
class Warmed:
    """The client issued every warm-up request it will issue (`handled`: admitted or dropped);
    the main process starts the measured schedule once they have all finished."""

    handled: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ClientDone:
    """The client issued every request it will issue; `reason` says why it stopped early, if so."""

    sent: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the user should read in the report (a request's output could not be saved...)."""

    name: str
    text: str


@dataclass(frozen=True, slots=True)
class Start:
    """Main process -> one child: go. `payload` is the pools it reads (pool id -> serialised
    handle) for pipeline steps, the run's start time t0 for the client."""

    payload: object


@dataclass(frozen=True, slots=True)
class Measure:
    """Main process -> the client: every warm-up has finished; the measured schedule starts at
    `t0` (the run's time origin)."""

    t0: float


CONTROL_MESSAGES = (Ready, Attached, Record, Fatal, Overflow, Warmed, ClientDone, Notice)
