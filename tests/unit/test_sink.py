"""The sink on its own: real slot pools and queues, in a thread of the test process. It says how
each request ended and gives the slot back; it never stamps completion (the last runner does)."""
import queue

import pytest
from worker_helpers import ROWS, Upstream, Worker

from models.flavr.served import FLAVRServed
from pipeline.analysis.records import Outcome
from pipeline.serving.transport.messages import Record
from pipeline.serving.workers.sink import SinkSpec, _serve


def start_sink(upstream: Upstream, *, check_outputs=False, save_dir=None, save_tensors=False):
    in_q = queue.Queue()
    spec = SinkSpec(in_q, {"up": upstream.free}, model=FLAVRServed(factor=2), save_dir=save_dir,
                    save_tensors=save_tensors, check_outputs=check_outputs)
    worker = Worker("sink", lambda ctx: _serve(ctx, spec))
    worker.start({"up": upstream.pool.handle_bytes()})
    return worker, in_q


@pytest.fixture
def upstream():
    return Upstream(tensor="out")  # the last model step's output, as the sink reads it


def test_each_request_ends_ok_with_its_frame_counts_and_the_slot_goes_back(upstream):
    worker, in_q = start_sink(upstream)
    try:
        item = upstream.item(7)
        in_q.put(item)
        [msg] = worker.records(1)
        rid, outcome = msg.request_id, msg.record
    finally:
        worker.close()
    assert rid == 7 and outcome == Outcome("ok", "", frames=4, output_frames=7)
    assert upstream.free.qsize() == 4  # given back


def test_outputs_holding_nan_fail_their_request_when_checked(upstream):
    worker, in_q = start_sink(upstream, check_outputs=True)
    try:
        in_q.put(upstream.item(1, value=float("nan")))
        in_q.put(upstream.item(2, value=0.25))
        outcomes = {m.request_id: m.record for m in worker.records(2)}
    finally:
        worker.close()
    assert outcomes[1].status == "error" and outcomes[1].error == "output holds NaN or Inf values"
    assert outcomes[2].status == "ok"


def test_saved_outputs_are_the_requests_frames(upstream, tmp_path):
    import torch

    worker, in_q = start_sink(upstream, save_dir=str(tmp_path), save_tensors=True)
    try:
        in_q.put(upstream.item(3, value=0.75))
        [msg] = worker.records(1)
        outcome = msg.record
    finally:
        worker.close()
    assert outcome.status == "ok"
    saved = torch.load(tmp_path / "request000003.pt")
    assert saved.shape[0] == ROWS and torch.all(saved == 0.75)


def test_the_sink_reports_no_completion_time(upstream):
    worker, in_q = start_sink(upstream)
    try:
        in_q.put(upstream.item(0))
        worker.records(1)
    finally:
        worker.close()
    assert all(isinstance(m.record, Outcome) for m in worker.received if isinstance(m, Record))
