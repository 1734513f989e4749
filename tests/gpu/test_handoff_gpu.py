"""Slot pools across real spawned processes: CUDA IPC memory and inter-process events on a GPU (same GPU: read in place; other GPU: one peer copy)."""
from __future__ import annotations

import pytest
import torch
from handoff_helpers import ROUNDS, check, consume, hold_first


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_same_gpu_reads_in_place_after_the_producers_event():
    pending, in_place = consume("cuda:0", "cuda:0")
    check(pending)
    assert all(in_place)  # same-GPU hand-off copies nothing


@pytest.mark.gpu2
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_other_gpu_gets_one_peer_copy_ordered_by_the_producers_event():
    pending, in_place = consume("cuda:0", "cuda:1")
    check(pending)
    assert not any(in_place)


@pytest.mark.gpu2
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_other_gpu_copies_an_early_group_while_the_producer_still_computes():
    costs = []
    pending, _ = consume("cuda:0", "cuda:1", grouped=True, costs=costs)
    check(pending)
    # 'x' crossed during the producer's ~0.1 s wait; only 'y' (a few bytes) was left to copy
    # once the producer was done: what the consumer waited for is far below that wait.
    assert len(costs) == ROUNDS
    assert all(exposed < 0.01 for _, exposed in costs), costs


@pytest.mark.gpu2
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_other_gpu_batches_of_two():
    pending, _ = consume("cuda:0", "cuda:1", batch=2)
    check(pending)


@pytest.mark.gpu2
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_other_gpu_gives_the_slot_back_once_copied_not_once_computed():
    came_while_busy, returned_early, pending = hold_first("cuda:0", "cuda:1")
    assert returned_early
    # The producer got its slot back and wrote its third item into it while the consumer's
    # stream was still busy before reading the first item, which it read from its own copy.
    assert came_while_busy
    check(pending)


@pytest.mark.gpu2
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_slots_go_back_once_computed_when_asked(monkeypatch):
    monkeypatch.setenv("FLAVR_SLOT_RETURN", "computed")
    came_while_busy, returned_early, pending = hold_first("cuda:0", "cuda:1")
    assert not returned_early and not came_while_busy
    check(pending)
