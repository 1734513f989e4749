"""A checkpoint cannot run code unless the user says to trust it, and every checkpoint error is
one line naming the file: at a benchmark's validation (--dry-run included), in `interpolate`,
and in a runner inside a run. Real commands in real processes, real files."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import yaml
from checkpoint_helpers import broken_files, crafted_checkpoint, runner_fatal_message
from video_helpers import REPO, run_interpolate, video_clip

from models.flavr.checkpoint import build_model
from pipeline.config import ModelConfig


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """A real FLAVR 2x checkpoint (released layout) whose training entry carries a payload that
    writes a marker file. Removed after the module: it is 170 MB."""
    folder = tmp_path_factory.mktemp("crafted")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights
        state = build_model(2, seed=0).state_dict()
    path = crafted_checkpoint(folder / "FLAVR_2x.pth", folder / "payload-ran", state)
    yield path, folder / "payload-ran"
    path.unlink()


@pytest.fixture
def marker(crafted):
    _, ran = crafted
    ran.unlink(missing_ok=True)
    yield ran
    ran.unlink(missing_ok=True)


def config_file(tmp_path, checkpoint) -> str:
    path = tmp_path / "flavr.yaml"
    path.write_text(yaml.safe_dump({
        "name": "safety", "device": "cpu",
        "videos": {"synthetic": {"count": 1, "width": 32, "height": 32, "frames": 4}},
        "frames_per_request": 4, "model": {"checkpoint": str(checkpoint)},
        "pipeline": [{"name": "decode", "kind": "decode", "gpus": [0]},
                     {"name": "flavr", "kind": "model", "stages": ["stem", "head"], "gpus": [0]}]}))
    return str(path)


def dry_run(config: str, *flags) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "benchmark.py", "-c", config, "--dry-run", *flags],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180)


def one_error_line(result, *needles) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert str(needle) in errors[0], errors[0]
    return errors[0]


# ---- code in a checkpoint ---------------------------------------------------------------------

def test_benchmark_validation_refuses_a_crafted_checkpoint_without_running_it(tmp_path, crafted,
                                                                             marker):
    path, _ = crafted
    line = one_error_line(dry_run(config_file(tmp_path, path)), "model.checkpoint", path,
                          "--trust-checkpoint")
    assert "it asks for exec" in line
    assert not marker.exists()


def test_benchmark_with_trust_checkpoint_loads_what_the_user_chose_to_trust(tmp_path, crafted,
                                                                           marker):
    path, _ = crafted
    result = dry_run(config_file(tmp_path, path), "--trust-checkpoint")
    assert result.returncode == 0, result.stderr
    assert "trust_checkpoint" in result.stdout  # the placement says what the run would do
    assert marker.exists()  # the user opted in: the file was unpickled in full


def test_interpolate_refuses_a_crafted_checkpoint_without_running_it(tmp_path_factory, tmp_path,
                                                                     crafted, marker):
    path, _ = crafted
    clip = video_clip(tmp_path_factory, "vp9", frames=4, fps=12)
    out = tmp_path / "o.mp4"
    result = run_interpolate(clip, "-o", out, "--checkpoint", path, "--device", "cpu")
    one_error_line(result, path, "--trust-checkpoint")
    assert not marker.exists() and not out.exists()


def test_interpolate_with_trust_checkpoint_loads_what_the_user_chose_to_trust(
        tmp_path_factory, tmp_path, crafted, marker):
    path, _ = crafted
    clip = video_clip(tmp_path_factory, "vp9", frames=4, fps=12)
    out = tmp_path / "o.mp4"
    result = run_interpolate(clip, "-o", out, "--checkpoint", path, "--trust-checkpoint",
                             "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert marker.exists() and out.exists()
    assert "trusted as asked" in result.stderr


# ---- files that are not checkpoints -------------------------------------------------------------

@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    return broken_files(tmp_path_factory.mktemp("broken"))


@pytest.mark.parametrize("kind", ["empty", "random"])
def test_benchmark_validation_names_a_broken_checkpoint_in_one_line(tmp_path, broken, kind):
    one_error_line(dry_run(config_file(tmp_path, broken[kind])), "model.checkpoint", broken[kind])


@pytest.mark.parametrize("kind", ["empty", "random"])
def test_interpolate_names_a_broken_checkpoint_in_one_line(tmp_path_factory, tmp_path, broken,
                                                           kind):
    clip = video_clip(tmp_path_factory, "vp9", frames=4, fps=12)
    out = tmp_path / "o.mp4"
    result = run_interpolate(clip, "-o", out, "--checkpoint", broken[kind], "--device", "cpu")
    one_error_line(result, broken[kind])
    assert not out.exists()


def test_a_checkpoint_error_in_a_runner_is_reported_in_one_line(broken):
    # What a run shows when a runner's checkpoint fails after validation passed (the file was
    # replaced in between, say): the runner's one fatal line, which ends the run.
    message, code = runner_fatal_message(ModelConfig(checkpoint=str(broken["random"])))
    assert code == 1
    assert "\n" not in message and "Traceback" not in message
    assert str(broken["random"]) in message and "not a checkpoint" in message
