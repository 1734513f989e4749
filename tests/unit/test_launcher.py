"""The local launcher: real child processes (tiny ones: their bodies import neither torch nor
DALI), forked from the launcher's server or spawned."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import child_targets as targets
import pytest

from pipeline.errors import SwitchError
from pipeline.serving.launch import LAUNCHERS, launcher_class
from pipeline.serving.launch.local import START_METHOD_ENV, LocalLauncher

START_S = 60  # a spawned child, or the server, imports afresh; a loaded 2-core machine is slow


def wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def gone(pid: int) -> bool:
    """Exited (a zombie nobody has reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def launcher():
    launcher = LocalLauncher()
    yield launcher
    launcher.stop(grace_s=0.0)


def test_local_is_the_launcher_called_local():
    assert "local" in LAUNCHERS and launcher_class("local") is LocalLauncher
    with pytest.raises(ValueError, match="unknown launcher 'slurm'; known: local, ray"):
        launcher_class("slurm")


def test_without_ray_installed_the_local_launcher_runs_and_ray_says_how_to_install_it():
    # A fresh interpreter where `import ray` fails, as on a machine without it.
    code = """
import sys
sys.modules["ray"] = None  # import ray raises ModuleNotFoundError
from pipeline.serving.launch import launcher_class
import pipeline.serving.orchestrator  # the pipeline imports nothing of Ray
launcher = launcher_class("local")()
launcher.stop()
try:
    launcher_class("ray")
except RuntimeError as exc:
    print(exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "launcher 'ray' needs Ray: pip install 'ray==2.60.0'" in out.stdout


def test_dead_reports_each_exited_process_with_its_role_and_exit_code(launcher):
    launcher.start("ok", "a child that exits cleanly", targets.exit_with, 0)
    launcher.start("bad", "a child that fails", targets.exit_with, 3)
    dead = wait_for(lambda: len(launcher.dead()) == 2 and launcher.dead(), START_S, "both to exit")
    assert sorted(dead) == [("bad", "a child that fails", 3), ("ok", "a child that exits cleanly", 0)]


def test_stop_lets_children_leave_by_themselves_and_names_none(launcher):
    launcher.start("short", "a short sleeper", targets.sleep_for, 0.2)
    wait_for(lambda: launcher.dead(), START_S, "the sleeper to finish")
    assert launcher.stop(grace_s=5.0) == []


def test_stop_forces_a_child_that_does_not_leave_and_names_it(launcher):
    ready = launcher.queue()
    launcher.start("stubborn", "a child that ignores SIGTERM", targets.ignore_sigterm_and_sleep, ready)
    pid = ready.get(timeout=START_S)
    t0 = time.monotonic()
    assert launcher.stop(grace_s=0.5) == ["stubborn"]
    assert gone(pid) and time.monotonic() - t0 < 10


def test_kill_ends_a_stopped_child_at_once(launcher):
    out = launcher.queue()
    launcher.start("frozen", "a child that will be stopped", targets.report_and_sleep, out, 600.0)
    pid = out.get(timeout=START_S)[0]
    os.kill(pid, signal.SIGSTOP)
    launcher.kill("frozen")
    assert gone(pid)
    assert launcher.dead() == [("frozen", "a child that will be stopped", -signal.SIGKILL)]


def test_children_keep_their_temporary_files_in_a_run_folder_that_stop_removes(launcher):
    out = launcher.queue()
    launcher.start("writer", "a child that leaves a file", targets.report_and_sleep, out, 600.0)
    pid, temp_dir, path = out.get(timeout=START_S)
    assert temp_dir == launcher.temp_dir and Path(path).parent == Path(temp_dir)
    os.kill(pid, signal.SIGKILL)  # it cannot clean up after itself
    launcher.stop(grace_s=1.0)
    assert not Path(temp_dir).exists()


def test_a_child_keeps_its_multiprocessing_sockets_in_the_run_folder(launcher):
    # Not in the main process's own folder, which multiprocessing would hand down to it.
    from multiprocessing import util

    mine = util.get_temp_dir()
    out = launcher.queue()
    launcher.start("sockets", "a child that says where its sockets go",
                   targets.report_multiprocessing_folder, out)
    folder = Path(out.get(timeout=START_S))
    assert folder.parent == Path(launcher.temp_dir) and folder != Path(mine)


def test_shared_floats_written_by_a_child_are_read_by_the_parent(launcher):
    floats = launcher.shared_floats(4)
    assert [floats[i] for i in range(4)] == [0.0] * 4
    launcher.start("writer", "a child that writes a float", targets.write_float, floats, 2, 1.5)
    wait_for(lambda: launcher.dead(), START_S, "the writer to finish")
    assert [floats[i] for i in range(4)] == [0.0, 0.0, 1.5, 0.0]


def test_shared_floats_hold_no_descriptor_once_the_launcher_stops():
    before = len(os.listdir("/proc/self/fd"))
    launcher = LocalLauncher()
    launcher.shared_floats(8)
    launcher.stop(grace_s=0.0)
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_flag_set_by_a_child_is_seen_by_the_parent(launcher):
    flag = launcher.event()
    assert not flag.is_set()
    launcher.start("setter", "a child that sets the flag", targets.set_flag, flag)
    wait_for(flag.is_set, START_S, "the flag")


def test_children_die_with_their_main_process(launcher):
    """A main process of its own starts a child through the launcher; SIGKILL of that main
    process takes the child down at once (the kernel's parent-death signal), not after a poll."""
    out = launcher.queue()
    launcher.start("main", "a main process with a child", targets.launch_a_sleeper_and_wait, out)
    main_pid, child_pid = out.get(timeout=START_S)
    os.kill(main_pid, signal.SIGKILL)
    t0 = time.monotonic()
    wait_for(lambda: gone(child_pid), 10, "the child to die")
    took = time.monotonic() - t0
    print(f"the child was gone {took:.3f} s after its main process was killed")
    assert took < 1.0


def test_a_run_folder_whose_main_process_is_gone_is_removed_by_the_next_launcher(tmp_path):
    from pipeline.serving.launch.local import TEMP_PREFIX, remove_stale_temp_dirs

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"{TEMP_PREFIX}{dead.pid}-abcd"
    live = tmp_path / f"{TEMP_PREFIX}{os.getpid()}-efgh"
    for folder in (stale, live):
        (folder / "pymp-x").mkdir(parents=True)
    assert remove_stale_temp_dirs(str(tmp_path)) == [stale]
    assert not stale.exists() and live.exists()


def test_the_compile_cache_stays_out_of_the_run_folder(launcher, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    out = launcher.queue()
    launcher.start("env", "a child that reports its environment", targets.report_env, out,
                   ["TMPDIR", "TORCHINDUCTOR_CACHE_DIR"])
    env = out.get(timeout=START_S)
    assert env["TMPDIR"] == launcher.temp_dir
    cache = Path(env["TORCHINDUCTOR_CACHE_DIR"])
    usual = Path(os.environ.get("TMPDIR") or tempfile.gettempdir())  # what the child inherits
    assert cache.name.startswith("torchinductor_") and cache.parent == usual


def test_a_compile_cache_the_user_chose_is_kept(launcher, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/else")
    out = launcher.queue()
    launcher.start("env", "a child that reports its environment", targets.report_env, out,
                   ["TORCHINDUCTOR_CACHE_DIR"])
    assert out.get(timeout=START_S) == {"TORCHINDUCTOR_CACHE_DIR": "/somewhere/else"}


# -- how children start: forked from a server that imported torch, or spawned -------------------

def test_children_are_forked_from_one_server_that_imported_torch(launcher):
    out = launcher.queue()
    for name in ("a", "b"):
        launcher.start(name, "a child that says where it came from", targets.report_origin,
                       out, [])
    (server_a, torch_a, _), (server_b, torch_b, _) = [out.get(timeout=START_S) for _ in "ab"]
    assert server_a == server_b != os.getpid()
    assert torch_a and torch_b  # imported by the server, before the children's bodies ran


def test_a_child_takes_the_main_process_environment_of_when_it_starts(launcher):
    """The server keeps the environment it started with; each child takes its main process's
    as it is at that child's start, as a spawned child would."""
    names = ["FLAVR_TEST_CHANGED", "FLAVR_TEST_REMOVED", "FLAVR_TEST_ADDED"]
    out = launcher.queue()
    launcher.start("main", "a main process that starts two children",
                   targets.environment_of_two_children, out, names)
    main_pid, (server_1, _, first), (server_2, _, second) = out.get(timeout=2 * START_S)
    assert wait_for(launcher.dead, START_S, "the second main process to leave") == [
        ("main", "a main process that starts two children", 0)]
    assert server_1 == server_2 != main_pid  # both forked by the second main's own server
    assert first == {"FLAVR_TEST_CHANGED": "before", "FLAVR_TEST_REMOVED": "present",
                     "FLAVR_TEST_ADDED": None}
    assert second == {"FLAVR_TEST_CHANGED": "after", "FLAVR_TEST_REMOVED": None,
                      "FLAVR_TEST_ADDED": "new"}


def test_flavr_start_method_spawn_spawns_each_child_from_scratch(monkeypatch):
    monkeypatch.setenv(START_METHOD_ENV, "spawn")
    launcher = LocalLauncher()
    try:
        out = launcher.queue()
        launcher.start("spawned", "a spawned child", targets.report_origin, out, [])
        parent, torch_imported, _ = out.get(timeout=START_S)
    finally:
        launcher.stop(grace_s=5.0)
    assert parent == os.getpid() and not torch_imported


def test_a_start_method_it_does_not_know_is_an_error_naming_the_variable(monkeypatch, capsys,
                                                                        tmp_path):
    from pipeline.cli import benchmark

    monkeypatch.setenv(START_METHOD_ENV, "fork")
    with pytest.raises(SwitchError, match="FLAVR_START_METHOD='fork': expected 'forkserver' or "
                                          "'spawn'"):
        LocalLauncher()
    configs = Path(__file__).resolve().parents[2] / "configs"
    code = benchmark.main(["-c", str(configs / "cpu-smoke.yaml"), "-mi", "0", "-v", "1",
                           "--logs", str(tmp_path / "logs"), "--video-cache", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "error: environment variable FLAVR_START_METHOD='fork'" in err and "Traceback" not in err
    assert not list((tmp_path / "logs").glob("*"))  # nothing started: no run folder


@pytest.mark.parametrize("command", ["benchmark", "sweep"])
def test_a_ray_address_under_the_local_launcher_is_refused_naming_both(tmp_path, capsys,
                                                                        command):
    """It used to run locally, the address ignored without a word."""
    from pipeline.analysis.sweep import main as sweep_main
    from pipeline.cli.benchmark import main as benchmark_main

    config = str(Path(__file__).resolve().parents[2] / "configs" / "cpu-smoke.yaml")
    logs = tmp_path / "logs"
    common = ["-c", config, "-v", "1", "--logs", str(logs), "--ray-address", "127.0.0.1:1"]
    for extra, says in (([], "the config's launcher: local"),
                        (["--launcher", "local"], "--launcher local")):
        if command == "benchmark":
            code = benchmark_main([*common, "-mi", "2000", *extra])
        else:
            code = sweep_main([*common, "-mi", "2000,1000", *extra])
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("error: flag '--ray-address': ") and says in err, err
    assert not logs.exists()
