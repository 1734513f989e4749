"""The model-alone benchmark (benchmark.py --model-only): its work count and a real tiny CPU run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from models.flavr.flops import flavr_macs, flavr_stage_macs
from models.flavr.model import FLAVR, STAGES, FLAVRConfig
from pipeline.cli import benchmark

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED_2X_256 = 266e9  # FLAVR 2x multiply-adds per window at 256x256, as usually quoted


def counted_macs(factor: int, height: int, width: int) -> int:
    """Multiply-adds of every conv a real forward pass runs, read off the tensors it sees."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        taps = module.weight[0, 0].numel()
        if isinstance(module, nn.ConvTranspose3d):  # each input position scatters to cout * taps
            total += inputs[0][0].numel() * module.weight.shape[1] * taps
        else:  # each output position gathers cin * taps
            total += output[0].numel() * module.weight.shape[1] * taps

    torch.manual_seed(0)
    model = FLAVR(FLAVRConfig(factor)).eval()
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose3d)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.rand(1, 3, 4, height, width))
    return total


def test_macs_at_256_match_the_published_count():
    macs = flavr_macs(256, 256, 2)
    assert abs(macs - PUBLISHED_2X_256) / PUBLISHED_2X_256 < 0.02
    assert macs == 266_070_659_072  # the exact count, pinned


def test_macs_scale_with_pixels():
    base = flavr_macs(256, 256)  # all but the gates' few C*C products per window scale
    assert flavr_macs(512, 512) == pytest.approx(4 * base, rel=1e-5)
    assert flavr_macs(720, 1280) == pytest.approx(base * 720 * 1280 / 256 ** 2, rel=1e-5)
    # 720p: ~7.5 TFLOP per output frame of the 2x model
    assert 2 * flavr_macs(720, 1280) / 1e12 == pytest.approx(7.5, rel=0.02)


def test_macs_count_the_padded_frame():
    assert flavr_macs(250, 250) == flavr_macs(256, 256)


@pytest.mark.parametrize("factor, size", [(2, (40, 48)), (4, (36, 44))])
def test_macs_equal_what_a_forward_pass_runs(factor, size):
    assert flavr_macs(*size, factor) == counted_macs(factor, *size)


def test_stage_macs_cover_every_stage():
    per_stage = flavr_stage_macs(256, 256)
    assert list(per_stage) == list(STAGES)
    assert all(v > 0 for v in per_stage.values())


def test_config_is_required_without_model_only(capsys):
    with pytest.raises(SystemExit) as exc:
        benchmark.main([])
    assert exc.value.code == 2
    assert "-c/--config" in capsys.readouterr().err


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("model_bench") / "bench.json"
    md = out.with_suffix(".md")
    cmd = [sys.executable, "benchmark.py", "--model-only", "--device", "cpu", "--sizes", "16x16",
           "--iters", "2", "--warmup", "1", "--stage-iters", "2", "--batch", "1",
           "--modes", "original,fast", "--out", str(out), "--markdown", str(md)]
    # One thread: on a busy shared CPU, OpenMP threads waiting for each other at every op make
    # wall times swing by several times; a single thread slows down evenly instead. Few calls:
    # a CPU without bf16 instructions runs the bf16 "fast" mode ~40x slower than fp32. 16x16
    # frames: the whole model still runs every stage (its smallest maps are 2x2), and each bf16
    # call costs a quarter of one at 32x32 (the run took ~10 s instead of ~38 s on two cores).
    # An fp32 call is then ~60 ms, which a busy CPU can easily double: the stage-by-stage sum is
    # the fastest of two passes, as the call time is the fastest of two calls.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout, md.read_text()


def test_cpu_run_writes_the_environment_and_settings(cpu_run):
    result, stdout, _ = cpu_run
    assert result["environment"]["device"] == "cpu"
    assert result["environment"]["torch"] == torch.__version__
    assert "host clock" in result["timing"]
    assert "--model-only" in result["command"]
    assert result["settings"]["modes"] == ["original", "fast"]
    assert result["ceiling"]["tflops"] > 0
    assert "host clock" in stdout


def test_cpu_run_measures_every_mode(cpu_run):
    result, _, _ = cpu_run
    (size,) = result["sizes"]
    assert size["size"] == "16x16" and size["macs_per_window"] == flavr_macs(16, 16)
    rows = {(r["mode"], r["batch"]): r for r in size["rows"]}
    assert set(rows) == {("original", 1), ("fast", 1)}
    for (mode, batch), r in rows.items():
        assert "error" not in r
        assert r["frames_per_s"] > 0 and r["tflops"] > 0
        assert r["ms_min"] <= r["ms_median"]
        assert r["frames_per_s"] == pytest.approx(batch * 1 / (r["ms_median"] / 1e3))
        assert len(r["ms_all"]) == 2
    assert rows[("original", 1)]["speedup"] == pytest.approx(1.0)
    # The best is the fastest row but the reference, however slow (a CPU without bf16 runs
    # "fast" far slower than "original"); its speed-up is against the reference.
    assert (size["best"]["mode"], size["best"]["batch"]) == ("fast", 1)
    assert size["best"]["speedup"] == pytest.approx(rows[("fast", 1)]["speedup"])


def test_cpu_run_stage_times_add_up_to_the_call(cpu_run):
    result, _, _ = cpu_run
    for r in result["sizes"][0]["rows"]:
        assert [s["stage"] for s in r["stages"]] == list(STAGES)
        total = sum(s["ms"] for s in r["stages"])
        assert total == pytest.approx(r["stage_sum_ms"])
        assert sum(s["share"] for s in r["stages"]) == pytest.approx(1.0)
        # Stage by stage runs the same code as one call; only the timing breaks differ. Fastest
        # against fastest, with room for a busy shared CPU (on a GPU they agree within 1%).
        assert 0.5 < r["stage_sum_min_ms"] / r["ms_min"] < 2.0


def test_cpu_run_reports_accuracy_against_fp32(cpu_run):
    result, _, _ = cpu_run
    for r in result["sizes"][0]["rows"]:
        assert {"rel_l2", "rel_l2_detail", "psnr_db", "max_abs_err"} <= set(r)
        if r["precision"] == "bf16":
            assert 0 < r["rel_l2"] < 1e-2
            assert r["psnr_db"] > 30
        else:  # original on a CPU is the fp32 reference itself
            assert r["rel_l2"] < 1e-6


def test_cpu_run_prints_and_writes_the_summary_table(cpu_run):
    _, stdout, markdown = cpu_run
    last = stdout.strip().splitlines()
    header = next(line for line in last if line.lstrip().startswith("size"))
    for column in ("frames/s", "ms/call", "TFLOP/s", "% ceiling", "peak GiB", "rel-L2", "PSNR dB",
                   "speed-up"):
        assert column in header
    assert "| size | mode | batch | frames/s |" in markdown
    assert "### 16x16 fast batch 1" in markdown


@pytest.mark.parametrize("flags, names", [
    (["--device", "gpu"], "flag '--device'"),
    (["--device", "cuda:7"] if not torch.cuda.is_available() or torch.cuda.device_count() < 8
     else ["--device", "cuda:99"], "flag '--device'"),
    (["--iters", "0"], "flag '--iters'"),
    (["--warmup", "-1"], "flag '--warmup'"),
    (["--checkpoint", "/nonexistent/flavr.pth"], "/nonexistent/flavr.pth"),
    (["--out", "/proc/flavr-bench.json"], "flag '--out'"),
    (["--markdown", "/proc/no/such/bench.md"], "flag '--markdown'"),
])
def test_bad_flags_are_refused_before_measuring(tmp_path, flags, names):
    """One line naming the flag or file, status 2, before anything is measured (the measurement
    used to run first and the results were lost at --out), nothing written."""
    cmd = [sys.executable, "benchmark.py", "--model-only", "--device", "cpu", "--sizes", "16x16",
           "--iters", "1", "--warmup", "0", "--batch", "1", "--modes", "original",
           "--no-ceiling", *flags]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], proc.stderr
    assert proc.stdout == ""  # no report: nothing was measured
