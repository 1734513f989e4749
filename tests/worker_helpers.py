"""A worker (runner or sink) run in a thread of the test process, wired as the orchestrator wires
it: its own control and setup queues, a stop flag, real slot pools (shared-memory CPU tensors), and
an upstream producer pool the test fills."""
from __future__ import annotations

import queue
import threading
import time

import torch

from models.flavr.served import FLAVRServed
from pipeline.config import config_from_dict
from pipeline.serving.steps import decode_output_spec
from pipeline.serving.transport.items import Item, Part
from pipeline.serving.transport.messages import Attached, Ready, Record, Start
from pipeline.serving.transport.queues import Output
from pipeline.serving.transport.slots import SlotPool
from pipeline.serving.workers.child import ChildContext

SIZE = (16, 16)
ROWS = 3  # windows of a 4-frame request


def sleep_step_config(sleep_ms: float = 50.0):
    """(step config, model config) of the TEST sleep step."""
    cfg = config_from_dict({
        "name": "w", "device": "cpu",
        "videos": {"synthetic": {"count": 1, "width": 16, "height": 16, "frames": 4, "fps": 24,
                                 "codec": "vp9", "seed": 0}},
        "frames_per_request": 4,
        "model": {"factor": 2, "precision": "fp32", "resolution": list(SIZE)},
        "pipeline": [{"name": "decode", "kind": "decode", "gpus": [0]},
                     {"name": "work", "kind": "sleep", "sleep_ms": sleep_ms, "gpus": [0]}]})
    return cfg.steps[1], cfg.model


class Upstream:
    """A producer's pool the test writes requests into, as a decode worker would."""

    def __init__(self, n_slots: int = 4, sizes=(SIZE,), name: str = "up", tensor: str = "frames"):
        """`tensor`: the name of the slot's tensor (a model step's last output is 'out')."""
        self.free = queue.Queue()
        self.tensor = tensor
        [spec] = decode_output_spec(FLAVRServed(), ROWS, max(h for h, _ in sizes),
                                    max(w for _, w in sizes)).values()
        self.pool = SlotPool(name, torch.device("cpu"), {tensor: spec}, n_slots, self.free)

    def item(self, request_id: int, size=SIZE, value: float = 0.5) -> Item:
        slot = self.free.get(timeout=5)
        windows = torch.full((ROWS, 3, 4) + tuple(size), value)
        rows, layout = self.pool.write(slot, {self.tensor: windows})
        return Item(self.pool.pool_id, slot, rows, [Part(request_id, 0, rows, "clip.webm", 4)],
                    tuple(size), layout, t_put=time.monotonic())


class Worker:
    """`body(ctx)` in a thread; `messages()` collects what it sent to the main process."""

    def __init__(self, name: str, body):
        self.control, self.setup, self.stop = queue.Queue(), queue.Queue(), threading.Event()
        self.ctx = ChildContext(name, self.control, self.setup, self.stop, "cpu", 0, 1)
        self.error = None
        self.thread = threading.Thread(target=self._main, args=(body,), daemon=True)
        self.thread.start()
        self.received: list = []

    def _main(self, body):
        try:
            body(self.ctx)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            self.error = exc

    def wait_for(self, kind: type, timeout: float = 60.0):
        """The next message of type `kind` (transport/messages.py)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                msg = self.control.get(timeout=0.05)
            except queue.Empty:
                if self.error is not None:
                    raise self.error
                continue
            self.received.append(msg)
            if isinstance(msg, kind):
                return msg
        raise AssertionError(f"no {kind.__name__} message within {timeout} s; got {self.received}")

    def records(self, n: int, timeout: float = 60.0) -> list[Record]:
        """The next n Record messages."""
        return [self.wait_for(Record, timeout) for _ in range(n)]

    def start(self, pools: dict) -> None:
        """The start-up handshake, as the main process does it: ready, start, attached."""
        self.wait_for(Ready)
        self.setup.put(Start(pools))
        self.wait_for(Attached)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive(), "the worker did not stop"
        if self.error is not None:
            raise self.error


def output(bound: int = 16, on_full: str = "stop") -> tuple[Output, queue.Queue]:
    q = queue.Queue(maxsize=bound)
    return Output({None: q}, {None: "next.in"}, False, bound, on_full), q
