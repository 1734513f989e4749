"""Ctrl-C and SIGTERM during a run: the same clean stop, and the logs are always written."""
from __future__ import annotations

import os
import signal


def install() -> dict | None:
    """SIGTERM behaves like Ctrl-C: the same clean stop, logs still written. Returns the
    handlers to restore (None off the main thread, where signals cannot be handled)."""
    def on_term(signum, frame):
        raise KeyboardInterrupt
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        return None
    return previous


def hold(previous: dict | None) -> None:
    """While the run stops and writes its logs (seconds: the children get a grace period, then
    are terminated), Ctrl-C and SIGTERM only say so: a second Ctrl-C must not lose the logs."""
    if previous is None:
        return

    def on_signal(signum, frame):
        # os.write, not print: a handler that writes to a stream the main code is writing to
        # would raise.
        os.write(2, b"\nstopping: writing the logs, a few seconds\n")
    for s in previous:
        signal.signal(s, on_signal)


def restore(previous: dict | None) -> None:
    if previous is not None:
        for s, handler in previous.items():
            if handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(s, handler)
