"""train.csv/val.csv across resumed pieces: cut back to the resumed step, today's columns, and a
summary and plot that show the moving average next to the trained weights."""
import csv

from pipeline.train import logs


def write(path, header, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def test_a_resumed_run_cuts_later_rows_and_gains_new_columns(tmp_path):
    old_header = list(logs.VAL_COLUMNS[:9])  # as written before raw_psnr/raw_ssim existed
    write(tmp_path / "val.csv", old_header,
          [[1000, "a", 12, 30, 28, 26, .9, .9, .8], [2000, "a", 12, 31, 28, 26, .9, .9, .8]])
    write(tmp_path / "train.csv", logs.TRAIN_COLUMNS, [[1000, .01, 1e-4, 200, 99, 10],
                                                       [2020, .01, 1e-4, 200, 99, 20]])
    logs.continue_logs(tmp_path, None, 1500)
    val = logs.read_rows(tmp_path / "val.csv")
    assert [r["step"] for r in val] == ["1000"] and val[0]["model_psnr"] == "30"
    assert tuple(val[0]) == logs.VAL_COLUMNS and val[0]["raw_psnr"] == ""
    assert [r["step"] for r in logs.read_rows(tmp_path / "train.csv")] == ["1000"]
    # New rows append under the same header.
    log = logs.CsvLog(tmp_path / "val.csv", logs.VAL_COLUMNS)
    log.write({"step": 2000, "clip": "a", "model_psnr": 31.5, "raw_psnr": 31.25})
    log.close()
    assert [(r["step"], r["raw_psnr"]) for r in logs.read_rows(tmp_path / "val.csv")] == [
        ("1000", ""), ("2000", "31.25")]


def test_summary_and_plot_show_the_weights_without_averaging_when_logged(tmp_path):
    row = {"clip": "mean", "frames": 24, "model_psnr": 29.5, "average_psnr": 28.0,
           "nearest_psnr": 26.0, "model_ssim": .91, "average_ssim": .91, "nearest_ssim": .89}
    log = logs.CsvLog(tmp_path / "val.csv", logs.VAL_COLUMNS)
    log.write({"step": 1000, **row})
    log.write({"step": 2000, **row, "raw_psnr": 29.25, "raw_ssim": .9})
    log.close()
    text = logs.summary(tmp_path)
    assert "not averaged" in text and "29.25" in text
    logs.plot_val(tmp_path / "val.csv", tmp_path / "val.png")
    assert (tmp_path / "val.png").stat().st_size > 0


def test_compare_plots_runs_side_by_side_and_names_a_bad_argument(tmp_path, capsys):
    import pytest

    from pipeline.train.__main__ import main

    for name, psnr in (("a", 29.0), ("b", 28.5)):
        (tmp_path / name).mkdir()
        log = logs.CsvLog(tmp_path / name / "val.csv", logs.VAL_COLUMNS)
        for step in (1000, 2000):
            log.write({"step": step, "clip": "mean", "model_psnr": psnr, "average_psnr": 28.0})
        log.close()
    png = tmp_path / "compare.png"
    assert main(["compare", str(png), f"L1={tmp_path / 'a'}", f"L2={tmp_path / 'b' / 'val.csv'}"]) == 0
    assert png.stat().st_size > 0
    with pytest.raises(SystemExit) as e:
        main(["compare", str(png), str(tmp_path / "a")])
    assert e.value.code == 2 and "LABEL=VAL_CSV" in capsys.readouterr().err
