"""The launcher interface: how a run's processes are started, connected, watched and stopped.

"Start replica R of step S on device D, connected to these queues" is all the orchestrator asks
for. Each implementation is one module in this folder plus one line in `LAUNCHERS` (launch/__init__
imports nothing heavy, so a launcher's own dependencies load only when it is chosen).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar


class LaunchError(RuntimeError):
    """The launcher could not start the run's processes (e.g. no node offers a named resource);
    the run ends with this message, its logs written."""


@dataclass(frozen=True)
class Where:
    """Where a step process runs: a node the config names (None: the launcher's choice) and a
    GPU id on it; `cuda`: the process uses that GPU (false in CPU runs, where ids are logical)."""

    node: str | None
    gpu: int
    cuda: bool


class Launcher(ABC):
    """Processes of one run. `roles[name]` says what each is for, in error messages."""

    name: ClassVar[str]  # the config's `launcher` value that chooses it
    roles: dict[str, str]

    @abstractmethod
    def queue(self, maxsize: int = 0):
        """A queue the run's processes can all use (put/put_nowait/get/get_nowait)."""

    @abstractmethod
    def event(self):
        """A one-way flag (set / is_set) shared by the run's processes."""

    @abstractmethod
    def shared_floats(self, n: int):
        """n floats (index, assign) every process of the run sees, written without a lock: each
        child writes only its own (heartbeats), the main process reads them."""

    @abstractmethod
    def start(self, name: str, role: str, target: Callable, *args,
              where: Where | None = None) -> None:
        """Start `target(*args)` as the process `name`; `role` describes it for messages;
        `where`: a step process's node and GPU (None: the sink and the client, which run
        beside the main process)."""

    def check_nodes(self, nodes: dict[str, str]) -> None:
        """Before the run starts: ConfigError naming the config field (`nodes`: node -> the
        field that names it) of a node this launcher cannot place anything on."""

    def all_started(self) -> None:
        """Every process of the run has been started (a launcher that places them all at once,
        or connects them to each other, does it now)."""

    def cause(self, name: str) -> str:
        """What the launcher knows of how process `name` ended, beyond its exit code."""
        return ""

    def clock_bounds(self) -> dict[str, float]:
        """Per process on another host, the error bound of its clock's offset to the main
        process's, in seconds (empty: every process reads the main process's clock)."""
        return {}

    @abstractmethod
    def dead(self) -> list[tuple[str, str, int]]:
        """(name, role, exit code) of every process that has exited."""

    @abstractmethod
    def pid(self, name: str) -> int | None:
        """The operating system's id of process `name`, where it has one on this machine."""

    @abstractmethod
    def kill(self, name: str) -> None:
        """End process `name` now, without a grace period (it stopped responding)."""

    @abstractmethod
    def stop(self, grace_s: float = 3.0, pump: Callable[[], None] | None = None) -> list[str]:
        """Let every process leave on its own within `grace_s` (calling `pump()` meanwhile), then
        end the rest, and free what the run's processes shared (temporary files, shared
        memory); return the names of those that had to be forced."""
