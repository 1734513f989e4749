"""A child's context: the typed messages it sends, the start handshake, and when it beats.
Real multiprocessing queues and flags; the child's side runs in this process."""
from __future__ import annotations

import pickle
import time

import pytest

from pipeline.analysis.records import Outcome, StepStamps
from pipeline.serving.heartbeat import HeartbeatBoard
from pipeline.serving.launch.local import LocalLauncher
from pipeline.serving.transport.messages import (
    Attached,
    ClientDone,
    Fatal,
    Measure,
    Notice,
    Overflow,
    Ready,
    Record,
    Start,
    Warmed,
)
from pipeline.serving.transport.queues import QueueFull
from pipeline.serving.workers.child import ChildContext

STAMPS = StepStamps("decode", "cpu:0", 0, 1, taken=1.0, gathered=1.0, slot_held=1.001,
                    finished=1.011, compute_s=0.01, publish_s=0.0)


@pytest.fixture
def launcher():
    launcher = LocalLauncher()
    yield launcher
    launcher.stop(grace_s=0.0)


def make_ctx(launcher, heartbeat_s: float = 30.0) -> tuple[ChildContext, HeartbeatBoard]:
    board = HeartbeatBoard(launcher.shared_floats(2), ["decode[0]@gpu0"], heartbeat_s, 600.0)
    ctx = ChildContext("decode[0]@gpu0", launcher.queue(), launcher.queue(), launcher.event(),
                       "cpu", 0, heartbeat=board.heart("decode[0]@gpu0"))
    return ctx, board


def received(q, n: int) -> list:
    return [q.get(timeout=10) for _ in range(n)]


def test_each_method_sends_its_typed_message(launcher):
    ctx, board = make_ctx(launcher)
    ctx.ready(b"pool")
    ctx.attached()
    ctx.record(7, STAMPS)
    ctx.fail(8, "decode: clip.mp4: truncated")
    ctx.fatal("RuntimeError: boom")
    ctx.notice("request 3: could not save")
    ctx.warmed(2, "")
    ctx.client_done(12, "")
    assert received(ctx.control, 8) == [
        Ready("decode[0]@gpu0", b"pool"), Attached("decode[0]@gpu0"),
        Record(7, STAMPS),
        Record(8, Outcome("error", "decode: clip.mp4: truncated")),
        Fatal("decode[0]@gpu0", "RuntimeError: boom"),
        Notice("decode[0]@gpu0", "request 3: could not save"), Warmed(2, ""),
        ClientDone(12, "")]


def test_an_overflow_drops_its_requests_then_says_so(launcher):
    ctx, board = make_ctx(launcher)
    exc = QueueFull("flavr.in", 4)
    ctx.overflow([3, 4], exc)
    assert received(ctx.control, 3) == [
        Record(3, Outcome("dropped", str(exc))),
        Record(4, Outcome("dropped", str(exc))),
        Overflow("decode[0]@gpu0", str(exc))]


def test_messages_are_frozen_and_small_when_pickled():
    record = Record(123456, StepStamps("decode", "cuda:0", 1, 1, taken=12345.001, gathered=12345.001,
                                       slot_held=12345.002, finished=12345.0143,
                                       compute_s=0.0123, publish_s=0.0001, handed_on=12345.015))
    with pytest.raises(AttributeError):
        record.request_id = 1
    data = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
    assert pickle.loads(data) == record
    assert len(data) < 300, len(data)


def test_wait_start_returns_the_start_payload(launcher):
    ctx, board = make_ctx(launcher)
    ctx.setup.put(Start({"decode[0]@gpu0": b"handle"}))
    assert ctx.wait_start() == {"decode[0]@gpu0": b"handle"}


def test_wait_measure_returns_the_measured_start_after_the_start(launcher):
    ctx, board = make_ctx(launcher)
    ctx.setup.put(Start(100.0))
    ctx.setup.put(Measure(102.5))
    assert ctx.wait_start() == 100.0
    assert ctx.wait_measure() == 102.5


def test_wait_start_gives_none_when_the_run_stops_first(launcher):
    ctx, board = make_ctx(launcher)
    ctx.stop.set()
    assert ctx.wait_start(poll_s=0.01) is None


def test_a_child_beats_only_once_it_has_reported_ready(launcher):
    ctx, board = make_ctx(launcher)
    ctx.should_stop()
    assert board.last_beat(ctx.name) is None  # start-up is judged by its own limit
    ctx.ready()
    first = board.last_beat(ctx.name)
    assert first is not None
    time.sleep(0.01)
    ctx.should_stop()
    assert board.last_beat(ctx.name) > first


def test_a_ready_child_that_stops_polling_is_overdue_after_its_limit(launcher):
    ctx, board = make_ctx(launcher, heartbeat_s=0.05)
    ctx.ready()
    assert board.overdue() == []
    time.sleep(0.2)
    [(name, silent)] = board.overdue()
    assert name == ctx.name and silent >= 0.2


def test_allow_silence_covers_one_long_call_and_ends_with_it(launcher):
    ctx, board = make_ctx(launcher, heartbeat_s=0.05)
    ctx.ready()
    with ctx.allow_silence(5.0):
        time.sleep(0.2)
        assert board.overdue() == []
    time.sleep(0.2)
    assert [name for name, _ in board.overdue()] == [ctx.name]


def test_a_child_that_is_not_watched_never_beats(launcher):
    ctx = ChildContext("client", launcher.queue(), launcher.queue(), launcher.event(), "cpu")
    ctx.ready()
    assert ctx.should_stop() is False
    with ctx.allow_silence(1.0):
        pass
