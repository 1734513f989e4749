"""Slots given back by a thread once an event completes: not before, in order, and what is still
pending when the consumer closes."""
import queue
import threading

import pytest

from pipeline.serving.transport.slot_returns import SlotReturns, early_returns_wanted


class _Landing:
    """Something to wait on, as a CUDA event is (synchronize), completed by the test."""

    def __init__(self):
        self.done = threading.Event()

    def synchronize(self):
        assert self.done.wait(10)


class _Reader:
    def __init__(self):
        self.free = queue.Queue()

    def release(self, slot):
        self.free.put(slot)


def test_a_slot_goes_back_only_once_its_copy_has_landed_and_in_order():
    reader, returns = _Reader(), SlotReturns("t")
    first, second = _Landing(), _Landing()
    returns.add(reader, 3, first)
    returns.add(reader, 1, second)
    with pytest.raises(queue.Empty):
        reader.free.get(timeout=0.2)
    first.done.set()
    assert reader.free.get(timeout=5) == 3
    second.done.set()
    assert reader.free.get(timeout=5) == 1
    returns.close()


def test_close_gives_back_what_is_pending_then_stops():
    reader, returns = _Reader(), SlotReturns("t")
    landings = [_Landing() for _ in range(3)]
    for slot, landing in enumerate(landings):
        returns.add(reader, slot, landing)
    for landing in landings:
        landing.done.set()
    returns.close()
    assert [reader.free.get_nowait() for _ in range(3)] == [0, 1, 2]
    assert not returns._thread.is_alive()


def test_a_failed_wait_still_gives_the_slot_back():
    class Broken:
        def synchronize(self):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    reader, returns = _Reader(), SlotReturns("t")
    returns.add(reader, 0, Broken())
    assert reader.free.get(timeout=5) == 0
    returns.close()


def test_the_switch(monkeypatch):
    monkeypatch.delenv("FLAVR_SLOT_RETURN", raising=False)
    assert early_returns_wanted()
    monkeypatch.setenv("FLAVR_SLOT_RETURN", "computed")
    assert not early_returns_wanted()
    monkeypatch.setenv("FLAVR_SLOT_RETURN", "never")
    with pytest.raises(ValueError, match="FLAVR_SLOT_RETURN='never'"):
        early_returns_wanted()
