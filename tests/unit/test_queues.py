"""Queue placement and the overflow policy (transport/queues.py). The routing code works on any
queue with put/put_nowait/get/get_nowait; here Python's own thread queues, whose items are
visible at once (a multiprocessing queue hands them over through a feeder thread)."""
from __future__ import annotations

import queue
import threading
import time

import pytest

from pipeline.serving.transport.items import Request
from pipeline.serving.transport.queues import (
    GLOBAL,
    Output,
    QueueFull,
    Router,
    drain,
    get_batch,
    queue_name,
    take,
)


def request(i: int) -> Request:
    return Request(i, "clip.webm", 4, False, scheduled=0.0)


def never() -> bool:
    return False


def test_queue_names_say_step_and_gpu():
    assert queue_name("flavr", GLOBAL) == "flavr.in"
    assert queue_name("flavr", 1) == "flavr.in[gpu1]"


def test_a_per_gpu_output_routes_each_producer_to_its_own_gpu():
    queues = {0: queue.Queue(), 1: queue.Queue()}
    out = Output(queues, {0: "f.in[gpu0]", 1: "f.in[gpu1]"}, True, 8, "stop")
    out.router(1).put(request(5), never)
    assert queues[0].empty() and queues[1].get_nowait().request_id == 5


def test_a_global_output_takes_every_producer():
    q = queue.Queue()
    out = Output({GLOBAL: q}, {GLOBAL: "f.in"}, False, 8, "stop")
    for gpu in (0, 1, 3):
        out.router(gpu).put(request(gpu), never)
    assert [q.get_nowait().request_id for _ in range(3)] == [0, 1, 3]


def test_put_stamps_the_enqueue_time():
    q = queue.Queue()
    item = request(0)
    before = time.monotonic()
    Router({GLOBAL: q}, False, 0, {GLOBAL: "f.in"}, 8).put(item, never)
    assert before <= q.get_nowait().t_put <= time.monotonic()


def test_a_full_queue_under_stop_raises_naming_the_queue_and_its_bound():
    router = Router({GLOBAL: queue.Queue(maxsize=1)}, False, 0, {GLOBAL: "flavr.in"}, 1, "stop")
    router.put(request(0), never)
    with pytest.raises(QueueFull, match=r"queue 'flavr.in' is full \(bound 1\)") as info:
        router.put(request(1), never)
    assert info.value.queue_name == "flavr.in"


def test_a_full_queue_under_block_waits_for_room():
    q = queue.Queue(maxsize=1)
    router = Router({GLOBAL: q}, False, 0, {GLOBAL: "flavr.in"}, 1, "block")
    router.put(request(0), never)
    threading.Timer(0.3, q.get).start()
    assert router.put(request(1), never) is True
    assert q.get(timeout=5).request_id == 1


def test_a_blocked_put_gives_up_when_the_run_stops():
    q = queue.Queue(maxsize=1)
    router = Router({GLOBAL: q}, False, 0, {GLOBAL: "flavr.in"}, 1, "block")
    router.put(request(0), never)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    assert router.put(request(1), stop.is_set) is False
    assert q.qsize() == 1


def test_get_batch_takes_what_is_queued_up_to_the_batch_size():
    q = queue.Queue()
    for i in range(5):
        q.put(request(i))
    batch, t_get = get_batch(q, 3, never)
    assert [r.request_id for r in batch] == [0, 1, 2] and t_get is not None
    batch, _ = get_batch(q, 3, never)
    assert [r.request_id for r in batch] == [3, 4]  # never waits to fill a batch


def test_get_batch_runs_idle_while_waiting_and_returns_nothing_when_stopping():
    idle_calls = []
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    batch, t_get = get_batch(queue.Queue(), 4, stop.is_set, poll_s=0.01,
                             idle=lambda: idle_calls.append(1))
    assert (batch, t_get) == ([], None)
    assert len(idle_calls) >= 2


def test_take_waits_for_the_first_item_then_takes_only_what_is_queued():
    q = queue.Queue()
    threading.Timer(0.2, lambda: [q.put(i) for i in range(3)]).start()
    assert take(q, 2, timeout=10.0) == [0, 1]
    assert take(q, 5, timeout=0.01) == [2]
    assert take(q, 5, timeout=0.05) == []  # nothing came within the timeout


def test_take_asks_a_queue_that_offers_get_many_once():
    class Hubbed(queue.Queue):  # the shape of a Ray run's HubQueue
        def get_many(self, max_items, timeout=None):
            self.calls = getattr(self, "calls", 0) + 1
            return [self.get_nowait() for _ in range(min(max_items, self.qsize()))]

    q = Hubbed()
    for i in range(4):
        q.put(i)
    assert take(q, 3, timeout=1.0) == [0, 1, 2] and q.calls == 1


def test_drain_empties_a_queue_without_waiting():
    q = queue.Queue()
    for i in range(4):
        q.put(i)
    assert drain(q, limit=3) == [0, 1, 2]
    assert drain(q) == [3]
    assert drain(q) == []
