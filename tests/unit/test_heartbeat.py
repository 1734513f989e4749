"""The heartbeat board: who is overdue, and for how long. Times are given explicitly where the
test is about the arithmetic, so a slow machine cannot make it pass or fail."""
from __future__ import annotations

import pytest

from pipeline.clock import now
from pipeline.serving.heartbeat import HeartbeatBoard
from pipeline.serving.launch.local import SharedFloats

NAMES = ["sink", "client", "flavr[0]@gpu0"]


@pytest.fixture
def board():
    floats = SharedFloats(2 * len(NAMES))
    yield HeartbeatBoard(floats, NAMES, limit_s=30.0, long_call_s=600.0)
    floats.close()


def test_nobody_is_overdue_before_beating(board):
    assert board.overdue(at=now() + 1e6) == []


def test_a_child_is_overdue_only_past_its_limit_and_for_as_long_as_it_was_silent(board):
    board.heart("flavr[0]@gpu0").beat()
    beat = board.last_beat("flavr[0]@gpu0")
    assert board.overdue(at=beat + 29.9) == []
    [(name, silent)] = board.overdue(at=beat + 31.0)
    assert name == "flavr[0]@gpu0" and silent == pytest.approx(31.0)


def test_the_most_silent_is_named_first(board):
    board.heart("sink").beat()
    board.heart("flavr[0]@gpu0").beat()
    t = board.last_beat("flavr[0]@gpu0")
    late = board.overdue(at=t + 100)
    assert [name for name, _ in late] == ["sink", "flavr[0]@gpu0"]


def test_allow_extends_the_promise_for_one_call(board):
    heart = board.heart("flavr[0]@gpu0")
    with heart.allow(120.0):
        t = board.last_beat("flavr[0]@gpu0")
        assert board.overdue(at=t + 100) == []
        assert board.overdue(at=t + 121)
    t = board.last_beat("flavr[0]@gpu0")
    assert board.overdue(at=t + 31)  # back to the usual limit after the call


def test_allow_without_a_time_grants_as_long_as_start_up(board):
    heart = board.heart("flavr[0]@gpu0")
    with heart.allow():
        t = board.last_beat("flavr[0]@gpu0")
        assert board.overdue(at=t + 599) == []


def test_a_retired_child_is_never_overdue(board):
    heart = board.heart("client")
    heart.beat()
    heart.retire()
    assert board.overdue(at=now() + 1e6) == []


def test_the_board_refuses_too_few_floats():
    floats = SharedFloats(3)
    with pytest.raises(ValueError, match="cannot hold 2 heartbeats"):
        HeartbeatBoard(floats, ["a", "b"], 30.0, 600.0)
    floats.close()
