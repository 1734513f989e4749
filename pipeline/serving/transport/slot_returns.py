"""Giving a producer's slot back as soon as the peer copies out of it have landed.

A consumer on another GPU of the node copies each item into buffers of its own (gather.py), so
the producer's slot is free once those copies are done, long before the consumer has computed on
the copy: at saturation the consumer has a batch or two queued on its stream ahead of the new one.
Held until then, the producer's few slots (`pool_slots`) sit idle across the consumer's queued
work, and a split placement's first stage can run out of them while its GPU could work. A thread
per consumer waits for each copy's landing event (a blocking-sync event: it sleeps, it does not
spin) and puts the slot back on its producer's free queue.

Items read in place (same device) are still given back when the consumer's batch is computed, and
so are items pulled from another node: a pull lands in a buffer the consumer keeps per producer
slot (remote.py), which the next pull of that slot would overwrite.

`FLAVR_SLOT_RETURN=computed` gives every slot back when the batch is computed, as before (for
measuring the difference).
"""
from __future__ import annotations

import queue
import threading

from pipeline.switches import env_choice

RETURN_ENV = "FLAVR_SLOT_RETURN"  # copied (default) | computed


def early_returns_wanted() -> bool:
    return env_choice(RETURN_ENV, ("copied", "computed")) == "copied"


class SlotReturns:
    """Puts slots back on their producers' free queues once given events complete, in the order
    they were added (copies land in the order they were issued on a producer's copy stream)."""

    def __init__(self, name: str, device=None):
        self.device = device  # the consumer's CUDA device, made current in the thread
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"{name}-slot-returns",
                                        daemon=True)
        self._thread.start()

    def add(self, reader, slot: int, landed) -> None:
        """Give `slot` back through `reader` once `landed` (an event: synchronize()) completes."""
        self._jobs.put((reader, slot, landed))

    def _run(self) -> None:
        if self.device is not None:
            import torch

            torch.cuda.set_device(self.device)  # the current device is per thread
        while True:
            job = self._jobs.get()
            if job is None:
                return
            reader, slot, landed = job
            try:
                landed.synchronize()
            except Exception:  # noqa: BLE001 - a CUDA error: the consumer's own work raises it
                pass
            reader.release(slot)

    def close(self, timeout: float = 5.0) -> None:
        """Give back what is pending (after its copies land), then stop the thread."""
        self._jobs.put(None)
        self._thread.join(timeout=timeout)
