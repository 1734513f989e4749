"""The load generator: Poisson arrival times and issuing on schedule without coordinated omission."""
import time

import numpy as np
import pytest
from scipy import stats

from pipeline.clock import now
from pipeline.serving.loadgen import poisson_offsets, run_schedule


def test_gaps_have_the_asked_mean():
    offsets = poisson_offsets(20_000, 50.0, seed=1)
    gaps = np.diff(offsets, prepend=0.0)
    assert gaps.mean() == pytest.approx(0.050, rel=0.03)


def test_gaps_are_exponential():
    gaps = np.diff(poisson_offsets(20_000, 50.0, seed=2), prepend=0.0)
    result = stats.kstest(gaps, "expon", args=(0, 0.050))
    assert result.pvalue > 0.01


def test_offsets_are_increasing_and_start_after_zero():
    offsets = poisson_offsets(1000, 10.0, seed=3)
    assert offsets.shape == (1000,)
    assert offsets[0] > 0 and np.all(np.diff(offsets) >= 0)


def test_same_seed_same_schedule_other_seed_other_schedule():
    a = poisson_offsets(100, 20.0, seed=7)
    assert np.array_equal(a, poisson_offsets(100, 20.0, seed=7))
    assert not np.array_equal(a, poisson_offsets(100, 20.0, seed=8))


def test_bulk_mode_schedules_everything_at_start():
    offsets = poisson_offsets(50, 0, seed=0)
    assert offsets.shape == (50,) and np.all(offsets == 0)


def test_no_requests():
    assert poisson_offsets(0, 50.0, seed=0).shape == (0,)


def test_negative_mean_is_refused():
    with pytest.raises(ValueError):
        poisson_offsets(10, -1.0, seed=0)


def test_run_schedule_sends_each_request_at_its_time():
    offsets = np.array([0.0, 0.03, 0.06, 0.12])
    calls = []
    t0 = now() + 0.02
    sent = run_schedule(offsets, t0, lambda i, s: calls.append((i, s, now())), lambda: False)
    assert sent == 4
    assert [c[0] for c in calls] == [0, 1, 2, 3]
    for (i, scheduled, actual), offset in zip(calls, offsets):
        assert scheduled == t0 + offset
        assert actual >= scheduled - 0.001  # never early
        assert actual - scheduled < 0.5  # roughly on time (shared machines are noisy)


def test_late_client_keeps_the_scheduled_times():
    # Every send takes 50 ms but requests are due every 10 ms: the client falls behind. The
    # scheduled times must stay those of the schedule, and late requests go out back to back.
    offsets = np.arange(6) * 0.010
    calls = []

    def slow_send(i, scheduled):
        calls.append((scheduled, now()))
        time.sleep(0.05)

    t0 = now()
    assert run_schedule(offsets, t0, slow_send, lambda: False) == 6
    assert [s for s, _ in calls] == [t0 + o for o in offsets]
    issued = [a for _, a in calls]
    # No waiting between late requests: each went right after the previous send returned.
    assert all(b - a < 0.05 + 0.04 for a, b in zip(issued, issued[1:]))
    assert issued[-1] - calls[-1][0] > 0.1  # it really was behind


def test_send_returning_false_stops_the_schedule():
    calls = []

    def send(i, scheduled):
        calls.append(i)
        return i != 2  # the queue is full on the third request

    assert run_schedule(np.zeros(10), now(), send, lambda: False) == 2
    assert calls == [0, 1, 2]


def test_should_stop_ends_a_long_wait_promptly():
    start = now()
    stop_at = start + 0.1
    sent = run_schedule(np.array([0.0, 30.0]), start, lambda i, s: True, lambda: now() > stop_at)
    assert sent == 1
    assert now() - start < 5.0


def test_the_schedule_commands_rate_is_the_reports_offered_rate(capsys):
    import client

    assert client.main(["-mi", "1500", "-n", "5"]) == 0
    out = capsys.readouterr().out
    offsets = poisson_offsets(5, 1500.0, seed=0)
    offered = 4 / (offsets[-1] - offsets[0])  # (n - 1) / span, as the report defines it
    assert f"realised rate {offered:.2f} requests/s" in out
