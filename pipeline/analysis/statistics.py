"""The statistics every report, comparison and capacity verdict uses: nearest-rank percentiles,
summaries of a list of values, and rates from a schedule and its completions."""
from __future__ import annotations

import math

PERCENTILE_METHOD = ("nearest-rank: the smallest observed value with at least p% of the values "
                     "at or below it (no interpolation)")
MIN_FOR_P99 = 100  # requests a p99 needs to mean anything
MIN_FOR_P90 = 10


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list: the value of rank ceil(p/100 * n)."""
    n = len(sorted_values)
    if n == 0:
        return None
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be in 0..100, got {p}")
    # Integer arithmetic where possible, so p99 of 100 values is exactly rank 99.
    if float(p).is_integer():
        rank = (int(p) * n + 99) // 100
    else:
        rank = math.ceil(round(p * n / 100, 9))
    return sorted_values[max(rank, 1) - 1]


def describe(values, percentiles=(50, 90, 99), with_max: bool = True) -> dict:
    """count, mean, the percentiles (p50, ...) and max of the values."""
    values = sorted(values)
    out: dict = {"count": len(values), "mean": math.fsum(values) / len(values) if values else None}
    for p in percentiles:
        out[f"p{p}"] = percentile(values, p)
    if with_max:
        out["max"] = values[-1] if values else None
    return out


def event_rate(times) -> float | None:
    """Events per second between the first and the last of `times`: (n - 1) / span. The rate of
    a schedule (arrivals) or of completions, free of the time before the first and after the last
    event; None with fewer than two events or a zero span (everything at once)."""
    times = sorted(times)
    if len(times) < 2 or times[-1] == times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0])
