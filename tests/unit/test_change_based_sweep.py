"""The threshold sweep command, end to end on the CPU at a tiny size."""
import csv
import json

import pytest
import torch
from video_helpers import REPO

from pipeline.bench.change_sweep import main, resolve_precision
from pipeline.media.synthetic import write_clip

TINY = ["--video", "none", "--sizes", "32x48", "--frames", "3", "--synthetic", "1",
        "--device", "cpu", "--warmup", "0", "--repeats", "1"]


def test_the_sweep_writes_a_row_per_clip_and_threshold_and_a_plot(tmp_path, capsys):
    rc = main(["--out", str(tmp_path), "--video", "none", "--sizes", "32x48", "--frames", "3",
               "--synthetic", "1", "--thresholds", "0.01,0.9", "--tile", "16", "--halo", "8",
               "--device", "cpu", "--warmup", "0", "--repeats", "1"])
    assert rc == 0
    # No --precision on the CPU: fp32 (bf16 there can be tens of times slower).
    assert json.loads((tmp_path / "sweep.json").read_text())["arguments"]["precision"] == "fp32"
    rows = list(csv.DictReader(open(tmp_path / "sweep.csv")))
    assert [(r["clip"], r["threshold"]) for r in rows] == [("moving 1 (h264)", "0.01"),
                                                           ("moving 1 (h264)", "0.9")]
    low, high = rows
    # All of the frame moves: at a low threshold both windows run the full model (same frames),
    # at a threshold above any change both are copied.
    assert (low["whole"], low["psnr_db"], low["tiles_computed"]) == ("2", "inf", "1.0")
    assert (high["whole"], high["tiles_computed"]) == ("0", "0.0")
    assert float(high["psnr_db"]) < 60
    assert (tmp_path / "sweep.png").stat().st_size > 0 and (tmp_path / "sweep.json").is_file()
    assert "speed-up" in capsys.readouterr().out
    # The plot can be drawn again from the csv alone (infinite PSNR and empty cells included).
    (tmp_path / "sweep.png").unlink()
    assert main(["--replot", str(tmp_path)]) == 0
    assert (tmp_path / "sweep.png").stat().st_size > 0


def test_a_missing_real_clip_is_refused_by_name(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--video", str(tmp_path / "absent.avi")]) == 2
    assert "--video" in capsys.readouterr().err


def test_replot_without_a_csv_and_a_run_without_out_are_refused_by_flag(tmp_path, capsys):
    assert main(["--replot", str(tmp_path)]) == 2
    assert "--replot" in capsys.readouterr().err
    assert main(["--video", "none"]) == 2
    assert "--out" in capsys.readouterr().err


@pytest.mark.parametrize("asked, device, precision", [
    (None, "cpu", "fp32"), (None, "cuda", "bf16"), ("bf16", "cpu", "bf16"),
    ("fp32", "cuda", "fp32"),
])
def test_precision_defaults_to_the_device_and_keeps_a_choice(asked, device, precision):
    assert resolve_precision(asked, torch.device(device)) == precision


def test_a_video_pyav_cannot_decode_is_refused_by_name_before_out_is_made(tmp_path, capsys):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    out = tmp_path / "sweep"
    assert main(["--out", str(out), "--video", str(text)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --video {text}: not a video PyAV can decode (")
    assert err.count("\n") == 1
    assert not out.exists()


def test_a_sweep_with_no_clip_is_refused_before_out_is_made(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["--out", str(out), "--video", "none", "--synthetic", ""]) == 2
    err = capsys.readouterr().err
    assert err == "error: --video none with --synthetic '': no clip to measure\n"
    assert not out.exists()


def test_a_real_clip_shorter_than_the_frames_asked_is_refused_before_out_is_made(tmp_path, capsys):
    clip = write_clip(tmp_path / "short.webm", 32, 32, frames=3)
    out = tmp_path / "sweep"
    assert main(["--out", str(out), "--video", str(clip), "--start", "1", "--frames", "3"]) == 2
    assert capsys.readouterr().err == (f"error: --video {clip}: fewer than 4 frames (--start 1, "
                                       f"--frames 3)\n")
    assert not out.exists()


@pytest.mark.parametrize("flag, value, words", [
    ("--thresholds", "abc", "expected comma-separated numbers, got 'abc'"),
    ("--thresholds", "0.1,2", "must be in [0, 1), got 2.0"),
    ("--thresholds", ",", "needs at least 1"),
    ("--synthetic", "0,0.5", "must be > 0 and <= 1; got 0"),
    ("--halo", "x", "expected comma-separated integers"),
    ("--halo", "12", "multiple of 8"),
    ("--sizes", "32by48", "not HxW"),
    ("--frames", "1", "must be >= 2"),
    ("--repeats", "0", "must be >= 1"),
])
def test_a_bad_flag_is_refused_at_parsing_by_name_before_out_is_made(tmp_path, capsys, flag,
                                                                      value, words):
    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as stop:
        main(["--out", str(out), *TINY, flag, value])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"python -m pipeline.bench.change_sweep: error: argument {flag}: ")
    assert words in last, err
    assert not out.exists()


@pytest.mark.parametrize("kind", ["truncated", "folder"])
def test_a_checkpoint_that_cannot_be_used_is_refused_before_out_is_made(tmp_path, capsys, kind):
    if kind == "truncated":  # the project's own weights, cut short
        checkpoint = tmp_path / "cut.safetensors"
        checkpoint.write_bytes((REPO / "weights" / "flavr-2x.safetensors").read_bytes()[:100])
    else:
        checkpoint = tmp_path / "weights"
        checkpoint.mkdir()
    out = tmp_path / "new" / "sweep"
    assert main(["--out", str(out), *TINY, "--checkpoint", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {checkpoint}: ") and err.count("\n") == 1, err
    assert not (tmp_path / "new").exists()


def test_an_out_that_is_a_file_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "sweep"
    out.write_text("an earlier note\n")
    assert main(["--out", str(out), *TINY]) == 2
    assert capsys.readouterr().err.startswith(f"error: --out {out}: is a file")
    assert out.read_text() == "an earlier note\n"
