"""A runner on its own: real slot pools and queues, the TEST sleep step (a known service time),
in a thread of the test process. What it hands on, what it gives back, and what it reports."""
import queue
import time

import pytest
from worker_helpers import ROWS, SIZE, Upstream, Worker, output, sleep_step_config

from pipeline.analysis.records import StepStamps
from pipeline.serving.workers.runner import RunnerSpec, _Runner

SLEEP_MS = 50.0


def start_runner(upstream: Upstream, *, batch: int = 1, n_slots: int = 4, sizes=(SIZE,),
                 on_full: str = "stop", bound: int = 16, queued=()):
    """A runner that has opened the upstream pool; `queued` items are in its queue before it
    starts taking."""
    step_cfg, model_cfg = sleep_step_config(SLEEP_MS)
    out, out_q = output(bound, on_full)
    in_q, free = queue.Queue(), queue.Queue()
    spec = RunnerSpec("work", step_cfg, model_cfg, 0, list(sizes), ROWS, batch, n_slots, in_q, out,
                      free, {"up": upstream.free})
    for item in queued:
        in_q.put(item)
    worker = Worker("work[0]@gpu0", lambda ctx: _Runner(ctx, spec).serve())
    worker.start({"up": upstream.pool.handle_bytes()})
    return worker, in_q, out_q, free


@pytest.fixture
def upstream():
    return Upstream()


def test_a_batch_is_one_call_and_each_request_is_reported_with_its_stamps_in_path_order(upstream):
    worker, in_q, out_q, _ = start_runner(upstream, batch=2,
                                          queued=[upstream.item(0), upstream.item(1)])
    try:
        out = out_q.get(timeout=30)
        recs = {m.request_id: m.record for m in worker.records(2)}
    finally:
        worker.close()
    assert [p.request_id for p in out.parts] == [0, 1] and out.rows == 2 * ROWS
    s = recs[0]
    assert isinstance(s, StepStamps) and s == recs[1]  # one call: the same stamps
    assert (s.step, s.device, s.replica, s.batch) == ("work", "cpu:0", 0, 2)
    began = s.finished - s.compute_s - s.publish_s
    assert s.taken <= s.gathered <= s.slot_held <= began + 1e-6 <= s.finished <= s.handed_on
    assert s.compute_s == pytest.approx(2 * SLEEP_MS / 1000, rel=0.5, abs=0.02)  # per request


def test_input_slots_go_back_to_their_producer_once_the_work_is_done(upstream):
    worker, in_q, out_q, _ = start_runner(upstream)
    try:
        for rid in range(3):
            in_q.put(upstream.item(rid))
        for _ in range(3):
            out_q.get(timeout=30)
        worker.records(3)
        deadline = time.monotonic() + 10
        while upstream.free.qsize() < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.close()
    assert upstream.free.qsize() == 4  # every slot the test took


def test_waiting_for_a_free_output_slot_is_reported_as_slot_wait(upstream):
    worker, in_q, out_q, free = start_runner(upstream, n_slots=1)
    try:
        in_q.put(upstream.item(0))
        first = out_q.get(timeout=30)  # holds the runner's only slot
        in_q.put(upstream.item(1))
        time.sleep(0.4)  # the runner waits for its slot meanwhile
        free.put(first.slot)
        out_q.get(timeout=30)
        recs = {m.request_id: m.record for m in worker.records(2)}
    finally:
        worker.close()
    s = recs[1]
    assert s.slot_held - s.gathered >= 0.35
    assert recs[0].slot_held - recs[0].gathered < 0.35


def test_a_take_of_two_frame_sizes_runs_as_two_calls_one_after_the_other():
    up = Upstream(sizes=[SIZE, (8, 16)])
    worker, in_q, out_q, _ = start_runner(up, batch=2, sizes=[SIZE, (8, 16)],
                                          queued=[up.item(0, SIZE), up.item(1, (8, 16))])
    try:
        outs = [out_q.get(timeout=30), out_q.get(timeout=30)]
        recs = {m.request_id: m.record for m in worker.records(2)}
    finally:
        worker.close()
    assert sorted(o.size for o in outs) == [(8, 16), SIZE]
    assert recs[0].batch == recs[1].batch == 1
    first, second = sorted(recs.values(), key=lambda r: r.taken)
    # The second size's turn came once the first call was done: its wait is queue wait.
    assert second.taken >= first.finished - 1e-6


def test_a_put_into_a_full_queue_is_handed_on_late_but_finished_on_time(upstream):
    worker, in_q, out_q, _ = start_runner(upstream, on_full="block", bound=1)
    try:
        in_q.put(upstream.item(0))
        in_q.put(upstream.item(1))
        time.sleep(0.5)  # the second output waits for room in the full queue
        out_q.get(timeout=30)
        out_q.get(timeout=30)
        recs = {m.request_id: m.record for m in worker.records(2)}
    finally:
        worker.close()
    s = recs[1]
    assert s.handed_on - s.finished >= 0.2  # its work was done long before the put returned
