"""The model benchmark runs any registered model: R(2+1)D-18 measured for real on the CPU, with
its own work count, units and accuracy measure."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.r2plus1d.flops import r2plus1d_macs
from models.r2plus1d.model import STAGES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("model_bench_r21") / "bench.json"
    cmd = [sys.executable, "benchmark.py", "--model-only", "--model", "r2plus1d", "--device", "cpu",
           "--sizes", "16x24", "--iters", "1", "--warmup", "1", "--stage-iters", "1",
           "--modes", "original,fast",
           "--batch", "2", "--no-ceiling", "--out", str(out), "--markdown", str(out.with_suffix(".md"))]
    # One timed call per mode (test_model_bench's FLAVR run times two): each bf16 call of
    # R(2+1)D takes seconds on a CPU without bf16 instructions, and these tests check what is
    # measured and tabled, not how fast.
    env = dict(os.environ, OMP_NUM_THREADS="1")  # even slow-down on a busy shared CPU
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout, out.with_suffix(".md").read_text()


def test_it_counts_the_models_work_per_clip(cpu_run):
    result, _, _ = cpu_run
    (size,) = result["sizes"]
    assert size["macs_per_clip"] == r2plus1d_macs(16, 24)
    assert list(size["stage_macs"]) == list(STAGES)
    assert result["settings"]["model"] == "r2plus1d" and result["benchmark"] == "r2plus1d-model-only"


def test_it_measures_clips_per_second_and_every_stage(cpu_run):
    result, _, _ = cpu_run
    rows = {(r["mode"], r["batch"]): r for r in result["sizes"][0]["rows"]}
    assert set(rows) == {("original", 1), ("fast", 2)}
    for (_, batch), r in rows.items():
        assert r["clips_per_s"] == pytest.approx(batch / (r["ms_median"] / 1e3))
        assert [s["stage"] for s in r["stages"]] == list(STAGES)


def test_it_judges_scores_by_agreement_with_fp32(cpu_run):
    result, stdout, markdown = cpu_run
    rows = {r["mode"]: r for r in result["sizes"][0]["rows"]}
    assert rows["original"]["top1_agreement"] == 1.0 and rows["original"]["rel_l2"] < 1e-6
    assert 0 < rows["fast"]["rel_l2"] < 5e-2  # bf16
    assert "psnr_db" not in rows["fast"]
    assert "clips/s" in stdout and "top-1 = fp32" in stdout
    assert markdown.startswith("# R(2+1)D-18 action recognition")
