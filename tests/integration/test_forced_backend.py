"""A decoder forced with --decode-backend (or FLAVR_DECODE_BACKEND) that cannot decode the run's
clips is refused before anything starts, by --dry-run and the run alike, naming the flag and why
(pipeline/config/decode_backend.py); what can run is still accepted. Run on the CPU, where the
GPU decoders cannot."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import RunSettings, check_settings, load_config
from pipeline.config.decode_backend import check_decode_backend
from pipeline.errors import ConfigError
from pipeline.media.backends import backend_class
from pipeline.serving.gpu_monitor import gpu_count_nvml

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "configs" / "cpu-smoke.yaml")

needs_cpu_machine = pytest.mark.skipif(bool(gpu_count_nvml()), reason="this machine has a GPU")


def benchmark(tmp_path, *flags, env=None) -> subprocess.CompletedProcess:
    run_env = {k: v for k, v in os.environ.items() if k != "FLAVR_DECODE_BACKEND"}
    run_env.update(env or {})
    return subprocess.run([sys.executable, "benchmark.py", "-c", SMOKE, "-v", "1", "--warmup",
                           "0", "--no-progress", "--logs", str(tmp_path / "logs"), *flags],
                          cwd=REPO, env=run_env, capture_output=True, text=True, timeout=300)


def one_error_line(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@needs_cpu_machine
@pytest.mark.parametrize("backend", ["dali-gpu", "pynvvideocodec"])
@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "run"])
def test_a_gpu_decoder_on_a_cpu_run_is_refused_before_anything_starts(tmp_path, backend, dry):
    result = benchmark(tmp_path, "--decode-backend", backend, *(["--dry-run"] if dry else []))
    line = one_error_line(result)
    assert line.startswith("error: flag '--decode-backend': ")
    assert backend in line and "on the CPU" in line and "no GPU" in line
    assert not (tmp_path / "logs").exists()  # no run folder, not even its root


@needs_cpu_machine
def test_the_environment_variable_is_named_when_it_forced_the_decoder(tmp_path):
    line = one_error_line(benchmark(tmp_path, "--dry-run",
                                    env={"FLAVR_DECODE_BACKEND": "pynvvideocodec"}))
    assert "'--decode-backend'" in line and "(from FLAVR_DECODE_BACKEND)" in line


def test_a_cpu_decoder_and_auto_still_pass_the_dry_run(tmp_path):
    for backend in ("pyav", "auto"):
        result = benchmark(tmp_path, "--decode-backend", backend, "--dry-run")
        assert result.returncode == 0, result.stderr


def test_device_cpu_refuses_a_gpu_decoder_whatever_the_machine():
    with pytest.raises(ConfigError) as refused:
        check_settings(RunSettings(device="cpu", decode_backend="dali-gpu"))
    assert refused.value.field == "--decode-backend" and "--device cpu" in str(refused.value)
    check_settings(RunSettings(device="cpu", decode_backend="pyav"))


def test_the_codec_of_a_synthetic_set_is_checked_against_the_decoder():
    cfg = load_config(SMOKE)  # VP9 clips
    cfg.videos.synthetic.codec = "h264"
    with pytest.raises(ConfigError) as refused:
        check_decode_backend("dali-cpu", "cpu", cfg)
    assert "videos.synthetic.codec" in str(refused.value) and "pyav" in str(refused.value)
    check_decode_backend("pyav", "cpu", cfg)
    check_decode_backend("auto", "cpu", cfg)


@pytest.mark.skipif(backend_class("pynvvideocodec").unavailable() is None,
                    reason="PyNvVideoCodec imports here")
def test_a_library_that_does_not_import_is_refused_only_where_the_workers_run_here():
    with pytest.raises(ConfigError) as refused:
        check_decode_backend("pynvvideocodec", "cuda", local=True)
    assert "does not import" in str(refused.value)
    check_decode_backend("pynvvideocodec", "cuda", local=False)  # a Ray node may have it


def test_a_decoder_that_cannot_read_the_synthetic_codec_is_refused_by_the_benchmark(tmp_path):
    """The plan's own check (pipeline/serving/plan.py), which sees the config and the device."""
    line = one_error_line(benchmark(tmp_path, "--decode-backend", "dali-cpu", "--set",
                                    "videos.synthetic.codec=h264", "--device", "cpu",
                                    "--dry-run"))
    assert line == ("error: flag '--decode-backend': dali-cpu decodes vp8, vp9, and the clips "
                    "are h264 (videos.synthetic.codec); use auto or pyav")
    assert not (tmp_path / "logs").exists()
