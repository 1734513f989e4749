"""The second model through the same serving pipeline on the CPU: real child processes, real
decode of generated clips, real R(2+1)D-18 stage ranges, shared-memory slot pools."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from run_helpers import options as run_options, saved_outputs
from video_helpers import REPO

from pipeline.config import config_from_dict
from pipeline.serving.orchestrator import RunOptions, run

SIZE = 24  # frames brought to 24x24: the whole network at a size a 2-core machine runs quickly

WHOLE = [{"name": "decode", "kind": "decode", "gpus": [0]},
         {"name": "r2plus1d", "kind": "model", "stages": ["stem", "head"], "gpus": [0]}]
SPLIT = [{"name": "decode", "kind": "decode", "gpus": [0], "queue": "per_gpu"},
         {"name": "front", "kind": "model", "stages": ["stem", "layer1"], "gpus": [0]},
         {"name": "back", "kind": "model", "stages": ["layer2", "head"], "gpus": [1]}]


def make_config(steps: list[dict], name: str = "r21", frames: int = 16,
                resolution: list | None = (SIZE, SIZE)):
    return config_from_dict({
        "name": name, "device": "cpu",
        "videos": {"synthetic": {"count": 2, "width": 48, "height": 32, "frames": 32,
                                 "fps": 25, "codec": "vp9", "seed": 1}},
        "frames_per_request": frames,
        "model": {"name": "r2plus1d", "precision": "fp32",
                  "resolution": None if resolution is None else list(resolution)},
        "pipeline": steps,
    })


def options(tmp_path: Path, **over) -> RunOptions:
    # Bulk, and longer limits: R(2+1)D's 16-frame clips are slow to start and run on the CPU.
    base = dict(mean_interval_ms=0, videos=3, start_timeout_s=240, stall_timeout_s=120)
    return run_options(tmp_path, **{**base, **over})


# One run of each placement, shared by the tests that only read its results (a run costs
# seconds of child start-up on two cores): the default options, the scores saved as tensors.
PLACEMENTS = {"whole": WHOLE, "split": SPLIT}


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    runs = {}

    def get(name: str):
        if name not in runs:
            tmp = tmp_path_factory.mktemp(f"shared-{name}")
            runs[name] = run(make_config(PLACEMENTS[name], name=name),
                             options(tmp, save_outputs=True, save_tensors=True))
        return runs[name]

    return get


@pytest.mark.parametrize("name", list(PLACEMENTS))
def test_every_request_is_one_classified_clip(shared_run, name):
    result = shared_run(name)
    assert result.error is None, result.error
    assert [r["status"] for r in result.rows] == ["ok"] * 4
    for row in result.rows:
        assert row["frames"] == 16 and row["output_frames"] == 1  # one clip classified
        for step in [s["name"] for s in PLACEMENTS[name]]:
            assert row[f"{step}.compute_s"] > 0, step
    assert "R(2+1)D-18 serving benchmark" in result.report
    assert "output clips/s" in result.report


def test_split_scores_equal_whole_scores_exactly(shared_run):
    outs = {}
    for name in ("whole", "split"):
        result = shared_run(name)
        assert result.error is None, result.error
        outs[name] = saved_outputs(result)
    assert outs["whole"].keys() == outs["split"].keys() and len(outs["whole"]) == 4
    for key, scores in outs["whole"].items():
        assert scores.shape == (1, 400) and scores.dtype == torch.float32
        assert torch.equal(scores, outs["split"][key]), key


def test_a_request_of_32_frames_is_two_clips_saved_as_top_classes(tmp_path):
    result = run(make_config(WHOLE, frames=32), options(tmp_path, videos=2, warmup=0, batch=2,
                                                        save_outputs=True))
    assert result.error is None, result.error
    assert [r["output_frames"] for r in result.rows] == [2, 2]
    saved = sorted((result.run_dir / "outputs").glob("*.json"))
    assert len(saved) == 2
    clips = json.loads(saved[0].read_text())["clips"]
    assert [c["first_frame"] for c in clips] == [0, 16]
    assert all(len(c["top5"]) == 5 and 0 <= c["top1"] < 400 for c in clips)


def test_frames_are_brought_to_112x112_when_the_config_sets_no_resolution(tmp_path):
    result = run(make_config(WHOLE, resolution=None), options(tmp_path, videos=1, warmup=0,
                                                              save_outputs=True, save_tensors=True))
    assert result.error is None, result.error
    assert result.summary["run"]["frame_sizes"] == [[112, 112]]
    assert [r["status"] for r in result.rows] == ["ok"]


def test_the_shipped_cpu_smoke_config_runs_through_benchmark_py(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "benchmark.py", "-c", "configs/r2plus1d-cpu-smoke.yaml", "-mi", "0",
           "-v", "2", "--warmup", "0", "--no-progress", "--logs", str(tmp_path / "logs")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "R(2+1)D-18 serving benchmark: r2plus1d-cpu-smoke" in proc.stdout
    assert "2 ok measured requests, 2 clips" in proc.stdout
