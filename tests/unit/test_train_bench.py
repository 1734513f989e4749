"""The training table runs on the CPU at tiny sizes and prints its table last."""
import json

import pytest

from models.flavr.model import PAD_MULTIPLE
from pipeline.train.bench import main, parse_mode

# One quick row, should a refusal below ever let the run start.
TINY = ["--device", "cpu", "--crop", "32", "--batch-sizes", "1", "--modes", "fp32",
        "--warmup", "0", "--steps", "1", "--windows", "1"]


def test_the_table_measures_each_mode_and_batch_and_prints_last(tmp_path, capsys):
    # fp32 with the switches, not bf16: a CPU without bf16 instructions trains in bf16 ~40x
    # slower (minutes for this one step); the switches are what the table's machinery sets.
    # 32x32 crops: every mode and switch runs the same, at a quarter of 64x64's compute.
    rc = main(["--device", "cpu", "--crop", "32", "--batch-sizes", "1", "--warmup", "1",
               "--steps", "1", "--windows", "2", "--modes", "tf32,fp32+cl+ac", "--out", str(tmp_path)])
    assert rc == 0
    printed = capsys.readouterr().out.rstrip().splitlines()
    result = json.loads((tmp_path / "bench-1cpu.json").read_text())
    rows = result["rows"]
    assert [(r["mode"], r["batch"]) for r in rows] == [("tf32", 1), ("fp32+cl+ac", 1)]
    assert all(r["samples_per_s"] > 0 and "error" not in r for r in rows)
    assert rows[1]["activation_checkpointing"] and rows[1]["channels_last"]
    table = (tmp_path / "bench-1cpu.md").read_text().rstrip().splitlines()
    assert printed[-len(table):] == table  # the table is the last thing printed
    assert "| fp32+cl+ac | 1 |" in "\n".join(table) and "1.00x" in table[4]


def test_modes_are_a_precision_and_switches():
    assert parse_mode("bf16+cl+compile+ac") == {"precision": "bf16", "channels_last": True,
                                                "compile": True, "activation_checkpointing": True}
    with pytest.raises(ValueError, match="precision"):
        parse_mode("fp16+cl")


@pytest.mark.parametrize("flag, value, words", [
    ("--modes", "foo", "mode 'foo': a precision (fp32, tf32, bf16)"),
    ("--modes", ",", "expected comma-separated modes"),
    ("--batch-sizes", "x", "expected an integer, got 'x'"),
    ("--batch-sizes", "8,0", "must be >= 1, got 0"),
    ("--crop", "0", f"must be >= {PAD_MULTIPLE}, got 0"),
    ("--crop", str(PAD_MULTIPLE - 1), f"must be >= {PAD_MULTIPLE}"),  # the model's own minimum
    ("--steps", "0", "must be >= 1"),
    ("--windows", "0", "must be >= 1"),
    ("--warmup", "-1", "must be >= 0"),
])
def test_a_bad_flag_is_refused_at_parsing_by_name_and_no_report_is_made(tmp_path, capsys,
                                                                        monkeypatch, flag,
                                                                        value, words):
    monkeypatch.chdir(tmp_path)  # the default report folder is ./logs/train-bench-<time>
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as stop:
        main([*TINY, "--out", str(out), flag, value])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"python -m pipeline.train.bench: error: argument {flag}: ")
    assert words in last, err
    assert list(tmp_path.iterdir()) == []


def test_the_smallest_crop_the_model_takes_runs(tmp_path, capsys):
    rc = main([*TINY, "--crop", str(PAD_MULTIPLE), "--out", str(tmp_path)])
    assert rc == 0, capsys.readouterr().out
    assert "error" not in json.loads((tmp_path / "bench-1cpu.json").read_text())["rows"][0]


def test_an_out_that_is_a_file_is_refused_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "report.md"
    out.write_text("an earlier report\n")
    with pytest.raises(SystemExit) as stop:
        main([*TINY, "--out", str(out)])
    assert stop.value.code == 2
    assert f"argument --out: {out} is a file" in capsys.readouterr().err
    assert out.read_text() == "an earlier report\n"
