"""Control messages between a run's child processes and the main process.

Children send them on one control queue (through `ChildContext`'s methods); the main process
sends `Start` on each child's own setup queue. They are small frozen dataclasses: picklable, a
few hundred bytes at most, and dispatched by type, so a message with a missing or misplaced field
fails where it is built, not where it is read. Liveness is not a message: children write
heartbeats into shared memory (`pipeline.serving.heartbeat`), which costs no queue traffic.
"""
from __future__ import annotations

from dataclasses import dataclass


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
    """Part of one request's record: column name -> value (see pipeline.analysis.records)."""

    request_id: int
    fields: dict


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


CONTROL_MESSAGES = (Ready, Attached, Record, Fatal, Overflow, ClientDone, Notice)
