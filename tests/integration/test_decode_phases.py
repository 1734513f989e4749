"""Profiling a clip's decode phase by phase on the CPU (pipeline/media/phases.py): real clips,
real decoding with PyAV and DALI's CPU decoder; what `--decode-only --phases` builds on."""
from __future__ import annotations

import time

import pytest
import torch
from video_helpers import video_clip

from pipeline.bench.decode_phases import PHASES, profile_clips
from pipeline.clock import now
from pipeline.media.backends import backend_class
from pipeline.media.backends.base import DecodeBackend
from pipeline.media.decode import FrameDecoder
from pipeline.media.phases import DECODE_PHASES, NO_PHASES, PhaseClock

CPU_BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(
    backend_class(name).unavailable() is not None, reason=f"{name} cannot run here"))
    for name in ("pyav", "dali-cpu")]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return video_clip(tmp_path_factory, "vp9", 48, 32, frames=6)


def test_a_clock_splits_time_into_consecutive_phases_and_adds_up_repeats():
    start = now()
    clock = PhaseClock("cpu")
    time.sleep(0.01)
    clock.mark("a")
    clock.mark("b")
    time.sleep(0.01)
    clock.mark("a")
    assert list(clock.seconds) == ["a", "b"]
    assert clock.seconds["a"] >= 0.02 and clock.seconds["b"] < 0.01
    assert sum(clock.seconds.values()) <= now() - start


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_each_cpu_backend_reports_every_decode_phase_in_order_and_the_same_frames(clip, backend):
    decoder = FrameDecoder("cpu", backend=backend)
    plain = decoder.decode(clip, 4)
    start = now()
    clock = PhaseClock("cpu")
    profiled = decoder.decode(clip, 4, phases=clock)
    wall = now() - start
    assert torch.equal(profiled, plain)
    assert tuple(clock.seconds) == DECODE_PHASES
    assert all(s > 0 for p, s in clock.seconds.items() if p != "other")  # other: may be ~0
    assert sum(clock.seconds.values()) <= wall


def test_the_backend_reports_to_no_one_once_the_profiled_decode_is_done(clip):
    decoder = FrameDecoder("cpu", backend="pyav")
    decoder.decode(clip, 4, phases=PhaseClock("cpu"))
    (backend,) = decoder._backends.values()
    assert backend.phases is NO_PHASES and DecodeBackend.phases is NO_PHASES


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_a_profiled_request_adds_the_workers_post_processing_and_stays_within_its_total(
        clip, backend):
    times = profile_clips(FrameDecoder("cpu", backend=backend), [str(clip)] * 3, 4, (32, 48),
                          "cpu")
    assert tuple(times) == (*PHASES, "total")
    assert all(len(seconds) == 3 for seconds in times.values())
    for k in range(3):
        assert sum(times[p][k] for p in PHASES) <= times["total"][k]
