"""The training table runs on the CPU at tiny sizes and prints its table last."""
import json

import pytest

from pipeline.train.bench import main, parse_mode


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
