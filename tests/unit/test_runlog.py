"""The per-run logs folder: its name, its files, and the environment record."""
import datetime as dt
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.analysis.records import Admission, Outcome, RecordTable, RequestRow, StepStamps
from pipeline.analysis.requests_csv import read_csv
from pipeline.analysis.report import format_report, summarize
from pipeline.config import config_from_dict, config_to_dict, load_config
from pipeline.errors import LogsError
from pipeline.serving.gpu_monitor import read_samples_csv
from pipeline.serving.runlog import (
    RequestsCsv,
    check_writable,
    create_run_dir,
    environment_info,
    package_version,
    run_dir_name,
    write_run,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
WHEN = dt.datetime(2024, 1, 2, 3, 4, 5)


def test_run_dir_name_format():
    assert run_dir_name("flavr-split", 50, 1, 4, 64, True, when=WHEN) == "240102_030405-flavr-split-mi50-b1-v4-qs64-p1"
    assert run_dir_name("flavr-whole", 12.5, 2, 8, 16, False, when=WHEN) == "240102_030405-flavr-whole-mi12.5-b2-v8-qs16-p0"
    assert run_dir_name("x", 50.0, 1, 1, 1, 0, when=WHEN).endswith("-x-mi50-b1-v1-qs1-p0")


def test_run_dir_name_makes_the_config_name_safe_for_a_folder():
    name = run_dir_name("my config/v2", 0, 1, 1, 1, False, when=WHEN)
    assert "/" not in name and " " not in name and "-my_config_v2-" in name


def test_run_dir_name_defaults_to_now():
    name = run_dir_name("c", 0, 1, 1, 1, False)
    assert re.match(r"^\d{6}_\d{6}-c-mi0-b1-v1-qs1-p0$", name)


def test_create_run_dir_adds_a_suffix_when_taken(tmp_path):
    first = create_run_dir(tmp_path / "logs", "run")
    second = create_run_dir(tmp_path / "logs", "run")
    third = create_run_dir(tmp_path / "logs", "run")
    assert first == tmp_path / "logs" / "run" and first.is_dir()
    assert second.name == "run_2" and third.name == "run_3" and third.is_dir()


def test_environment_info_is_json_and_names_the_software():
    import numpy
    import torch

    env = environment_info()
    assert json.loads(json.dumps(env)) == env
    assert env["python"]["version"].count(".") == 2
    assert env["packages"]["numpy"] == numpy.__version__
    assert env["packages"]["torch"]["version"] == torch.__version__
    assert env["cpu"]["count"] >= 1 and env["hostname"]
    assert re.fullmatch(r"[0-9a-f]{40}", env["git"]["commit"]) and isinstance(env["git"]["dirty"], bool)
    assert "available" in env["nvml"]
    assert set(env["packages"]) >= {"torch", "nvidia-dali", "av", "numpy", "pyyaml", "nvidia-ml-py"}


def test_a_missing_package_is_reported_absent():
    assert package_version("no-such-package-for-flavr-tests") is None


def test_write_run_writes_every_log_file(tmp_path):
    cfg = load_config(CONFIGS / "cpu-smoke.yaml")
    steps = [s.name for s in cfg.steps]
    t0 = 1000.0
    table = RecordTable(steps, [(i, "/v/a.webm", 4, i == 0) for i in range(3)])
    for i in range(3):
        table.update(i, Admission(t0 + i, t0 + i, t0 + i))
        for k, step in enumerate(steps):
            table.update(i, StepStamps(step, "cpu:0", 0, 1, taken=t0 + i + 0.1 * k,
                                       gathered=t0 + i + 0.1 * k, slot_held=t0 + i + 0.1 * k,
                                       finished=t0 + i + 0.1 * k + 0.1, compute_s=0.1,
                                       publish_s=0.0))
        table.update(i, Outcome("ok", frames=4, output_frames=7))
    rows = table.finish(t0)
    samples = [{"t": t0 + 0.5, "gpu": 0, "util_pct": 30, "mem_used_mib": 1234.5, "mem_total_mib": 8000.0}]
    run_info = {"t0": t0, "config_name": cfg.name, "mean_interval_ms": 1000}
    summary = summarize(rows, steps, run_info, samples)
    env = {"python": {"version": "3"}}
    run_dir = create_run_dir(tmp_path, run_dir_name(cfg.name, 1000, 1, 2, 8, False, when=WHEN))
    out = write_run(run_dir, config_dict=config_to_dict(cfg), args_dict={"config": "configs/cpu-smoke.yaml"},
                    env=env, rows=rows, columns=table.columns(), nvml_samples=samples, summary=summary,
                    report_text=format_report(summary))
    assert out == run_dir
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        ["config.yaml", "args.json", "env.json", "run.json", "requests.csv", "nvml.csv", "report.json",
         "report.txt"])
    again = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()), source=cfg.source)
    assert again == cfg
    assert json.loads((run_dir / "args.json").read_text()) == {"config": "configs/cpu-smoke.yaml"}
    assert json.loads((run_dir / "env.json").read_text()) == env
    run = json.loads((run_dir / "run.json").read_text())
    assert run["t0"] == t0 and run["step_names"] == steps
    back = read_csv(run_dir / "requests.csv")
    assert [r["request_id"] for r in back] == [0, 1, 2]
    assert back[1]["latency_s"] == pytest.approx(0.1 * len(steps))
    assert read_samples_csv(run_dir / "nvml.csv") == [
        {"t_s": 0.5, "gpu": 0, "util_pct": 30, "mem_used_mib": 1234.5, "mem_total_mib": 8000.0}]
    assert (run_dir / "report.txt").read_text().startswith("FLAVR serving benchmark: cpu-smoke")


def test_nvml_csv_is_exact_for_any_float(tmp_path):
    from pipeline.serving.gpu_monitor import write_samples_csv

    rng = np.random.default_rng(0)
    samples = [{"t_s": round(float(rng.uniform(0, 100)), 6), "gpu": 1, "util_pct": int(rng.integers(0, 101)),
                "mem_used_mib": float(rng.uniform(0, 80000)), "mem_total_mib": 81559.3125} for _ in range(50)]
    write_samples_csv(tmp_path / "nvml.csv", samples, t0=0.0)
    assert read_samples_csv(tmp_path / "nvml.csv") == samples


def test_write_run_without_nvml_samples(tmp_path):
    summary = summarize([], ["decode"], {"t0": 0.0}, None)
    write_run(tmp_path, config_dict={}, args_dict={}, env={}, rows=[], columns=["request_id"],
              nvml_samples=None, summary=summary, report_text=format_report(summary))
    assert read_samples_csv(tmp_path / "nvml.csv") == []


# -- logs that survive --------------------------------------------------------------------------

def test_check_writable_leaves_nothing_behind(tmp_path):
    # The folders it had to make go again: a run refused after the check leaves nothing.
    assert check_writable(tmp_path / "logs" / "deeper") == []
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    assert check_writable(tmp_path / "kept") == []
    assert list(tmp_path.iterdir()) == [tmp_path / "kept"]
    assert list((tmp_path / "kept").iterdir()) == []


def test_check_writable_names_a_folder_that_cannot_be_made(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(LogsError, match=f"logs folder '{tmp_path / 'file' / 'logs'}' is not "
                                        f"writable: Not a directory"):
        check_writable(tmp_path / "file" / "logs")


def test_requests_csv_has_each_row_on_disk_as_soon_as_it_is_appended(tmp_path):
    path = tmp_path / "requests.csv"
    stream = RequestsCsv(path, ["decode", "flavr"])
    t0 = 100.0
    table = RecordTable(["decode", "flavr"], [(3, "clip.webm", 4, False)])
    for record in (Admission(t0 + 1.0, t0 + 1.0, t0 + 1.0),
                   StepStamps("decode", "cpu:0", 0, 1, taken=t0 + 1.0, gathered=t0 + 1.0,
                              slot_held=t0 + 1.0, finished=t0 + 1.125, compute_s=0.125,
                              publish_s=0.0, handed_on=t0 + 1.125),
                   StepStamps("flavr", "cpu:0", 0, 1, taken=t0 + 1.125, gathered=t0 + 1.125,
                              slot_held=t0 + 1.125, finished=t0 + 1.25, compute_s=0.125,
                              publish_s=0.0),
                   Outcome("ok", frames=4, output_frames=7)):
        table.update(3, record)
    stream.append(table.row(3, t0))  # as the run does when the request ends
    rows = read_csv(path)  # read while the file is still open for appending
    assert len(rows) == 1 and rows[0]["request_id"] == 3
    assert rows[0]["scheduled_s"] == 1.0 and rows[0]["latency_s"] == 0.25
    assert rows[0]["flavr.compute_s"] == 0.125
    stream.close()
    assert stream.error is None


def test_requests_csv_keeps_the_first_write_error_and_stops_streaming(tmp_path):
    stream = RequestsCsv(tmp_path / "no-such-folder" / "requests.csv", ["decode"])
    stream.append(RequestRow(0, status="ok"))
    stream.close()
    assert "no-such-folder/requests.csv" in stream.error


def test_write_run_writes_what_it_can_and_names_what_it_could_not(tmp_path):
    (tmp_path / "requests.csv").mkdir()  # the final requests.csv cannot replace a folder
    summary = summarize([], ["decode"], {"t0": 0.0}, None)
    with pytest.raises(LogsError, match=r"could not write requests.csv \(Is a directory\) in "):
        write_run(tmp_path, config_dict={}, args_dict={}, env={}, rows=[],
                  columns=["request_id"], nvml_samples=None, summary=summary,
                  report_text=format_report(summary))
    for name in ("config.yaml", "args.json", "env.json", "run.json", "nvml.csv", "report.json",
                 "report.txt"):
        assert (tmp_path / name).is_file(), name
    assert not (tmp_path / "requests.csv.tmp").exists()
