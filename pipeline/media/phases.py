"""Where one clip's decode time goes, phase by phase: for profiling only
(`benchmark.py --decode-only --phases`).

A decode reports where each of its phases ends, `phases.mark(name)`; the time since the
previous mark (or since the clock started) is that phase's. In order:

    probe   the clip's headers and packet count (probe.py; cached per file after its first read)
    setup   the decoder made or pointed at the clip: file opened, demuxer and parser set up
    decode  the frames decoded
    copy    the decoded pixels copied out of the decoder's buffers into tensors on the device
    colour  YCbCr to float RGB in the stream's colours (colour.py)
    other   the rest of the backend's time after its last mark (all of it for a backend that
            reports no phases)

Decoding that is not profiled reports to NO_PHASES, whose `mark` does nothing, so the normal
path neither waits nor reads a clock. A PhaseClock for a GPU synchronises the device at its start
and at every mark: GPU work is asynchronous, and without the wait a phase's queued kernels (and
NVDEC's work) would be counted in whichever later phase first waits for them. Those waits cost
time the unprofiled path does not spend, so a profiled clip takes longer than an unprofiled one.
"""
from __future__ import annotations

import torch

from pipeline.clock import now

DECODE_PHASES = ("probe", "setup", "decode", "copy", "colour", "other")


class Phases:
    """Nobody is timing: marks cost one call that does nothing."""

    def mark(self, phase: str) -> None:
        pass


NO_PHASES = Phases()


class PhaseClock(Phases):
    """Times consecutive phases on `device`. `seconds` holds each marked phase's time (a phase
    marked more than once, e.g. by a backend and then the one that replaced it, adds up)."""

    def __init__(self, device):
        dev = torch.device(device)
        self._cuda = dev if dev.type == "cuda" else None
        self.seconds: dict[str, float] = {}
        self._sync()  # what was queued before the clock started is not the first phase's
        self._last = now()

    def mark(self, phase: str) -> None:
        self._sync()
        t = now()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + (t - self._last)
        self._last = t

    def _sync(self) -> None:
        if self._cuda is not None:
            # the whole device, not one stream: DALI decodes on streams of its own
            torch.cuda.synchronize(self._cuda)
