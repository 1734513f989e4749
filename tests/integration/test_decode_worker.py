"""The decode worker as one process: a real spawned worker on the CPU, fed requests on its input
queue, read back through its slot pool and control messages as the next step and the main
process would (started once for the module: a worker's start-up imports torch and DALI)."""
from __future__ import annotations

import time

import pytest
import torch

from models.flavr.served import FLAVRServed
from models.flavr.windows import make_windows
from pipeline.analysis.records import Outcome, StepStamps
from pipeline.clock import now
from pipeline.media.decode import FrameDecoder
from pipeline.media.synthetic import write_clip
from pipeline.serving.heartbeat import HeartbeatBoard
from pipeline.serving.launch.local import LocalLauncher
from pipeline.serving.transport.items import Request
from pipeline.serving.transport.messages import Attached, Ready, Record, Start
from pipeline.serving.transport.queues import GLOBAL, Output
from pipeline.serving.transport.slots import PoolReader, load_handle
from pipeline.serving.workers.child import ChildContext
from pipeline.serving.workers.decode import DecodeSpec, decode_main

NAME = "decode[0]@gpu0"
FRAMES = 4  # frames per request: 3 windows
START_S = 180  # imports and a DALI pipeline build on a loaded 2-core machine


class Worker:
    def __init__(self, folder):
        self.records: dict[int, list] = {}  # request id -> its reports so far
        self.clip = write_clip(folder / "clip.webm", width=32, height=32, frames=6, fps=24,
                               codec="vp9", seed=1)
        self.launcher = launcher = LocalLauncher()
        self.board = HeartbeatBoard(launcher.shared_floats(2), [NAME], 30.0, 600.0)
        self.ctx = ChildContext(NAME, launcher.queue(), launcher.queue(), launcher.event(), "cpu",
                                0, heartbeat=self.board.heart(NAME))
        self.requests, self.out, free = launcher.queue(), launcher.queue(), launcher.queue()
        output = Output({GLOBAL: self.out}, {GLOBAL: "next.in"}, False, 8, "stop")
        spec = DecodeSpec("decode", 0, FLAVRServed(), None, [(32, 32)], FRAMES, "auto",
                          str(self.clip), 2, self.requests, output, free)
        launcher.start(NAME, "the decode step", decode_main, self.ctx, spec)
        ready = self.message(Ready, START_S)
        self.reader = PoolReader(load_handle(ready.pool), free, torch.device("cpu"))
        self.ctx.setup.put(Start({}))
        self.message(Attached, 60)

    def message(self, kind, timeout: float):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = self.ctx.control.get(timeout=end - time.monotonic())
            if isinstance(msg, Record):
                self.records.setdefault(msg.request_id, []).append(msg.record)
            if isinstance(msg, kind):
                return msg
        raise AssertionError(f"no {kind.__name__} from the worker within {timeout} s")

    def send(self, request_id: int, video) -> None:
        t = now()
        self.requests.put(Request(request_id, str(video), FRAMES, False, t, issued=t, t_put=t))

    def record_of(self, request_id: int, kind: type, timeout: float = 60):
        """The request's first report of type `kind` (records.StepStamps, Outcome)."""
        end = time.monotonic() + timeout
        while True:
            found = [r for r in self.records.get(request_id, []) if isinstance(r, kind)]
            if found:
                return found[0]
            self.message(Record, end - time.monotonic())

    def close(self) -> None:
        self.ctx.stop.set()
        self.launcher.stop(grace_s=5.0)


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    w = Worker(tmp_path_factory.mktemp("decode_worker"))
    yield w
    w.close()


def test_a_request_becomes_windows_in_a_slot_of_the_workers_pool(worker):
    worker.send(0, worker.clip)
    item = worker.out.get(timeout=60)
    assert [p.request_id for p in item.parts] == [0] and item.rows == FRAMES - 1
    got = worker.reader.tensors(item)["frames"].clone()
    worker.reader.release(item.slot)
    expected = make_windows(FrameDecoder("cpu").decode(worker.clip, FRAMES))
    assert torch.equal(got, expected)


def test_the_worker_records_where_and_how_long_it_decoded(worker):
    sent = now()
    worker.send(1, worker.clip)
    item = worker.out.get(timeout=60)
    worker.reader.release(item.slot)
    stamps = worker.record_of(1, StepStamps)
    assert stamps.step == "decode" and stamps.device == "cpu:0" and stamps.replica == 0
    assert stamps.compute_s > 0 and stamps.taken >= sent  # taken after it was queued
    assert item.parts[0].frames == FRAMES  # the frames it decoded travel with the request


def test_a_bad_clip_fails_its_request_alone_and_the_next_is_served(worker, tmp_path):
    bad = tmp_path / "notes.webm"
    bad.write_text("not a video\n")
    worker.send(2, bad)
    worker.send(3, worker.clip)
    item = worker.out.get(timeout=60)
    worker.reader.release(item.slot)
    assert [p.request_id for p in item.parts] == [3]
    outcome = worker.record_of(2, Outcome)
    assert outcome.status == "error"
    assert outcome.error.startswith("decode: ") and str(bad) in outcome.error


def test_an_idle_worker_keeps_beating(worker):
    first = worker.board.last_beat(NAME)
    time.sleep(0.5)
    assert worker.board.last_beat(NAME) > first
    assert worker.board.overdue() == []
