"""The MPS daemon of a run (pipeline/mps.py) on a machine without GPUs: plans for the shipped
configs, detection of a daemon already running, and a private daemon's life, driven through a
stand-in for nvidia-cuda-mps-control (which cannot run here); then a real CPU run and the report."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pipeline.analysis.report import format_report, summarize, summary_from_run_dir
from pipeline.cli import benchmark
from pipeline.config import apply_overrides, load_config
from pipeline.errors import ConfigError
from pipeline.serving import mps
from pipeline.serving.launch.local import LocalLauncher
from pipeline.serving.orchestrator import RunOptions, run
from pipeline.serving.runlog import write_run
from pipeline.serving.topology import Topology

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SYSTEM_PATH = os.environ.get("PATH", os.defpath)

# Behaves as the control binary does for us: `-d` returns once the control pipe exists; "quit" on
# stdin makes it go. Every call is logged with the MPS variables it saw.
STAND_IN = """#!/bin/sh
echo "$* pipe=$CUDA_MPS_PIPE_DIRECTORY log=$CUDA_MPS_LOG_DIRECTORY" >> "$MPS_STAND_IN_CALLS"
if [ "$1" = "-d" ]; then
    mkfifo "$CUDA_MPS_PIPE_DIRECTORY/control"
    exit 0
fi
read command
if [ "$command" = "quit" ]; then
    rm -f "$CUDA_MPS_PIPE_DIRECTORY/control"
fi
"""


def topology(name: str, *overrides: str) -> Topology:
    cfg = apply_overrides(load_config(CONFIGS / name), list(overrides))
    return Topology.from_config(cfg)


@pytest.fixture
def no_mps(tmp_path, monkeypatch) -> Path:
    """No daemon (an empty pipe directory) and no control binary anywhere we look."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(mps, "FALLBACK_DIRS", ())
    pipes = tmp_path / "system-pipe"
    pipes.mkdir()
    monkeypatch.setenv(mps.PIPE_ENV, str(pipes))
    monkeypatch.delenv(mps.LOG_ENV, raising=False)
    return pipes


def install(tmp_path, monkeypatch, script: str) -> Path:
    """`script` as nvidia-cuda-mps-control, first on PATH; returns the file its calls go to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / mps.CONTROL
    path.write_text(script)
    path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{SYSTEM_PATH}")
    calls = tmp_path / "calls.log"
    monkeypatch.setenv("MPS_STAND_IN_CALLS", str(calls))
    return calls


@pytest.fixture
def stand_in(tmp_path, monkeypatch, no_mps) -> Path:
    return install(tmp_path, monkeypatch, STAND_IN)


@pytest.fixture
def short_dir():
    """A directory with a short path, for Unix sockets (paths of ~100 bytes at most)."""
    with tempfile.TemporaryDirectory(prefix="mps-t-", dir="/tmp") as d:
        yield Path(d)


def calls(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# --- who shares a GPU -----------------------------------------------------------------------

def test_processes_per_gpu_come_from_the_placement():
    assert mps.gpu_processes(topology("flavr-whole.yaml")) == {0: 2}
    assert mps.gpu_processes(topology("flavr-split.yaml")) == {0: 2, 1: 1}
    assert mps.gpu_processes(topology("study/replicated.yaml")) == {0: 3, 1: 3}
    assert mps.shared_gpus(topology("flavr-split-4gpu.yaml")) == {0: 2, 1: 2}
    assert mps.shared_gpus(topology("flavr-whole.yaml", "pipeline[1].gpus=[1]")) == {}


# --- plans ----------------------------------------------------------------------------------

def test_auto_uses_mps_where_a_gpu_is_shared_and_the_binary_exists(stand_in):
    assert mps.plan("auto", "cuda", topology("flavr-whole.yaml")) == (True, "GPU 0 hosts 2 processes")
    assert mps.plan("auto", "cuda", topology("flavr-split.yaml")) == (True, "GPU 0 hosts 2 processes")
    assert mps.plan("auto", "cuda", topology("flavr-replicated.yaml")) == (
        True, "GPU 0 hosts 2 processes, GPU 1 hosts 2 processes")


def test_auto_leaves_mps_off_where_no_gpu_is_shared(stand_in):
    one_each = topology("flavr-whole.yaml", "pipeline[1].gpus=[1]")
    assert mps.plan("auto", "cuda", one_each) == (False, "no GPU shares processes")


def test_auto_without_the_binary_says_the_gpu_will_time_slice(no_mps):
    use, reason = mps.plan("auto", "cuda", topology("flavr-whole.yaml"))
    assert not use
    assert reason == "nvidia-cuda-mps-control not found: processes sharing a GPU will time-slice"


def test_auto_without_the_binary_uses_a_daemon_already_running(no_mps):
    os.mkfifo(no_mps / "control")
    assert mps.plan("auto", "cuda", topology("flavr-whole.yaml")) == (True, "GPU 0 hosts 2 processes")


def test_auto_uses_a_daemon_already_running_even_without_sharing(no_mps):
    # CUDA clients connect to a running daemon by themselves: the plan says so.
    os.mkfifo(no_mps / "control")
    one_each = topology("flavr-whole.yaml", "pipeline[1].gpus=[1]")
    assert mps.plan("auto", "cuda", one_each) == (
        True, "no GPU shares processes, but a daemon is already running")


def test_cpu_runs_never_use_mps(no_mps):
    topo = topology("cpu-smoke.yaml")
    assert mps.plan("auto", "cpu", topo) == (False, "CPU run: no GPU to share")
    # "on" on the CPU is no error, even without the binary: there is nothing to do.
    assert mps.plan("on", "cpu", topo) == (False, "CPU run: no GPU to share")


def test_off_is_off_everywhere(stand_in):
    assert mps.plan("off", "cuda", topology("flavr-replicated.yaml")) == (False, "--mps off")
    assert mps.plan("off", "cpu", topology("cpu-smoke.yaml")) == (False, "--mps off")


def test_on_uses_mps_on_any_gpu_run(stand_in):
    one_each = topology("flavr-whole.yaml", "pipeline[1].gpus=[1]")
    assert mps.plan("on", "cuda", one_each) == (True, "asked for with --mps on")
    assert mps.plan("on", "cuda", topology("flavr-whole.yaml")) == (True, "GPU 0 hosts 2 processes")


def test_on_without_the_binary_is_a_clear_error(no_mps):
    with pytest.raises(ConfigError) as info:
        mps.plan("on", "cuda", topology("flavr-whole.yaml"))
    assert info.value.field == "mps"
    assert "nvidia-cuda-mps-control was not found" in str(info.value)
    assert "--mps auto/off" in str(info.value)


def test_an_unknown_mode_is_an_error():
    with pytest.raises(ConfigError, match="expected one of auto, on, off"):
        mps.plan("yes", "cuda", topology("flavr-whole.yaml"))


# --- a daemon already running ---------------------------------------------------------------

def test_the_default_pipe_directory(monkeypatch):
    monkeypatch.delenv(mps.PIPE_ENV, raising=False)
    assert mps.pipe_dir() == Path("/tmp/nvidia-mps")


def test_a_control_pipe_means_a_daemon_is_running(no_mps):
    assert mps.running_daemon() is None
    os.mkfifo(no_mps / "control")
    assert mps.running_daemon() == no_mps


def test_the_pid_file_decides_when_there_is_one(no_mps):
    os.mkfifo(no_mps / "control")
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    (no_mps / mps.PID_FILE).write_text(f"{gone.pid}\n")
    assert mps.running_daemon() is None  # a daemon that stopped: its control pipe stays
    (no_mps / mps.PID_FILE).write_text(f"{os.getpid()}\n")
    assert mps.running_daemon() == no_mps


def test_a_socket_nobody_listens_on_is_a_stopped_daemon(short_dir, monkeypatch):
    monkeypatch.setenv(mps.PIPE_ENV, str(short_dir))
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(short_dir / "control"))
    left.close()
    assert mps.running_daemon() is None
    (short_dir / "control").unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listening:
        listening.bind(str(short_dir / "control"))
        listening.listen(1)
        assert mps.running_daemon() == short_dir


def test_a_running_daemon_is_used_and_left_alone(stand_in, no_mps):
    os.mkfifo(no_mps / "control")
    with mps.for_run(True, "GPU 0 hosts 2 processes") as state:
        assert os.environ[mps.PIPE_ENV] == str(no_mps)
    assert state.text == f"on (daemon already running: {no_mps})"
    assert state.notices == []
    assert calls(stand_in) == []  # neither started nor stopped
    assert (no_mps / "control").exists()


def test_off_hides_a_running_daemon_from_the_run(stand_in, no_mps):
    os.mkfifo(no_mps / "control")
    assert mps.hides("off", "cuda") and not mps.hides("off", "cpu") and not mps.hides("auto", "cuda")
    with mps.for_run(False, "--mps off", hide=True) as state:
        empty = Path(os.environ[mps.PIPE_ENV])
        assert empty != no_mps and list(empty.iterdir()) == [] and mps.running_daemon() is None
    assert state.text == f"off: --mps off (the daemon running at {no_mps} was hidden from the run)"
    assert os.environ[mps.PIPE_ENV] == str(no_mps) and not empty.exists()
    assert (no_mps / "control").exists() and calls(stand_in) == []


def test_off_with_no_daemon_running_changes_nothing(no_mps):
    with mps.for_run(False, "--mps off", hide=True) as state:
        assert os.environ[mps.PIPE_ENV] == str(no_mps)
    assert state.text == "off: --mps off"


# --- a daemon of the run's own --------------------------------------------------------------

def _child_env(queue):
    queue.put((os.environ.get(mps.PIPE_ENV), os.environ.get(mps.LOG_ENV)))


def test_a_private_daemon_lives_exactly_as_long_as_the_block(stand_in, no_mps):
    control = mps.find_control()
    assert control == str(Path(os.environ["PATH"].split(os.pathsep)[0]) / mps.CONTROL)
    daemon = mps.PrivateDaemon(control)
    with daemon:
        pipes, logs = daemon.pipes, daemon.logs
        assert os.environ[mps.PIPE_ENV] == str(pipes) and os.environ[mps.LOG_ENV] == str(logs)
        assert pipes.parent == daemon.root and len(str(pipes / "control")) < 100
        assert (pipes / "control").exists() and mps.daemon_alive(pipes)
        # What the run's children rely on: a child the launcher starts sees the daemon.
        launcher = LocalLauncher()
        try:
            q = launcher.queue()
            launcher.start("child", "a child of the run", _child_env, q)
            assert q.get(timeout=60) == (str(pipes), str(logs))
        finally:
            launcher.stop(grace_s=30.0)
    assert daemon.notice is None
    assert os.environ[mps.PIPE_ENV] == str(no_mps)  # put back as it was
    assert mps.LOG_ENV not in os.environ
    assert not daemon.root.exists()
    assert calls(stand_in) == [f"-d pipe={pipes} log={logs}", f" pipe={pipes} log={logs}"]


def test_for_run_starts_and_stops_a_daemon(stand_in, no_mps):
    with mps.for_run(True, "GPU 0 hosts 2 processes") as state:
        pipes = Path(os.environ[mps.PIPE_ENV])
        assert pipes != no_mps and (pipes / "control").exists()
    assert state.text == "on (started for this run)"
    assert state.notices == []
    assert os.environ[mps.PIPE_ENV] == str(no_mps)
    assert not pipes.parent.exists()


def test_for_run_stops_the_daemon_when_the_run_raises(stand_in):
    with pytest.raises(RuntimeError, match="boom"):
        with mps.for_run(True, "shared") as state:
            pipes = Path(os.environ[mps.PIPE_ENV])
            raise RuntimeError("boom")
    assert not pipes.parent.exists()
    assert state.notices == []


def test_for_run_off_touches_nothing(stand_in, no_mps):
    with mps.for_run(False, "no GPU shares processes") as state:
        assert os.environ[mps.PIPE_ENV] == str(no_mps)
    assert state.text == "off: no GPU shares processes"
    assert calls(stand_in) == []


def test_a_daemon_that_cannot_start_is_a_clear_error(tmp_path, monkeypatch, no_mps, short_dir):
    install(tmp_path, monkeypatch, "#!/bin/sh\necho 'cannot find a GPU' >&2\nexit 3\n")
    control = mps.find_control()
    with pytest.raises(ConfigError) as info:
        mps.PrivateDaemon(control, root=str(short_dir)).start()
    text = str(info.value)
    assert f"'{control} -d' exited with code 3" in text and "cannot find a GPU" in text
    assert list(short_dir.iterdir()) == []  # its directories are gone
    assert os.environ[mps.PIPE_ENV] == str(no_mps)


def test_a_daemon_whose_pipe_never_appears_is_a_clear_error(tmp_path, monkeypatch, no_mps, short_dir):
    install(tmp_path, monkeypatch, "#!/bin/sh\nexit 0\n")
    monkeypatch.setattr(mps, "WAIT_S", 0.3)
    with pytest.raises(ConfigError, match="control pipe did not appear within 0.3 s"):
        mps.PrivateDaemon(mps.find_control(), root=str(short_dir)).start()
    assert list(short_dir.iterdir()) == []


def test_a_daemon_that_will_not_quit_gives_a_notice_not_an_error(tmp_path, monkeypatch, no_mps):
    stubborn = STAND_IN.replace('rm -f "$CUDA_MPS_PIPE_DIRECTORY/control"', "exit 1")
    install(tmp_path, monkeypatch, stubborn)
    monkeypatch.setattr(mps, "WAIT_S", 0.3)
    with mps.for_run(True, "shared") as state:
        pipes = Path(os.environ[mps.PIPE_ENV])
    assert os.environ[mps.PIPE_ENV] == str(no_mps)
    [notice] = state.notices
    assert "did not exit within 0.3 s" in notice and "'quit' exited with code 1" in notice
    assert str(pipes) in notice  # left in place, so it can still be told to quit
    assert (pipes / "control").exists()
    shutil.rmtree(pipes.parent)


# --- the command line -----------------------------------------------------------------------

def test_the_flag_reaches_the_run_options():
    assert benchmark.build_parser().parse_args(["-c", "x.yaml"]).mps == "auto"
    assert benchmark.build_parser().parse_args(["-c", "x.yaml", "--mps", "off"]).mps == "off"
    from pipeline.analysis.sweep import _options, build_capacity_parser, build_parser

    args = build_parser().parse_args(["-c", "x.yaml", "-mi", "50", "--mps", "on"])
    assert _options(args, 10).mps == "on"
    args = build_capacity_parser().parse_args(["-c", "x.yaml", "--slo-p99-ms", "100"])
    assert _options(args, 10).mps == "auto"


def test_dry_run_says_what_mps_would_do(capsys):
    assert benchmark.main(["-c", str(CONFIGS / "cpu-smoke.yaml"), "--dry-run"]) == 0
    assert "mps: off: CPU run: no GPU to share" in capsys.readouterr().out


def test_dry_run_on_a_gpu_machine(stand_in, no_mps, monkeypatch, capsys):
    import pipeline.serving.plan

    monkeypatch.setattr(pipeline.serving.plan, "gpu_count_nvml", lambda: 1)  # as if one GPU
    whole = ["-c", str(CONFIGS / "flavr-whole.yaml"), "--dry-run"]
    assert benchmark.main(whole) == 0
    assert f"mps: on (a daemon would be started for the run with {mps.find_control()}; " \
           "GPU 0 hosts 2 processes)" in capsys.readouterr().out
    os.mkfifo(no_mps / "control")
    assert benchmark.main(whole) == 0
    assert f"mps: on (daemon already running: {no_mps}; GPU 0 hosts 2 processes)" \
           in capsys.readouterr().out
    assert benchmark.main(whole + ["--mps", "off"]) == 0
    assert f"mps: off: --mps off (the daemon running at {no_mps} would be hidden from the run)" \
           in capsys.readouterr().out
    assert calls(stand_in) == []  # a dry run starts nothing


def test_dry_run_with_mps_on_and_no_binary_fails_like_the_run(no_mps, monkeypatch, capsys):
    import pipeline.serving.plan

    monkeypatch.setattr(pipeline.serving.plan, "gpu_count_nvml", lambda: 1)
    assert benchmark.main(["-c", str(CONFIGS / "flavr-whole.yaml"), "--dry-run", "--mps", "on"]) == 2
    assert "nvidia-cuda-mps-control was not found" in capsys.readouterr().err


# --- the report -----------------------------------------------------------------------------

STEPS = ["decode", "flavr"]


def rows(n=4):
    out = []
    for i in range(n):
        r = {"request_id": i, "video": "c.webm", "frames": 8, "output_frames": 15, "warmup": 0,
             "status": "ok", "error": "", "scheduled_s": 0.1 * i, "issued_s": 0.1 * i,
             "done_s": 0.1 * i + 0.05, "latency_s": 0.05}
        for step in STEPS:
            r.update({f"{step}.device": "cuda:0", f"{step}.replica": 0, f"{step}.queue_wait_s": 0.0,
                      f"{step}.compute_s": 0.01, f"{step}.handoff_s": 0.0, f"{step}.batch": 1})
        r.update({"sink.queue_wait_s": 0.0, "sink.handoff_s": 0.0})
        out.append(r)
    return out


def gpu_run(**info):
    return summarize(rows(), STEPS, {"t0": 0.0, "config": "t", "device_kind": "cuda", **info})


def mps_warnings(summary):
    return [w for w in summary["warnings"] if "without MPS" in w]


def test_gpus_shared_without_mps_are_a_warning():
    s = gpu_run(mps="off: --mps off", gpu_processes={"0": 3, "1": 1, "2": 2})
    [w] = mps_warnings(s)
    assert w.startswith("GPU 0 hosted 3 processes, GPU 2 hosted 2 processes of this run without "
                        "MPS (--mps off)")
    assert "run with --mps on" in w
    assert "\nmps: off: --mps off\n" in format_report(s)


def test_no_warning_under_mps_or_without_sharing():
    assert mps_warnings(gpu_run(mps="on (started for this run)", gpu_processes={"0": 2})) == []
    assert mps_warnings(gpu_run(mps="off: no GPU shares processes", gpu_processes={"0": 1, "1": 1})) == []
    cpu = summarize(rows(), STEPS, {"t0": 0.0, "device_kind": "cpu",
                                    "mps": "off: CPU run: no GPU to share", "gpu_processes": None})
    assert mps_warnings(cpu) == []


def test_the_mps_line_sits_under_the_run_line():
    lines = format_report(gpu_run(mps="on (started for this run)", gpu_processes={"0": 2})).splitlines()
    assert lines[1].startswith("run: ") and "mps" not in lines[1]
    assert lines[2] == "mps: on (started for this run)"


def test_logs_from_before_mps_was_recorded_still_load(tmp_path):
    old = summarize(rows(), STEPS, {"t0": 0.0, "config": "t", "device_kind": "cuda"})
    run_dir = write_run(tmp_path / "old", config_dict={}, args_dict={}, env={}, rows=rows(),
                        columns=list(rows()[0]), nvml_samples=[], summary=old,
                        report_text=format_report(old))
    again = summary_from_run_dir(run_dir)
    assert "mps" not in again["run"] and mps_warnings(again) == []
    assert "\nmps: unknown (not recorded in this run's logs)\n" in format_report(again)


# --- a real run -----------------------------------------------------------------------------

@pytest.mark.slow
def test_a_cpu_run_records_that_mps_was_off_and_why(tmp_path):
    # The shipped CPU config as `--set` would shrink it: 16x16 frames (a fraction of 64x64's
    # model work in the run's start-up and requests); what is checked is the run's MPS record.
    cfg = apply_overrides(load_config(CONFIGS / "cpu-smoke.yaml"), [
        "videos.synthetic.width=16", "videos.synthetic.height=16", "model.resolution=[16,16]"])
    opts = RunOptions(mean_interval_ms=0, videos=2, warmup=0, mps="on", progress=False,
                      cpu_threads=1, logs_root=str(tmp_path / "logs"),
                      video_cache=str(tmp_path / "videos"), start_timeout_s=240,
                      stall_timeout_s=120)
    result = run(cfg, opts)
    assert result.error is None, result.error
    state = "off: CPU run: no GPU to share"
    assert result.summary["run"]["mps"] == state
    assert result.summary["run"]["gpu_processes"] is None
    assert f"\nmps: {state}\n" in result.report
    assert "--mps on has no effect: CPU run: no GPU to share" in result.summary["warnings"]
    assert mps_warnings(result.summary) == []
    saved = json.loads((result.run_dir / "report.json").read_text())
    assert saved["run"]["mps"] == state
    assert json.loads((result.run_dir / "run.json").read_text())["mps"] == state
    assert summary_from_run_dir(result.run_dir) == saved


def test_gpus_named_by_node_sort_and_warn():
    # Ray placements key their GPUs by node ("gpuA:0"); the warning must not trip over the name.
    s = gpu_run(mps="off: the ray launcher's processes run without MPS", launcher="ray",
                gpu_processes={"gpuB:0": 2, "gpuA:0": 3, "gpuA:1": 1})
    [w] = mps_warnings(s)
    assert w.startswith("GPU gpuA:0 hosted 3 processes, GPU gpuB:0 hosted 2 processes")
    assert w.endswith("fewer processes per GPU avoid it") and "--mps on" not in w
