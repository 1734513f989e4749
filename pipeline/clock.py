"""The one clock source for every timestamp the pipeline records.

CLOCK_MONOTONIC is shared by all processes of one machine, so timestamps taken in different
processes can be subtracted directly. A process on another host (a Ray actor on another node)
reads its own machine's monotonic clock plus an offset to the main process's machine, measured
once at start-up (launch/clock_sync.py: the least-delayed of several round trips, error at most
half that round trip), so every stamp of a run is on the main process's clock.
"""
import time

_offset = 0.0  # add to this machine's monotonic clock to get the main process's


def now() -> float:
    """Seconds on the run's clock: the main process's machine-wide monotonic clock."""
    return time.monotonic() + _offset


def set_offset(seconds: float) -> None:
    """This process runs on another host: its stamps are shifted onto the main process's clock."""
    global _offset
    _offset = float(seconds)


def offset() -> float:
    return _offset


def sleep_until(t: float) -> None:
    """Sleep until `now() >= t` (returns at once when `t` has passed)."""
    delay = t - now()
    if delay > 0:
        time.sleep(delay)
