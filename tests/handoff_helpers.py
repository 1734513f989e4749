"""A producer process filling a slot pool and a consumer reading it, for the hand-off tests on the
CPU (tests/integration) and on GPUs (tests/gpu)."""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue

import torch

from pipeline.serving.launch.ipc_leftovers import remove_ipc_leftovers
from pipeline.serving.transport.gather import InputGather
from pipeline.serving.transport.items import Item, Part
from pipeline.serving.transport.slots import (
    PoolReader,
    TensorSpec,
    load_handle,
)

ROWS, N_SLOTS, ROUNDS = 3, 2, 6


GAP_CYCLES = 200_000_000  # ~0.1 s of GPU spinning between the two groups of a grouped slot


def producer(device: str, free_q, out_q, done, grouped=False):
    """Fills slot after slot with a known pattern; round k writes the value k everywhere.
    grouped: 'x' and 'y' are published as two groups, with a long GPU wait between them."""
    from pipeline.serving.transport.slots import SlotPool

    dev = torch.device(device)
    spec = {"x": TensorSpec((ROWS, 4, 8), torch.float32), "y": TensorSpec((ROWS, 2), torch.bfloat16)}
    pool = SlotPool("p", dev, spec, N_SLOTS, free_q, [("x",), ("y",)] if grouped else None)
    out_q.put(("handle", pool.handle_bytes()))
    stream = torch.cuda.Stream(dev) if dev.type == "cuda" else None
    keep = []  # sources stay alive while the side stream may still read them
    for k in range(ROUNDS):
        slot = pool.acquire(lambda: False)
        values = {"x": torch.full((ROWS, 4, 8), float(k), device=dev),
                  "y": torch.full((ROWS, 2), float(k), device=dev, dtype=torch.bfloat16)}
        keep.append(values)
        if stream is not None:
            # Make the write slow enough that a consumer reading without waiting would see old data.
            stream.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(stream):
                torch.cuda._sleep(2_000_000)
                if grouped:
                    rows, layout = pool.write(slot, {"x": values["x"]})
                    pool.publish(slot, stream, 0)
                    torch.cuda._sleep(GAP_CYCLES)
                    layout.update(pool.write(slot, {"y": values["y"]})[1])
                    pool.publish(slot, stream, 1)
                else:
                    rows, layout = pool.write(slot, values)
                    pool.publish(slot, stream)
        else:
            rows, layout = pool.write(slot, values)
        out_q.put(("item", Item("p", slot, rows, [Part(k, 0, ROWS, "v", 4)], (8, 8), layout)))
    done.wait(60)


def consume(device_p: str, device_c: str, batch: int = 1, grouped: bool = False, costs=None):
    """costs: a list that gets (copy seconds, exposed seconds) of each gather."""
    with _producer(device_p, grouped) as (free_q, out_q):
        gather, reader, stream = _consumer(out_q, free_q, device_c)
        seen, in_place = [], []
        pending = []
        while len(seen) < ROUNDS:
            items = [out_q.get(timeout=60)[1] for _ in range(min(batch, ROUNDS - len(seen)))]
            got = gather.gather(items)
            with torch.cuda.stream(stream) if stream is not None else _null():
                sums = {k: v.float().sum(dim=tuple(range(1, v.dim()))).to("cpu", non_blocking=False)
                        for k, v in got.tensors.items()}
            in_place.append(not got.copied and
                            got.tensors["x"].data_ptr() == reader.slots[items[0].slot]["x"].data_ptr())
            if stream is None:
                sums = {k: v.clone() for k, v in sums.items()}
            for it in items:
                seen.append(it.parts[0].request_id)
            if stream is not None:
                stream.synchronize()
                if costs is not None:
                    costs.append((got.copy_seconds(), got.exposed_seconds()))
            gather.release(items, got.returned)
            pending.append((items, sums))
        gather.close()
        return pending, in_place


@contextlib.contextmanager
def _producer(device: str, grouped: bool = False):
    """A producer process running `producer`: yields its (free queue, output queue)."""
    ctx = mp.get_context("spawn")
    free_q, out_q, done = ctx.Queue(), ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=producer, args=(device, free_q, out_q, done, grouped))
    proc.start()
    try:
        yield free_q, out_q
    finally:
        done.set()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join(30)
        remove_ipc_leftovers([proc.pid])  # what its CUDA IPC left in /dev/shm, as the launcher does


def _consumer(out_q, free_q, device: str):
    """The consumer's gather, its reader of the producer's pool, and its stream."""
    kind, data = out_q.get(timeout=120)
    assert kind == "handle"
    dev = torch.device(device)
    stream = torch.cuda.Stream(dev) if dev.type == "cuda" else None
    gather = InputGather(dev, stream)
    reader = PoolReader(load_handle(data), free_q, dev)
    gather.attach(reader)
    return gather, reader, stream


HOLD_CYCLES = 4_000_000_000  # ~2 s of the consumer's stream busy after taking an item


def hold_first(device_p: str, device_c: str):
    """The consumer takes the first item, then keeps its stream busy for ~2 s before reading it.
    Meanwhile the producer, whose pool has two slots, needs the first slot back for its third
    item. Returns (the third item came while the consumer's stream was still busy, the first
    slot was given back as its copy landed, every item's sums as the consumer read them)."""
    with _producer(device_p) as (free_q, out_q):
        gather, _, stream = _consumer(out_q, free_q, device_c)
        items = [out_q.get(timeout=60)[1] for _ in range(N_SLOTS)]  # every slot in use
        got = gather.gather(items[:1])
        returned_early = 0 in got.returned
        with torch.cuda.stream(stream):
            torch.cuda._sleep(HOLD_CYCLES)
            sums = _sums(got.tensors)
        try:
            items.append(out_q.get(timeout=1.5)[1])
            came_while_busy = not stream.query()
        except queue.Empty:
            came_while_busy = False
        stream.synchronize()
        gather.release(items[:1], got.returned)
        pending = [(items[:1], {k: v.cpu() for k, v in sums.items()})]
        for n in range(1, ROUNDS):
            item = items[n] if n < len(items) else out_q.get(timeout=60)[1]
            got = gather.gather([item])
            with torch.cuda.stream(stream):
                sums = _sums(got.tensors)
            stream.synchronize()
            gather.release([item], got.returned)
            pending.append(([item], {k: v.cpu() for k, v in sums.items()}))
        gather.close()
        return came_while_busy, returned_early, pending


def _sums(tensors: dict) -> dict:
    return {k: v.float().sum(dim=tuple(range(1, v.dim()))) for k, v in tensors.items()}


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def check(pending):
    for items, sums in pending:
        expected = []
        for it in items:
            expected += [float(it.parts[0].request_id)] * ROWS
        assert sums["x"].tolist() == [e * 32 for e in expected]
        assert sums["y"].tolist() == [e * 2 for e in expected]
