"""Slot pools across real spawned processes on the CPU: shared memory, read in place (the GPU
cases, CUDA IPC and peer copies, are in tests/gpu)."""
from __future__ import annotations

import pytest
import torch
from handoff_helpers import check, consume

from pipeline.serving.transport.slots import TensorSpec


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
