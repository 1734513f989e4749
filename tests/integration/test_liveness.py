"""A child that is alive but frozen (stopped, or stuck in a call that never returns) is found by
its silence, named, and ends the run like a crash: real processes, a real FLAVR runner stopped
with SIGSTOP."""
from __future__ import annotations

import os
import signal
import time

from run_helpers import (
    RUN_END_S,
    WHOLE,
    Background,
    assert_logs_account_for_everything,
    by_status,
    children_alive,
    make_config,
    open_fds,
    options,
    outputs_written,
    process_table,
    run_dir_of,
    shm_entries,
    shm_left_over,
    synthetic,
    wait_for,
    warm_process_state,
)

LIMIT_S = 5.0  # short for the test (the default is 30 s); every other child beats every 0.1 s
START_LIMIT_S = 10.0  # start-up's limit for the test (the default is 600 s)


def test_a_frozen_runner_is_named_and_ends_the_run_once_its_heartbeat_limit_passes(tmp_path):
    warm_process_state()
    cfg = make_config(synthetic(), WHOLE)
    opts = options(tmp_path, videos=400, mean_interval_ms=300, save_outputs=True,
                   save_tensors=True, heartbeat_timeout_s=LIMIT_S, stall_timeout_s=300)
    shm_before, fds_before = shm_entries(), open_fds()
    bg = Background(cfg, opts)
    run_dir = wait_for(lambda: run_dir_of(tmp_path / "logs"), 60, "processes.json")
    table = process_table(run_dir)
    wait_for(lambda: outputs_written(run_dir) >= 3, 90, "the first requests to complete")
    victim = "flavr[0]@gpu0"
    os.kill(table[victim]["pid"], signal.SIGSTOP)
    t_stop = time.monotonic()
    result = bg.join(timeout=LIMIT_S + 60)
    took = time.monotonic() - t_stop
    print(f"runner stopped: the run ended {took:.2f} s later: {result.error}")
    # Not before the limit (nothing else ends it early), and soon after it: the silent one is
    # killed at once, the others leave within their grace.
    assert LIMIT_S - 0.5 < took < LIMIT_S + RUN_END_S, took
    error = result.error or ""
    assert victim in error and "step 'flavr'" in error and "GPU 0" in error, error
    assert "no heartbeat for" in error and f"limit {LIMIT_S:g} s" in error, error
    assert result.exit_code != 0
    rows = assert_logs_account_for_everything(run_dir, 401)
    statuses = by_status(rows)
    assert len(statuses["ok"]) >= 3
    assert all(victim in r["error"] or "never admitted" in r["error"]
               for r in statuses.get("unfinished", []) + statuses.get("dropped", []))
    assert victim in (run_dir / "report.txt").read_text()

    assert children_alive(table) == []
    assert not shm_left_over(shm_before)
    assert open_fds() <= fds_before, f"{fds_before} fds before the run, {open_fds()} after"


def test_a_start_up_that_runs_out_of_time_names_who_was_not_ready(tmp_path):
    """Start-up is not judged by heartbeats (a build or compile is silent for long) but by its
    own limit; when that passes, the error names the processes still starting."""
    cfg = make_config(synthetic(), WHOLE)
    # The run waits out the whole limit: short, yet long enough for the other children to be
    # ready on a busy machine (were one late too, the error would name it as well).
    bg = Background(cfg, options(tmp_path, videos=20, start_timeout_s=START_LIMIT_S))
    run_dir = wait_for(lambda: run_dir_of(tmp_path / "logs"), 60, "processes.json")
    table = process_table(run_dir)
    victim = "flavr[0]@gpu0"
    os.kill(table[victim]["pid"], signal.SIGSTOP)  # frozen while it imports or warms up
    result = bg.join(timeout=START_LIMIT_S + 60)
    error = result.error or ""
    assert "start-up (model build and warm-up) did not finish within its time limit" in error
    assert "still waiting for" in error and f"'{victim}' (step 'flavr'" in error, error
    assert children_alive(table) == []
