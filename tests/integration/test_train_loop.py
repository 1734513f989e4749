"""Training on the CPU: the loss falls, a resumed run ends where an unbroken one does, weights
travel through checkpoints and exports, a signal stops a run cleanly, and a run that fails before
its first step leaves no output folder."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_helpers import build, tiny_config

from models.flavr.checkpoint import build_model
from pipeline.errors import CheckpointError, ConfigError
from pipeline.train import checkpoint as ckpt
from pipeline.train.data import TrainData
from pipeline.train.logs import read_rows
from pipeline.train.loop import Trainer, train
from pipeline.train.model import (
    build_train_model,
    lr_factor,
    make_optimizer,
    train_step,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return build(tmp_path_factory.mktemp("data"))


def weights(folder: Path) -> dict:
    return ckpt.load_sharded(folder, "model")[0]


@pytest.fixture(scope="module")
def stopped_at_2(dataset, tmp_path_factory):
    """A 4-step run stopped after step 2, its full checkpoint and bf16 weights written there:
    shared by the tests that resume, export or load from such a run and leave it as it is (each
    training run costs seconds of steps on the CPU and writes ~0.5 GB of checkpoint)."""
    cfg = tiny_config(dataset, train={"steps": 4, "log_every": 1}, data={"val_clips": []})
    out = tmp_path_factory.mktemp("stopped") / "run"
    assert train(cfg, out, stop_at=2) == 0
    return cfg, out


@pytest.mark.parametrize("loss", ["l1", "l2"])
def test_a_few_steps_on_fixed_data_lower_the_loss(dataset, loss):
    torch.manual_seed(0)
    cfg = tiny_config(dataset, data={"real_fraction": 0.5, "crop": 64})
    inputs, targets = TrainData(cfg, "cpu", seed=0, log=lambda *a: None).next_batch(2)
    flavr, net = build_train_model(2, "cpu", seed=0)
    opt = make_optimizer(net.parameters(), lr=5e-4)
    losses = [float(train_step(net, opt, inputs, targets, "fp32", loss=loss)) for _ in range(12)]
    assert sum(losses[-3:]) / 3 < 0.85 * losses[0], losses


def test_resuming_gives_the_same_weights_as_not_stopping(stopped_at_2, tmp_path):
    cfg, piece = stopped_at_2
    assert train(cfg, tmp_path / "whole") == 0
    assert ckpt.is_full(piece / "checkpoint")
    assert train(cfg, tmp_path / "rest", resume=piece / "checkpoint") == 0
    whole, rest = weights(tmp_path / "whole" / "checkpoint"), weights(tmp_path / "rest" / "checkpoint")
    assert whole.keys() == rest.keys()
    assert all(torch.equal(whole[k], rest[k]) for k in whole)
    assert not all(torch.equal(whole[k], weights(piece / "checkpoint")[k]) for k in whole)
    with open(tmp_path / "rest" / "train.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [3, 4]


def test_a_weights_only_folder_resumes_at_its_step_with_fresh_moments(stopped_at_2, tmp_path):
    cfg, a = stopped_at_2
    bf16 = a / "weights"
    assert not ckpt.is_full(bf16) and len(list(bf16.glob("model-*.safetensors"))) >= 1
    with pytest.warns(UserWarning, match="weights only"):
        trainer = Trainer(cfg, tmp_path / "b", resume=bf16)
    try:
        assert trainer.step == 2 and not trainer.optimizer.state
        # The rate ramps up again over optim.rewarm_steps: fresh moments, small first steps.
        expected = cfg.optim.lr * lr_factor(2, 1, 4, cfg.optim.final_lr_fraction) / cfg.optim.rewarm_steps
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(expected)
        saved = weights(bf16)
        assert all(torch.equal(v.to(torch.bfloat16), saved[k]) for k, v in trainer.flavr.state_dict().items())
        assert trainer.run() == 0 and trainer.step == 4
    finally:
        trainer.close()


def test_export_writes_one_file_the_model_loader_reads(stopped_at_2, tmp_path):
    _, run = stopped_at_2
    out = ckpt.export(run / "checkpoint", tmp_path / "flavr-2x.safetensors", "bf16")
    model = build_model(checkpoint=out)
    trained = weights(run / "checkpoint")
    assert model.config.factor == 2
    assert all(torch.equal(v, trained[k].to(torch.bfloat16).float()) for k, v in model.state_dict().items())


def test_an_exported_weights_file_resumes_at_its_step(stopped_at_2, tmp_path):
    # How training continues from the shipped weights/flavr-2x.safetensors.
    cfg, a = stopped_at_2
    exported = ckpt.export(a / "checkpoint", tmp_path / "flavr-2x.safetensors", "bf16")
    with pytest.warns(UserWarning, match="weights only"):
        trainer = Trainer(cfg, tmp_path / "b", resume=exported)
    try:
        assert trainer.step == 2 and not trainer.optimizer.state
        saved = build_model(checkpoint=exported).state_dict()
        assert all(torch.equal(v, saved[k]) for k, v in trainer.flavr.state_dict().items())
        assert trainer.run() == 0 and trainer.step == 4
    finally:
        trainer.close()


def test_a_run_that_fails_before_its_first_step_makes_no_folder(stopped_at_2, dataset, tmp_path):
    cfg, a = stopped_at_2
    cut = ckpt.export(a / "checkpoint", tmp_path / "flavr-2x.safetensors", "bf16")
    os.truncate(cut, 1_000_000)
    with pytest.raises(CheckpointError) as e:
        train(cfg, tmp_path / "resumed", resume=cut)
    assert str(e.value).startswith(f"{cut}: not a readable .safetensors file")
    unknown_clip = tiny_config(dataset, data={"val_clips": ["absent.webm"]})
    with pytest.raises(ConfigError, match="data.val_clips"):
        train(unknown_clip, tmp_path / "validated")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flavr-2x.safetensors"]


def test_a_moving_average_resumes_exactly_and_is_what_is_validated_and_exported(dataset, tmp_path):
    cfg = tiny_config(dataset, train={"steps": 4, "log_every": 1}, val={"every": 2},
                      optim={"ema": 0.5})
    assert train(cfg, tmp_path / "whole") == 0
    assert train(cfg, tmp_path / "piece", stop_at=2) == 0
    assert train(cfg, tmp_path / "rest", resume=tmp_path / "piece" / "checkpoint") == 0
    whole, rest = (ckpt.load_sharded(tmp_path / r / "checkpoint", "ema") for r in ("whole", "rest"))
    assert whole[1]["updates"] == rest[1]["updates"] == "4"
    assert all(torch.equal(whole[0][k], rest[0][k]) for k in whole[0])
    trained = weights(tmp_path / "whole" / "checkpoint")
    assert not all(torch.equal(whole[0][k], trained[k]) for k in trained)
    # Validation: the model columns are the average's, raw_* the trained weights'.
    rows = [r for run in ("piece", "rest") for r in read_rows(tmp_path / run / "val.csv")]
    assert [r["step"] for r in rows] == ["2", "2", "4", "4"]
    assert all(r["raw_psnr"] and r["raw_ssim"] for r in rows)
    # The weights folder and the default export hold the average; --raw the trained weights.
    folder = weights(tmp_path / "whole" / "weights")
    assert all(torch.equal(folder[k], whole[0][k].to(torch.bfloat16)) for k in folder)
    out = ckpt.export(tmp_path / "whole" / "checkpoint", tmp_path / "avg.safetensors", "fp32")
    raw = ckpt.export(tmp_path / "whole" / "checkpoint", tmp_path / "raw.safetensors", "fp32", raw=True)
    got, meta = ckpt.load_sharded(out, "model")
    assert meta["average"] == "true" and all(torch.equal(got[k], whole[0][k]) for k in got)
    got, meta = ckpt.load_sharded(raw, "model")
    assert meta["average"] == "false" and all(torch.equal(got[k], trained[k]) for k in got)


def test_validation_rows_and_plots_are_written(dataset, tmp_path):
    cfg = tiny_config(dataset, train={"steps": 2}, val={"every": 1})
    assert train(cfg, tmp_path / "run") == 0
    with open(tmp_path / "run" / "val.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["clip"]) for r in rows] == [("1", "street.webm"), ("1", "mean"),
                                                      ("2", "street.webm"), ("2", "mean")]
    assert all(float(r["average_psnr"]) > 10 for r in rows)
    for name in ("train.png", "val.png", "config.yaml"):
        assert (tmp_path / "run" / name).stat().st_size > 0


def test_sigterm_finishes_the_step_saves_and_exits_zero(dataset, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pipeline.train", "--out", str(out),
           "--set", f"data.root={dataset}", "--set", "data.val_clips=[street.webm]",
           "--set", "data.crop=32", "--set", "data.photo_size=[80,112]",
           "--set", "train.device=cpu", "--set", "train.steps=1000", "--set", "train.batch_size=1",
           "--set", "train.precision=fp32", "--set", "train.compile=false",
           "--set", "train.channels_last=false", "--set", "train.log_every=1",
           "--set", "optim.warmup_steps=1", "--set", "val.crop=32"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out / "train.csv").exists():
            time.sleep(0.2)
        while time.monotonic() < deadline and len((out / "train.csv").read_text().splitlines()) < 2:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert "SIGTERM" in output
    step = int(ckpt.load_sharded(out / "checkpoint", "model")[1]["step"])
    assert 1 <= step < 1000 and ckpt.is_full(out / "checkpoint")
