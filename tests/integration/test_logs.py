"""A run's logs survive what can happen to them: an unwritable folder is refused before anything
starts, requests.csv grows row by row while the run goes (so a kill -9 of the main process keeps
the completed rows), and a file that cannot be written at the end costs that file, not the
report. Real commands and runs on the CPU (decode + the sleep test step, 16x16 clips)."""
from __future__ import annotations

import signal
import time

import pytest
from run_helpers import (
    Background,
    Benchmark,
    children_alive,
    clip,
    csv_rows,
    killed_main,
    make_config,
    options,
    process_table,
    run_dir_of,
    sleep_steps,
    synthetic,
    wait_for,
    write_yaml_config,
)

from pipeline.analysis.requests_csv import read_csv
from pipeline.errors import LogsError
from pipeline.serving.orchestrator import run


def test_an_unwritable_logs_folder_stops_the_command_before_anything_starts(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the logs folder's parent should be\n")
    logs = blocker / "logs"  # fails for root too: a path through a regular file
    config = write_yaml_config(tmp_path, sleep_steps(), [clip(tmp_path / "c.webm")])
    bench = Benchmark(tmp_path, config, "--logs", str(logs))
    assert bench.wait(timeout=60) == 2
    lines = bench.err.strip().splitlines()
    assert lines == [f"error: logs folder '{logs}' is not writable: Not a directory"], bench.err
    assert "processes.json" not in bench.out and not list(tmp_path.rglob("processes.json"))


def test_a_run_refuses_an_unwritable_logs_folder_before_starting_a_process(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = make_config(synthetic(), sleep_steps())
    t0 = time.monotonic()
    with pytest.raises(LogsError, match=f"logs folder '{blocker / 'logs'}' is not writable"):
        run(cfg, options(tmp_path, logs_root=str(blocker / "logs")))
    assert time.monotonic() - t0 < 30  # no process was started and waited for


def test_requests_csv_keeps_the_completed_rows_when_the_main_process_is_killed(tmp_path_factory):
    # Killed once requests.csv holds three rows; the kill is shared with test_faults' test of the
    # children's exit (run_helpers.killed_main).
    km = killed_main(tmp_path_factory)
    assert km.exit_code == -signal.SIGKILL
    assert km.children_gone_s is not None, "the children were still there 10 s after the kill"
    rows = read_csv(km.run_dir / "requests.csv")
    assert len(rows) >= 3
    for r in rows:  # whole rows, each a finished request with its times
        assert r["status"] == "ok" and not r["error"], r
        assert r["latency_s"] > 0 and r["done_s"] >= r["scheduled_s"], r
    assert len({r["request_id"] for r in rows}) == len(rows)
    assert not (km.run_dir / "report.txt").exists()  # the end never came: only the streamed rows
    # the children's temporary folder, which the killed main process kept
    assert km.stale


def test_a_log_file_that_cannot_be_written_at_the_end_costs_that_file_not_the_report(tmp_path):
    cfg = make_config(synthetic(), sleep_steps(sleep_ms=5))
    bg = Background(cfg, options(tmp_path, videos=40, mean_interval_ms=100, warmup=0))
    run_dir = wait_for(lambda: run_dir_of(tmp_path / "logs"), 60, "processes.json")
    csv = run_dir / "requests.csv"
    wait_for(lambda: csv_rows(csv) >= 1, 60, "the first row of requests.csv")
    csv.unlink()
    csv.mkdir()  # the final requests.csv cannot replace a folder
    result = bg.join(timeout=120)
    assert result.error is None, result.error
    assert result.exit_code == 1
    assert result.log_error and "requests.csv" in result.log_error, result.log_error
    assert str(run_dir) in result.log_error
    assert "40 measured" in result.report
    for name in ("report.txt", "report.json", "run.json", "config.yaml"):
        assert (run_dir / name).is_file(), name


def test_the_command_prints_the_report_and_names_what_it_could_not_write(tmp_path):
    clips = [clip(tmp_path / "clips" / f"c{i}.webm", seed=i) for i in range(2)]
    config = write_yaml_config(tmp_path, sleep_steps(sleep_ms=5), clips)
    bench = Benchmark(tmp_path, config, "-mi", "100", "-v", "40", "--warmup", "0")
    run_dir = wait_for(lambda: run_dir_of(tmp_path / "logs"), 90, "processes.json")
    table = process_table(run_dir)
    csv = run_dir / "requests.csv"
    wait_for(lambda: csv_rows(csv) >= 1, 90, "the first row of requests.csv")
    csv.unlink()
    csv.mkdir()
    code = bench.wait(timeout=120)
    assert code == 1, (code, bench.err)
    assert "FLAVR serving benchmark: faults" in bench.out and "40 measured" in bench.out
    errors = [line for line in bench.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "could not write requests.csv" in errors[0], bench.err
    assert children_alive(table) == []
