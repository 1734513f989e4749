"""The load generator: when each request is due, and issuing requests on that schedule.

Requests arrive as a Poisson process (exponential gaps of a given mean, drawn from a seeded
generator so a run can be repeated exactly) or all at once (bulk, mean interval 0). As in MLPerf
LoadGen, every request keeps its *scheduled* time: latency is counted from it, and a client that
falls behind issues late requests at once rather than shifting the schedule, so queueing delay is
never hidden (no coordinated omission).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from pipeline.clock import now, sleep_until

# Longest single sleep while waiting for a request's time, so a stop request is seen promptly.
_STOP_POLL_S = 0.05

# Warm-ups draw their gaps from a stream of their own, so the measured schedule depends only on
# (count, mean interval, seed), whatever the warm-up.
MEASURED_STREAM, WARMUP_STREAM = 0, 1
_MARKS = 2  # the stream marks' generator is seeded apart from the arrival times'


def poisson_offsets(n: int, mean_interval_ms: float, seed: int,
                    stream: int = MEASURED_STREAM) -> np.ndarray:
    """Scheduled issue times (seconds after the phase's start) of n requests.

    The cumulative sum of n exponential gaps with mean `mean_interval_ms`, so the first request is
    due one gap after the start. mean_interval_ms == 0 is bulk mode: every request is due at 0.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not mean_interval_ms >= 0:
        raise ValueError(f"mean_interval_ms must be >= 0, got {mean_interval_ms}")
    if mean_interval_ms == 0:
        return np.zeros(n)
    rng = np.random.default_rng(seed if stream == MEASURED_STREAM else [seed, stream])
    gaps = rng.exponential(mean_interval_ms / 1000.0, size=n)
    return np.cumsum(gaps)


def stream_marks(n: int, n_streams: int, seed: int, stream: int = MEASURED_STREAM) -> np.ndarray:
    """Which of `n_streams` streams each of n arrivals of a poisson_offsets schedule belongs to.

    Each arrival goes to a stream drawn uniformly and independently (a generator of its own, so
    the arrival times are those of poisson_offsets whatever the streams). By the marking theorem
    each stream's arrivals are then a Poisson process of its own at 1/n_streams of the rate, the
    streams are independent, and together they are the whole schedule: Poisson per stream and
    across streams at once.
    """
    if n_streams < 1:
        raise ValueError(f"n_streams must be >= 1, got {n_streams}")
    rng = np.random.default_rng([seed, stream, _MARKS])
    return rng.integers(0, n_streams, size=n)


def run_schedule(offsets, t0: float, send: Callable[[int, float], object],
                 should_stop: Callable[[], bool]) -> int:
    """Issue request i at t0 + offsets[i] by calling send(i, scheduled_time); return how many went.

    A request whose time has already passed is sent at once, still carrying its own scheduled time;
    later requests keep theirs. send returning False (the first queue is full) ends the schedule;
    that request does not count as sent. should_stop() is polled while waiting.
    """
    sent = 0
    for i, offset in enumerate(offsets):
        scheduled = t0 + float(offset)
        while True:
            if should_stop():
                return sent
            t = now()
            if t >= scheduled:
                break
            sleep_until(min(scheduled, t + _STOP_POLL_S))
        if send(i, scheduled) is False:
            break
        sent += 1
    return sent
