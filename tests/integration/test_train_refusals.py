"""What the training command refuses, in one line naming the file or flag (exit 2), before it
loads data or makes its output folder: checkpoints cut short, a model of another factor, stops
that are no step of the run; and what `export` refuses the same way."""
import os

import pytest

from pipeline.train import checkpoint as ckpt
from pipeline.train.__main__ import main
from pipeline.train.model import build_train_model, make_optimizer, make_schedule

CUT_BYTES = 1_000_000  # a copy that stopped early: the header is whole, the tensors are not


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A fresh 2x model saved at step 3 by the project's own code: an intact full checkpoint,
    and a full checkpoint, a weights folder and an exported file each with one file cut to
    CUT_BYTES. Returns (intact checkpoint, {kind: (what --resume gets, the file cut)})."""
    root = tmp_path_factory.mktemp("saved")
    flavr, _ = build_train_model(2, "cpu", seed=0)
    optimizer = make_optimizer(flavr.parameters(), lr=1e-4)
    scheduler = make_schedule(optimizer, warmup=1, total=8, final_fraction=0.01)
    intact = ckpt.save(root / "intact", flavr, optimizer, scheduler, 3, [])
    full = ckpt.save(root / "checkpoint", flavr, optimizer, scheduler, 3, [])
    weights = ckpt.save_weights(root / "weights", flavr, 3)[0].parent
    exported = ckpt.export(weights, root / "flavr-2x.safetensors")
    cut = {"checkpoint": (full, full / "model-00003.safetensors"),
           "weights": (weights, weights / "model-00003.safetensors"),
           "exported": (exported, exported)}
    for _, victim in cut.values():
        os.truncate(victim, CUT_BYTES)
    return intact, cut


def run(tmp_path, *args) -> list[str]:
    """The training command's argument list; data.root names no dataset, so a refusal that
    came too late fails on the data instead of training."""
    return ["--set", f"data.root={tmp_path / 'no-dataset'}", "--out", str(tmp_path / "run"),
            *map(str, args)]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize("kind", ["checkpoint", "weights", "exported"])
def test_a_resume_with_a_file_cut_short_is_refused_naming_that_file(saved, kind, tmp_path, capsys):
    resume, victim = saved[1][kind]
    assert main(run(tmp_path, "--resume", resume)) == 2
    err = one_error_line(capsys)
    assert err.startswith(f"error: config field '--resume': {victim}: not a readable "
                          f".safetensors file, damaged or cut short ("), err
    assert not (tmp_path / "run").exists()


def test_a_resume_of_another_factor_is_refused_in_one_line(saved, tmp_path, capsys):
    intact, _ = saved
    assert main(run(tmp_path, "--set", "model.factor=4", "--resume", intact)) == 2
    assert one_error_line(capsys) == (f"error: config field '--resume': {intact}: holds a 2x "
                                      f"model; this run trains 4x")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("stop_at", [-3, 0])
def test_a_stop_before_the_first_step_is_refused(stop_at, tmp_path, capsys):
    assert main(run(tmp_path, "--stop-at", stop_at)) == 2
    assert one_error_line(capsys) == (f"error: config field '--stop-at': must be a positive "
                                      f"integer; got {stop_at}")
    assert not (tmp_path / "run").exists()


def test_a_stop_not_past_the_resumed_step_is_refused(saved, tmp_path, capsys):
    intact, _ = saved
    assert main(run(tmp_path, "--resume", intact, "--stop-at", 3)) == 2
    assert one_error_line(capsys) == (f"error: config field '--stop-at': must be past step 3, "
                                      f"where --resume {intact} continues; got 3")


def test_a_run_without_its_dataset_leaves_a_given_folder_as_it_was(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("kept\n")
    assert main(run(tmp_path)) == 2
    assert one_error_line(capsys).startswith("error: config field 'data.root': no manifest.json")
    assert sorted(os.listdir(out)) == ["notes.txt"] and (out / "notes.txt").read_text() == "kept\n"


def test_export_refuses_a_missing_folder_and_a_shard_cut_short(saved, tmp_path, capsys):
    out = tmp_path / "flavr-2x.safetensors"
    missing = tmp_path / "missing"
    assert main(["export", str(missing), str(out)]) == 2
    assert one_error_line(capsys) == f"error: {missing}: no such checkpoint folder or weights file"
    folder, victim = saved[1]["checkpoint"]
    assert main(["export", str(folder), str(out)]) == 2
    assert one_error_line(capsys).startswith(f"error: {victim}: not a readable .safetensors file")
    assert os.listdir(tmp_path) == []
