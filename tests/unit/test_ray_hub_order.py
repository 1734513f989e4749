"""The hub puts back in order what Ray may hand it out of order: an async actor runs calls as
they reach it, so a sender's numbered puts and heartbeat pushes can come early or late
(tests/integration/test_ray_launcher.py shows it on a real cluster)."""
import asyncio

import pytest

pytest.importorskip("ray", reason="the hub is part of the Ray launcher (pip install -e '.[ray]')")

from pipeline.serving.launch.ray_hub import Hub  # noqa: E402


def drain(hub: Hub, qid: int) -> list:
    return asyncio.run(hub.get_many(qid, 100, 0.01))


def test_puts_that_come_early_wait_for_the_ones_made_before_them():
    hub = Hub()
    asyncio.run(hub.new_queue(1, 0))
    for count in (2, 0, 3):
        asyncio.run(hub.put_in_order(1, f"a{count}", "a", count))
    assert drain(hub, 1) == ["a0"]  # a1 has not come: a2 and a3 wait for it
    asyncio.run(hub.put_in_order(1, "a1", "a", 1))
    assert drain(hub, 1) == ["a1", "a2", "a3"]
    assert hub.held == {}


def test_each_sender_is_put_in_order_on_its_own():
    hub = Hub()
    asyncio.run(hub.new_queue(1, 0))
    asyncio.run(hub.put_in_order(1, "b1", "b", 1))
    asyncio.run(hub.put_in_order(1, "a0", "a", 0))  # b's gap holds back only b
    asyncio.run(hub.put_in_order(1, "b0", "b", 0))
    assert drain(hub, 1) == ["a0", "b0", "b1"]


def test_a_heartbeat_push_that_comes_late_does_not_undo_a_later_one():
    hub = Hub()
    asyncio.run(hub.new_floats(3, 2))
    asyncio.run(hub.set_floats(3, {0: 5.0, 1: 7.0}, "w", 2))
    asyncio.run(hub.set_floats(3, {0: 4.0}, "w", 1))  # made before, came after: ignored
    asyncio.run(hub.set_floats(3, {1: 9.0}, "v", 0))  # another writer: no order between them
    assert asyncio.run(hub.read_floats(3)) == [5.0, 9.0]
