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
    assert err.startswith(f"error: flag '--resume': {victim}: not a readable "
                          f".safetensors file, damaged or cut short ("), err
    assert not (tmp_path / "run").exists()


def test_a_resume_of_another_factor_is_refused_in_one_line(saved, tmp_path, capsys):
    intact, _ = saved
    assert main(run(tmp_path, "--set", "model.factor=4", "--resume", intact)) == 2
    assert one_error_line(capsys) == (f"error: flag '--resume': {intact}: holds a 2x "
                                      f"model; this run trains 4x")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("stop_at", [-3, 0])
def test_a_stop_before_the_first_step_is_refused(stop_at, tmp_path, capsys):
    assert main(run(tmp_path, "--stop-at", stop_at)) == 2
    assert one_error_line(capsys) == (f"error: flag '--stop-at': must be a positive "
                                      f"integer; got {stop_at}")
    assert not (tmp_path / "run").exists()


def test_a_stop_not_past_the_resumed_step_is_refused(saved, tmp_path, capsys):
    intact, _ = saved
    assert main(run(tmp_path, "--resume", intact, "--stop-at", 3)) == 2
    assert one_error_line(capsys) == (f"error: flag '--stop-at': must be past step 3, "
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


def _plain_file(path, state: dict) -> str:
    """Weights written as other tools write them: plain safetensors, no metadata."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return str(path)


def test_a_resume_of_weights_in_other_shapes_is_refused_naming_the_tensor(tmp_path, capsys):
    flavr, _ = build_train_model(2, "cpu", seed=0)
    state = flavr.state_dict()
    state["encoder.stem.0.weight"] = state["encoder.stem.0.weight"][:1]
    resume = _plain_file(tmp_path / "cut-stem.safetensors", state)
    assert main(run(tmp_path, "--resume", resume)) == 2
    err = one_error_line(capsys)
    assert err.startswith(f"error: flag '--resume': {resume}: tensor shapes do not fit the FLAVR "
                          f"2x model trained here: 1 (encoder.stem.0.weight (1, "), err
    assert not (tmp_path / "run").exists()


def test_a_resume_of_a_4x_model_without_metadata_is_refused_by_its_head(tmp_path, capsys):
    flavr, _ = build_train_model(4, "cpu", seed=0)
    resume = _plain_file(tmp_path / "flavr-4x.safetensors", flavr.state_dict())
    assert main(run(tmp_path, "--resume", resume)) == 2
    assert one_error_line(capsys) == (f"error: flag '--resume': {resume}: holds a 4x model; "
                                      f"this run trains 2x")


def test_a_resume_with_nothing_left_to_train_is_refused(saved, tmp_path, capsys):
    intact, _ = saved
    assert main(run(tmp_path, "--resume", intact, "--set", "train.steps=3",
                    "--set", "optim.warmup_steps=1")) == 2
    assert one_error_line(capsys) == (f"error: flag '--resume': {intact} continues at step 3, "
                                      f"and train.steps is 3: nothing is left to train; raise "
                                      f"it, e.g. --set train.steps=1003")


def test_a_checkpoint_whose_state_lacks_the_schedule_is_refused(saved, tmp_path, capsys):
    import json
    import shutil

    intact, _ = saved
    damaged = tmp_path / "damaged"
    shutil.copytree(intact, damaged)
    state = json.loads((damaged / "state.json").read_text())
    del state["scheduler"]
    (damaged / "state.json").write_text(json.dumps(state))
    assert main(run(tmp_path, "--resume", damaged)) == 2
    assert one_error_line(capsys) == (f"error: flag '--resume': {damaged / 'state.json'}: "
                                      f"damaged, it lacks scheduler")


@pytest.mark.parametrize("manifest", ['{"items": [', '{"foo": 1}',
                                      '{"items": [{"kind": "video"}]}'])
def test_a_manifest_that_is_no_dataset_is_refused_naming_it(manifest, tmp_path, capsys):
    root = tmp_path / "dataset"
    root.mkdir()
    (root / "manifest.json").write_text(manifest)
    args = ["--set", f"data.root={root}", "--out", str(tmp_path / "run")]
    assert main(args) == 2
    assert one_error_line(capsys).startswith(f"error: config field 'data.root': "
                                             f"{root / 'manifest.json'}: ")
    assert not (tmp_path / "run").exists()


def test_a_clip_that_does_not_decode_is_refused_naming_it(tmp_path, capsys):
    import json

    root = tmp_path / "dataset"
    root.mkdir()
    (root / "noise.mp4").write_bytes(os.urandom(20_000))
    (root / "manifest.json").write_text(json.dumps(
        {"items": [{"kind": "video", "file": "noise.mp4", "split": "train"}]}))
    args = ["--set", f"data.root={root}", "--set", "data.val_clips=[]", "--set", "train.device=cpu",
            "--out", str(tmp_path / "run")]
    assert main(args) == 2
    assert one_error_line(capsys).startswith(f"error: config field 'data.root': "
                                             f"{root / 'noise.mp4'}: cannot be decoded (")
    assert not (tmp_path / "run").exists()
