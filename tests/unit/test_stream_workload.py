"""Streams as a workload: Poisson arrivals per stream and across streams, segments numbered in
order per stream, warm-ups opening every stream, and rows of a segment defined by the model."""
import numpy as np
import pytest
import torch
from run_helpers import REPO
from scipy import stats

from models.flavr.served import FLAVRServed
from models.r2plus1d.served import R2Plus1DServed
from pipeline.config import load_config
from pipeline.serving.loadgen import poisson_offsets, stream_marks
from pipeline.serving.workload import build_workload, stream_owner

MEAN_MS, STREAMS = 40.0, 5


def per_stream_gaps(n: int, seed: int) -> list[np.ndarray]:
    times = poisson_offsets(n, MEAN_MS, seed)
    marks = stream_marks(n, STREAMS, seed)
    return [np.diff(times[marks == s], prepend=0.0) for s in range(STREAMS)]


def test_each_streams_arrivals_are_poisson_at_its_share_of_the_rate():
    for gaps in per_stream_gaps(30_000, seed=4):
        assert gaps.mean() == pytest.approx(STREAMS * MEAN_MS / 1000, rel=0.05)
        assert stats.kstest(gaps, "expon", args=(0, STREAMS * MEAN_MS / 1000)).pvalue > 0.001


def test_streams_are_independent_of_each_other():
    # counts per stream in fixed windows of time: independent Poisson counts are uncorrelated
    times, marks = poisson_offsets(30_000, MEAN_MS, 9), stream_marks(30_000, STREAMS, 9)
    bins = np.arange(0.0, times[-1], 1.0)
    counts = [np.histogram(times[marks == s], bins)[0] for s in range(STREAMS)]
    corr = np.corrcoef(counts)
    assert np.abs(corr[np.triu_indices(STREAMS, 1)]).max() < 0.1


def test_marks_leave_the_arrival_times_as_they_are():
    assert np.array_equal(poisson_offsets(50, MEAN_MS, 3), poisson_offsets(50, MEAN_MS, 3))
    assert not np.array_equal(stream_marks(200, STREAMS, 3), stream_marks(200, STREAMS, 4))


def streams_config(count: int):
    cfg = load_config(REPO / "configs" / "streams-cpu.yaml")
    cfg.videos.streams.count = count
    return cfg


def test_segments_are_numbered_in_issue_order_per_stream():
    w = build_workload(streams_config(3), FLAVRServed(), ["a.mp4", "b.mp4"], warmup=3,
                       measured=60, mean_interval_ms=10, seed=1)
    assert w.kind == "streams" and w.streams == 3 and len(w.requests) == 63
    seen: dict[int, list[int]] = {}
    for rid, video, frames, warmup, stream, segment in w.requests:
        assert video == ["a.mp4", "b.mp4"][stream % 2] and frames == 4
        seen.setdefault(stream, []).append(segment)
    assert all(segs == list(range(len(segs))) for segs in seen.values())


def test_warm_ups_take_every_stream_in_turn():
    w = build_workload(streams_config(3), FLAVRServed(), ["a.mp4"], warmup=4, measured=5,
                       mean_interval_ms=10, seed=1)
    warm = [(stream, segment) for _, _, _, warmup, stream, segment in w.requests if warmup]
    assert warm == [(0, 0), (1, 0), (2, 0), (0, 1)]


def test_a_clip_workload_has_no_streams():
    cfg = load_config(REPO / "configs" / "cpu-smoke.yaml")
    w = build_workload(cfg, FLAVRServed(), ["a.webm", "b.webm"], 1, 4, 10, 0)
    assert w.kind == "clips" and {r[4] for r in w.requests} == {None}
    assert w.rows_per_request == cfg.frames_per_request - 1


def test_clip_warm_ups_skip_clips_known_to_fail_and_measured_requests_do_not():
    cfg = load_config(REPO / "configs" / "cpu-smoke.yaml")
    clips = ["bad.webm", "a.webm", "b.webm"]
    w = build_workload(cfg, FLAVRServed(), clips, 4, 6, 10, 0, failing=frozenset({"bad.webm"}))
    warm = [video for _, video, _, warmup, _, _ in w.requests if warmup]
    measured = [video for _, video, _, warmup, _, _ in w.requests if not warmup]
    assert warm == ["a.webm", "b.webm", "a.webm", "b.webm"]
    assert measured == [clips[i % 3] for i in range(4, 10)]
    every_clip_fails = build_workload(cfg, FLAVRServed(), ["bad.webm"], 2, 1, 10, 0,
                                      failing=frozenset({"bad.webm"}))
    assert [r[1] for r in every_clip_fails.requests] == ["bad.webm"] * 3


def test_a_stream_keeps_its_decode_worker():
    assert [stream_owner(s, 3) for s in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_flavr_segment_of_n_frames_is_n_windows_once_running():
    m = FLAVRServed(factor=4)
    assert m.rows_per_segment(8) == 8 and m.outputs_per_segment(8) == 32
    frames = torch.arange(11.0).view(11, 1, 1, 1).expand(11, 3, 2, 2)  # 1 behind, 8, 2 ahead
    rows = m.make_segment_rows(frames, behind=1, ahead=2)
    assert rows[:, 0, :, 0, 0].tolist() == [[i, i + 1, i + 2, i + 3] for i in range(8)]


def test_r2plus1d_segments_are_whole_clips_without_context():
    m = R2Plus1DServed()
    assert (m.stream_behind, m.stream_ahead) == (0, 0)
    assert m.rows_per_segment(32) == 2 and m.check_segment(24) is not None
