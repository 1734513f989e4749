"""A second Ctrl-C while a checkpoint is written: the checkpoint saved before stays whole, the
half-written one leaves no folder behind, and the command ends in one line (exit 130)."""
import os
import signal

import pytest

from pipeline.train import checkpoint as ckpt
from pipeline.train.__main__ import main
from pipeline.train.model import build_train_model, make_optimizer, make_schedule


@pytest.fixture
def model():
    flavr, _ = build_train_model(2, "cpu", seed=0)
    optimizer = make_optimizer(flavr.parameters(), lr=1e-4)
    scheduler = make_schedule(optimizer, warmup=1, total=8, final_fraction=0.01)
    return flavr, optimizer, scheduler


def _steps(folder) -> set[str]:
    return {ckpt.load_sharded_metadata(folder, "model")["step"]}


def test_an_interrupted_save_keeps_the_last_checkpoint_and_leaves_no_temporary(
        tmp_path, monkeypatch, model):
    folder = ckpt.save(tmp_path / "checkpoint", *model, 3, [])
    real_save_file = ckpt.save_file

    def interrupt(*args, **kwargs):  # Ctrl-C halfway: after the shards, at the RNG file
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_file", interrupt)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(folder, *model, 5, [])
    monkeypatch.setattr(ckpt, "save_file", real_save_file)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"]
    assert _steps(folder) == {"3"} and ckpt.check(folder, 2) == 3


def test_a_signal_during_the_swap_waits_until_the_new_checkpoint_is_in_place(
        tmp_path, monkeypatch, model):
    folder = ckpt.save(tmp_path / "checkpoint", *model, 3, [])
    real_rename = type(folder).rename
    renames = []

    def rename_then_signal(self, target):  # SIGINT right after the old folder moved aside
        renames.append(target)
        result = real_rename(self, target)
        if len(renames) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(type(folder), "rename", rename_then_signal)
    with pytest.raises(KeyboardInterrupt):  # delivered, but only once both renames are done
        ckpt.save(folder, *model, 5, [])
    assert len(renames) == 2
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"]
    assert _steps(folder) == {"5"}


def test_a_ctrl_c_before_training_starts_ends_in_one_line(tmp_path, monkeypatch, capsys):
    from pipeline.train import loop

    def interrupted(*args, **kwargs):  # Ctrl-C while the data or the model loads
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train", interrupted)
    code = main(["--set", f"data.root={tmp_path}", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 130
    assert err.startswith("interrupted;") and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()
