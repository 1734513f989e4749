"""What the training commands refuse to write, in one line naming the folder or file (exit 2):
an output folder holding another run (its checkpoint and logs would be replaced), exports over
their own source or onto a folder, and comparison plots they could not make; nothing is left
behind and nothing already there changes."""
import hashlib
import os
from pathlib import Path

import pytest

from pipeline.train import checkpoint as ckpt
from pipeline.train.__main__ import main
from pipeline.train.model import build_train_model, make_optimizer, make_schedule


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "Traceback" not in err, err
    return err.strip()


def contents(folder: Path) -> dict[str, str]:
    """Every file under `folder` by its digest: what must not change."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A folder as a training run leaves it: a full checkpoint at step 3 with its moving
    average, a weights folder of that average, and the logs."""
    root = tmp_path_factory.mktemp("finished") / "run"
    flavr, _ = build_train_model(2, "cpu", seed=0)
    optimizer = make_optimizer(flavr.parameters(), lr=1e-4)
    scheduler = make_schedule(optimizer, warmup=1, total=8, final_fraction=0.01)
    ckpt.save(root / "checkpoint", flavr, optimizer, scheduler, 3, [])
    ckpt.save_weights(root / "weights", flavr, 3, average=True)
    (root / "train.csv").write_text("step,loss\n2,0.5\n3,0.4\n")
    (root / "val.csv").write_text("step,clip,model_psnr,average_psnr\n3,street.webm,27.0,28.0\n")
    return root


def train_args(tmp_path, *args) -> list[str]:
    return ["--set", f"data.root={tmp_path / 'no-dataset'}", *map(str, args)]


def test_an_output_folder_holding_another_run_is_refused_and_kept(run_folder, tmp_path, capsys):
    before = contents(run_folder)
    assert main(train_args(tmp_path, "--out", run_folder)) == 2
    assert one_error_line(capsys) == (
        f"error: flag '--out': {run_folder} holds a training run (checkpoint, weights, "
        f"train.csv, val.csv), which this run would replace; continue it with --resume "
        f"{run_folder / 'checkpoint'}, or name another folder")
    assert contents(run_folder) == before


def test_a_run_may_continue_in_its_own_folder(run_folder, tmp_path, capsys):
    """--resume from inside the folder passes the output check: the run goes on to look for
    its data (absent here), and the folder is as it was."""
    before = contents(run_folder)
    assert main(train_args(tmp_path, "--out", run_folder,
                           "--resume", run_folder / "checkpoint")) == 2
    assert one_error_line(capsys).startswith("error: config field 'data.root': no manifest.json")
    assert contents(run_folder) == before


def test_an_output_that_is_a_file_or_cannot_be_made_is_refused(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("kept\n")
    assert main(train_args(tmp_path, "--out", a_file)) == 2
    assert one_error_line(capsys) == (f"error: flag '--out': {a_file} is a file; name a folder "
                                      f"for the run")
    assert main(train_args(tmp_path, "--out", a_file / "run")) == 2
    assert one_error_line(capsys) == (f"error: flag '--out': {a_file / 'run'} cannot be made: "
                                      f"{a_file} is not a folder this user can write in")
    assert a_file.read_text() == "kept\n" and os.listdir(tmp_path) == ["notes.txt"]


def test_export_into_its_own_checkpoint_or_onto_a_folder_is_refused(run_folder, tmp_path,
                                                                     capsys):
    before = contents(run_folder)
    inside = run_folder / "checkpoint" / "model-00000.safetensors"
    assert main(["export", str(run_folder / "checkpoint"), str(inside)]) == 2
    assert one_error_line(capsys) == (f"error: {inside}: is in {run_folder / 'checkpoint'}, "
                                      f"which it is exported from; write it elsewhere")
    folder = tmp_path / "exports"
    folder.mkdir()
    assert main(["export", str(run_folder / "checkpoint"), str(folder)]) == 2
    assert one_error_line(capsys) == (f"error: {folder}: must end in .safetensors, the format "
                                      f"serving and interpolate read")
    named_like_a_file = tmp_path / "a.safetensors"
    named_like_a_file.mkdir()
    assert main(["export", str(run_folder / "checkpoint"), str(named_like_a_file)]) == 2
    assert one_error_line(capsys).startswith(f"error: {named_like_a_file}: is a folder; ")
    assert contents(run_folder) == before
    assert sorted(os.listdir(tmp_path)) == ["a.safetensors", "exports"]
    assert os.listdir(folder) == [] and os.listdir(named_like_a_file) == []


def test_an_export_that_cannot_be_written_leaves_no_temporary_file(run_folder, tmp_path, capsys):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder was expected\n")
    out = blocked / "flavr.safetensors"
    assert main(["export", str(run_folder / "checkpoint"), str(out)]) == 2
    assert one_error_line(capsys).startswith(f"error: {out}: cannot be written (")
    assert os.listdir(tmp_path) == ["blocked"]


def test_export_says_which_weights_it_wrote(run_folder, tmp_path, capsys):
    """A weights folder of a run with a moving average holds that average: an export says so in
    its metadata, and --raw, which asks for the trained weights, is refused there."""
    out = tmp_path / "average.safetensors"
    assert main(["export", str(run_folder / "weights"), str(out)]) == 0
    assert ckpt.read_metadata(out)["average"] == "true"
    assert main(["export", str(run_folder / "weights"), str(tmp_path / "raw.safetensors"),
                 "--raw"]) == 2
    assert one_error_line(capsys) == (f"error: {run_folder / 'weights'}: holds only the moving "
                                      f"average of the weights; the trained weights (--raw) are "
                                      f"in the run's checkpoint folder")
    assert sorted(os.listdir(tmp_path)) == ["average.safetensors"]


@pytest.mark.parametrize("case", ["not-png", "no-folder"])
def test_compare_refuses_a_plot_it_cannot_write(case, run_folder, tmp_path, capsys):
    png = tmp_path / "runs.txt" if case == "not-png" else tmp_path / "missing" / "runs.png"
    assert main(["compare", str(png), f"a={run_folder}"]) == 2
    assert one_error_line(capsys) == {
        "not-png": f"error: {png}: must end in .png",
        "no-folder": f"error: {png}: no folder {png.parent} to write it in"}[case]
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("case", ["train-log", "no-rows"])
def test_compare_refuses_a_log_that_is_not_validation(case, run_folder, tmp_path, capsys):
    source = run_folder / "train.csv" if case == "train-log" else tmp_path / "val.csv"
    if case == "no-rows":
        source.write_text("step,clip,model_psnr,average_psnr\n")
    png = tmp_path / "runs.png"
    with pytest.raises(SystemExit) as stop:
        main(["compare", str(png), f"a={source}"])
    assert stop.value.code == 2
    assert {"train-log": f"{source}: not a run's val.csv (its columns: step, loss)",
            "no-rows": f"{source}: no validation yet"}[case] in capsys.readouterr().err
    assert not png.exists()


def test_summary_refuses_a_folder_without_a_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["summary", str(tmp_path / "missing")])
    assert stop.value.code == 2
    assert f"{tmp_path / 'missing'}: not a training run's folder (no train.csv)" in \
        capsys.readouterr().err



def test_a_resume_of_a_run_folder_points_at_its_checkpoint(run_folder, tmp_path, capsys):
    assert main(train_args(tmp_path, "--out", tmp_path / "run", "--resume", run_folder)) == 2
    assert one_error_line(capsys) == (f"error: flag '--resume': {run_folder} is a run's folder; "
                                      f"continue it from its checkpoint: --resume "
                                      f"{run_folder / 'checkpoint'}")
