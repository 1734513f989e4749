"""--check-outputs against ground truth in stream workloads, end to end on the CPU: real child
processes, clips made by the project's own generator with their truth beside them. A segment's
scores are those computed directly from the clip's decoded frames and its truth file at the
segment's place in the stream (across segment boundaries and the loop's seam); a clip without
truth leaves the columns empty; a truth the model's frames do not fit stops the run. Clip
requests are checked in test_pipeline.py's shared runs."""
from __future__ import annotations

import pytest
import torch
from video_helpers import truth_frames

from pipeline.analysis.quality import psnr, quantize
from pipeline.analysis.requests_csv import read_rows
from pipeline.config import config_from_dict
from pipeline.errors import VideoError
from pipeline.media.decode import FrameDecoder
from pipeline.media.synthetic import write_clip
from pipeline.serving.orchestrator import RunOptions, run

SIZE = 16  # the SSIM window (11) fits; the model is quick
N = 4  # frames per request


def config(videos: dict, factor: int = 2) -> object:
    return config_from_dict({
        "name": "truth", "device": "cpu", "videos": videos, "frames_per_request": N,
        "model": {"factor": factor, "precision": "fp32", "resolution": [SIZE, SIZE],
                  "checkpoint": "random"},
        "pipeline": [{"name": "decode", "kind": "decode", "gpus": [0]},
                     {"name": "flavr", "kind": "model", "stages": ["stem", "head"], "gpus": [0]}]})


def options(tmp_path, videos: int, warmup: int = 1) -> RunOptions:
    return RunOptions(mean_interval_ms=20, videos=videos, warmup=warmup, queue_size=16,
                      logs_root=str(tmp_path / "logs"), progress=False, cpu_threads=1,
                      start_timeout_s=240, stall_timeout_s=120, check_outputs=True,
                      save_outputs=True, save_tensors=True)


def clip(tmp_path, name: str, frames: int, truth_factor: int | None, seed: int = 0):
    return write_clip(tmp_path / name, SIZE, SIZE, frames, 24, "vp9", seed, truth_factor)


def direct_psnr(path, first: int, rows: int, out: torch.Tensor | None = None) -> float:
    """PSNR over a request's gaps straight from the decoded clip and its truth file: of the
    model's saved frames `out` (rows, 1, 3, H, W), or else of averaging the two frames around each
    gap. Row r lies between file frames (first + r) mod T and the next; the gap across the
    loop's seam has no truth."""
    frames = FrameDecoder("cpu").decode(path)
    truth, f = truth_frames(path)
    values = []
    for r in range(rows):
        i = (first + r) % frames.shape[0]
        if i + 1 < frames.shape[0]:
            guess = (frames[i] + frames[i + 1]) / 2 if out is None else out[r, 0]
            values.append(psnr(quantize(guess), truth[i * f + f // 2] / 255.0).clamp(max=100.0))
    return round(torch.stack(values).mean().item(), 6)


def saved(result, row) -> torch.Tensor:
    return torch.load(result.run_dir / "outputs" / f"request{row.request_id:06d}.pt")


def test_a_streams_segments_are_scored_at_their_place_in_the_stream(tmp_path):
    # Stream 0 loops a 6-frame clip with truth in segments of 4: segment 0's last gap reads
    # frame 4 of segment 1, which is frames 4, 5, 0, 1 (its gap 5 -> 0 crosses the loop's seam:
    # no truth); segment 2 is frames 2..5 (its last gap across the seam again); segment 3 is 0..3.
    # Stream 1 plays a clip without truth.
    path = clip(tmp_path, "loop.webm", 6, truth_factor=2)
    plain = clip(tmp_path, "plain.webm", 6, truth_factor=None, seed=1)
    # two warm-ups: both streams are open before the measured schedule
    result = run(config({"paths": [str(path), str(plain)], "streams": {"count": 2}}),
                 options(tmp_path, videos=6, warmup=2))
    assert result.error is None, result.error
    rows = read_rows(result.run_dir / "requests.csv")
    assert {r.status for r in rows} == {"ok"}
    looped = sorted((r for r in rows if r.stream == 0), key=lambda r: r.segment)
    assert [r.segment for r in looped] == [0, 1, 2, 3]
    assert [r.truth_frames for r in looped] == [4, 3, 3, 4]
    for r in looped:
        assert r.avg_psnr_db == direct_psnr(path, N * r.segment, N), r.segment
        assert r.truth_psnr_db == direct_psnr(path, N * r.segment, N, saved(result, r)), r.segment
    bare = [r for r in rows if r.stream == 1]
    assert bare and all(r.truth_frames is None and r.avg_psnr_db is None for r in bare)


def test_a_truth_factor_that_is_not_a_multiple_of_the_models_stops_the_run(tmp_path):
    path = clip(tmp_path, "c.webm", 4, truth_factor=2)
    with pytest.raises(VideoError, match=r"c\.truth\.npz: .*2x.*4x model.*model\.factor \(4\)"):
        run(config({"paths": [str(path)]}, factor=4), options(tmp_path, videos=1))
