"""A slot pool's producer takes every returned slot from its free queue at once and hands them
out one by one (on a Ray run every call to that queue is a round trip to the hub)."""
import queue
import threading

import torch

from pipeline.serving.transport.slots import SlotPool, TensorSpec


def pool_of(n_slots: int):
    free = queue.Queue()
    pool = SlotPool("p", torch.device("cpu"), {"x": TensorSpec((2, 3), torch.float32)}, n_slots,
                    free)
    return pool, free


def test_each_free_slot_is_handed_out_once_from_one_take():
    pool, free = pool_of(3)
    assert pool.acquire(lambda: False) == 0
    assert free.empty()  # the other two were taken along and are kept by the pool
    assert [pool.acquire(lambda: False) for _ in range(2)] == [1, 2]


def test_acquire_waits_for_a_returned_slot_and_gives_up_when_stopping():
    pool, free = pool_of(2)
    taken = [pool.acquire(lambda: False) for _ in range(2)]
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    assert pool.acquire(stop.is_set, poll_s=0.01) is None
    for slot in reversed(taken):  # consumers give slots back in their own order
        free.put(slot)
    assert [pool.acquire(lambda: False) for _ in range(2)] == [1, 0]
