"""Slot pools across real spawned processes on the CPU: shared memory, read in place (the GPU
cases, CUDA IPC and peer copies, are in tests/gpu)."""
from __future__ import annotations

import multiprocessing as mp

import pytest
import torch
from handoff_helpers import ROUNDS, ROWS, check, consume, producer

from pipeline.serving.transport.slots import PoolReader, TensorSpec, load_handle


def test_cpu_slots_are_read_in_place_from_shared_memory():
    pending, in_place = consume("cpu", "cpu")
    check(pending)
    assert all(in_place)


def test_cpu_batches_gather_several_slots():
    pending, _ = consume("cpu", "cpu", batch=2)
    check(pending)


def test_cpu_slots_published_in_groups_read_whole():
    pending, in_place = consume("cpu", "cpu", grouped=True)
    check(pending)
    assert all(in_place)


def test_a_pool_refuses_groups_that_do_not_name_each_tensor_once():
    import queue

    from pipeline.serving.transport.slots import SlotPool

    spec = {"x": TensorSpec((1, 2), torch.float32), "y": TensorSpec((1, 2), torch.float32)}
    for groups in ([("x",)], [("x", "y"), ("y",)], [("x",), ("z",)]):
        with pytest.raises(ValueError, match="exactly once"):
            SlotPool("p", torch.device("cpu"), spec, 1, queue.Queue(), groups)


def test_a_cpu_pool_opens_in_every_consumer_that_reads_it():
    # Behind a global queue every replica of the next step opens the producer's pool from the
    # same serialised handle; each reads the producer's writes in place.
    ctx = mp.get_context("spawn")
    free_q, out_q, done = ctx.Queue(), ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=producer, args=("cpu", free_q, out_q, done))
    proc.start()
    try:
        _, data = out_q.get(timeout=120)
        readers = [PoolReader(load_handle(data), free_q, torch.device("cpu")) for _ in range(3)]
        for k in range(ROUNDS):
            _, item = out_q.get(timeout=60)
            reader = readers[k % len(readers)]
            x = reader.tensors(item)["x"]
            assert x.shape == (ROWS, 4, 8) and bool((x == float(k)).all()), (k, x)
            reader.release(item.slot)
    finally:
        done.set()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
