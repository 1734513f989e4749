"""The one clock source for every timestamp the pipeline records.

CLOCK_MONOTONIC is shared by all processes of one machine, so timestamps taken in different
processes can be subtracted directly. Runs spanning hosts would need wall-clock alignment here.
"""
import time


def now() -> float:
    """Seconds on the machine-wide monotonic clock."""
    return time.monotonic()


def sleep_until(t: float) -> None:
    """Sleep until `now() >= t` (returns at once when `t` has passed)."""
    delay = t - now()
    if delay > 0:
        time.sleep(delay)
