"""One clock for a run that spans hosts: each process's offset to the main process's clock.

A process on the main process's machine (same boot id) reads the same CLOCK_MONOTONIC: offset 0,
error 0. Elsewhere it asks the hub (an actor on the main process's machine) for the time several
times and keeps the round trip that took least: the hub's reading lies somewhere inside that
round trip, so taking its middle errs by at most half of it. The offset is measured once at
start-up; monotonic clocks of two hosts drift apart by parts per million (tens of microseconds
over a ten-minute run), below the round trip's error.
"""
from __future__ import annotations

import time

import ray

ROUND_TRIPS = 16


def measure_offset(hub, rounds: int = ROUND_TRIPS,
                   same_host_is_exact: bool = True) -> tuple[float, float]:
    """(offset, error bound) in seconds: main clock = time.monotonic() + offset, within bound.
    `same_host_is_exact`: on the hub's machine, answer (0, 0) without measuring."""
    from pipeline.serving.launch.ray_hub import _boot_id

    if same_host_is_exact and ray.get(hub.boot_id.remote()) == _boot_id() != "":
        return 0.0, 0.0
    best = None
    for _ in range(rounds):
        sent = time.monotonic()
        remote = ray.get(hub.now.remote())
        back = time.monotonic()
        if best is None or back - sent < best[0]:
            best = (back - sent, remote - (sent + back) / 2)
    rtt, offset = best
    return offset, rtt / 2
