"""The CUDA MPS (Multi-Process Service) control daemon for a run.

Without MPS, every process of a run that uses a GPU has its own CUDA context there, and the GPU
time-slices between contexts: on one H200, two decode processes beside the model runner made each
model call 9% slower (0.5% under MPS; docs/gpu/fastpath/). Under MPS the clients' kernels share the GPU
through one server instead.

The main process of a run never touches CUDA, and its children start after the daemon is up and
take its os.environ (launch/local.py), so pointing CUDA_MPS_PIPE_DIRECTORY at the daemon here is
all a child needs. A daemon already running (the system's, say) is used as it is, never started
or stopped.
"""
from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CONTROL = "nvidia-cuda-mps-control"
FALLBACK_DIRS = ("/usr/local/nvidia/bin", "/usr/bin")
PIPE_ENV = "CUDA_MPS_PIPE_DIRECTORY"
LOG_ENV = "CUDA_MPS_LOG_DIRECTORY"
DEFAULT_PIPE_DIR = "/tmp/nvidia-mps"
PID_FILE = "nvidia-cuda-mps-control.pid"  # written by the daemon, removed when it stops
MODES = ("auto", "on", "off")
WAIT_S = 10.0
NOT_FOUND = f"{CONTROL} not found: processes sharing a GPU will time-slice"


def find_control() -> str | None:
    """Path of the control binary: on PATH, or where NVIDIA's packages and containers put it."""
    found = shutil.which(CONTROL)
    if found:
        return found
    for d in FALLBACK_DIRS:
        path = Path(d) / CONTROL
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def pipe_dir() -> Path:
    """Where CUDA clients of this process tree look for the daemon."""
    return Path(os.environ.get(PIPE_ENV) or DEFAULT_PIPE_DIR)


def daemon_alive(pipes: Path) -> bool:
    """Whether a control daemon serves `pipes`.

    The daemon's pid file decides where there is one. Without it, the control pipe: a socket must
    accept a connection (a stopped daemon leaves its socket behind), anything else must exist.
    """
    try:
        pid = int((pipes / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        pid = None
    if pid is not None:
        return _pid_alive(pid)
    control = pipes / "control"
    try:
        mode = control.stat().st_mode
    except OSError:
        return False
    if not stat.S_ISSOCK(mode):
        return True
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(control))
        except PermissionError:
            return True  # someone else's daemon
        except OSError:
            return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def running_daemon() -> Path | None:
    """The pipe directory of a daemon already serving this process tree, or None."""
    pipes = pipe_dir()
    return pipes if daemon_alive(pipes) else None


def gpu_processes(topo) -> dict[int, int]:
    """Processes of the run per GPU: decode workers and model runners. The sink also opens the
    last step's GPUs, but only waits on events there, so it does not count as sharing."""
    counts: dict[int, int] = {}
    for step in topo.replicas:
        for r in step:
            counts[r.key] = counts.get(r.key, 0) + 1  # "node:id" where the config names nodes
    return dict(sorted(counts.items(), key=lambda kv: str(kv[0])))


def shared_gpus(topo) -> dict[int, int]:
    return {g: n for g, n in gpu_processes(topo).items() if n > 1}


def describe_sharing(shared: dict[int, int]) -> str:
    return ", ".join(f"GPU {g} hosts {n} processes" for g, n in shared.items())


def plan(mode: str, device_kind: str, topo) -> tuple[bool, str]:
    """(use MPS, why) for a run. "auto" uses it where it helps and can be had: a GPU run with a
    GPU hosting more than one process, and a daemon running or the control binary at hand (a
    daemon already running is used in any case: CUDA clients connect to it by themselves).
    "on" requires it on a GPU run (ConfigError without the binary) and does nothing on the CPU.
    """
    from pipeline.errors import ConfigError

    if mode not in MODES:
        raise ConfigError("mps", f"expected one of {', '.join(MODES)}, got '{mode}'")
    if mode == "off":
        return False, "--mps off"
    if device_kind != "cuda":
        return False, "CPU run: no GPU to share"
    shared = shared_gpus(topo)
    if mode == "auto" and not shared:
        if running_daemon() is not None:
            return True, "no GPU shares processes, but a daemon is already running"
        return False, "no GPU shares processes"
    why = describe_sharing(shared) if shared else "asked for with --mps on"
    if running_daemon() is not None or find_control() is not None:
        return True, why
    if mode == "on":
        raise ConfigError("mps", f"--mps on, but {CONTROL} was not found (looked on PATH, "
                                 f"{', '.join(FALLBACK_DIRS)}) and no daemon is running at "
                                 f"{pipe_dir()}; install NVIDIA's MPS tools or use --mps auto/off")
    return False, NOT_FOUND


def hides(mode: str, device_kind: str) -> bool:
    """Whether a run keeps a daemon already running from its children: --mps off on a GPU run
    means no MPS, and CUDA clients would otherwise connect to it by themselves."""
    return mode == "off" and device_kind == "cuda"


def preview(use: bool, reason: str, hide: bool = False) -> str:
    """What a run would do, for --dry-run (arguments as for_run's)."""
    if not use:
        running = running_daemon() if hide else None
        return f"off: {reason}" + (f" (the daemon running at {running} would be hidden from "
                                   "the run)" if running else "")
    running = running_daemon()
    if running is not None:
        return f"on (daemon already running: {running}; {reason})"
    return f"on (a daemon would be started for the run with {find_control()}; {reason})"


# --------------------------------------------------------------------------------------------
# A daemon of one's own
# --------------------------------------------------------------------------------------------

class PrivateDaemon:
    """A control daemon started for one run, with pipe and log directories nobody else uses.

    As a context manager: started on entry (ConfigError naming the binary and its output when it
    cannot be), with the MPS variables in os.environ for the children started inside; stopped on
    exit, variables restored. Stopping never raises: what went wrong is left in `notice`.
    """

    def __init__(self, control: str, root: str | None = None):
        self.control = control
        self.base = root
        self.root = self.pipes = self.logs = None
        self.notice: str | None = None
        self._env = ExitStack()  # the pipe and log variables, set while the daemon runs

    def env(self) -> dict[str, str]:
        return {**os.environ, PIPE_ENV: str(self.pipes), LOG_ENV: str(self.logs)}

    def start(self) -> None:
        from pipeline.errors import ConfigError

        self.root = Path(tempfile.mkdtemp(prefix="flavr-mps-", dir=self.base or _short_tmp()))
        self.pipes, self.logs = self.root / "pipe", self.root / "log"
        self.pipes.mkdir()
        self.logs.mkdir()
        out = self.root / "start.out"
        try:
            why = self._launch(out)
        except KeyboardInterrupt:
            self._quit()
            self._remove()
            raise
        if why is not None:
            detail = _tail(out) or _tail(self.logs / "control.log")
            self._quit()
            self._remove()
            raise ConfigError("mps", f"could not start the MPS control daemon: '{self.control} -d' "
                                     f"{why}" + (f": {detail}" if detail else "")
                                     + " (use --mps off to run without MPS)")
        self._env.enter_context(_environ(PIPE_ENV, str(self.pipes)))
        self._env.enter_context(_environ(LOG_ENV, str(self.logs)))

    def _launch(self, out: Path) -> str | None:
        """Run `control -d` and wait for its control pipe; what went wrong, or None."""
        try:
            with open(out, "wb") as f:
                # Output to a file, not a pipe: the forked daemon may keep the pipe open and a
                # reader would wait for it. Its own session: Ctrl-C must not kill it before
                # the children are gone.
                code = subprocess.run([self.control, "-d"], env=self.env(), stdin=subprocess.DEVNULL,
                                      stdout=f, stderr=subprocess.STDOUT, timeout=WAIT_S,
                                      start_new_session=True).returncode
        except subprocess.TimeoutExpired:
            return f"did not return within {WAIT_S:g} s"
        except OSError as exc:
            return f"could not be executed: {exc}"
        if code:
            return f"exited with code {code}"
        deadline = time.monotonic() + WAIT_S
        while not (self.pipes / "control").exists():
            if time.monotonic() > deadline:
                return f"started, but its control pipe did not appear within {WAIT_S:g} s"
            time.sleep(0.05)
        return None

    def stop(self) -> str | None:
        """Quit the daemon, wait for it to go, put the environment back; a notice if it would
        not go (its directories are then left, so it can still be told to quit)."""
        self._env.close()
        if self.root is None:
            return None
        problem = self._quit()
        deadline = time.monotonic() + WAIT_S
        while daemon_alive(self.pipes):
            if time.monotonic() > deadline:
                return (f"the MPS control daemon of this run did not exit within {WAIT_S:g} s of "
                        f"'quit'" + (f" ({problem})" if problem else "") + "; it may still run: "
                        f"echo quit | {PIPE_ENV}={self.pipes} {self.control}, then remove {self.root}")
            time.sleep(0.05)
        self._remove()
        return None

    def _quit(self) -> str | None:
        """`echo quit | nvidia-cuda-mps-control` with this daemon's variables; what failed, or None."""
        try:
            r = subprocess.run([self.control], input="quit\n", env=self.env(), text=True,
                               capture_output=True, timeout=WAIT_S)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"'quit' failed: {exc}"
        if r.returncode:
            return f"'quit' exited with code {r.returncode}: {(r.stderr or r.stdout).strip()[-300:]}"
        return None

    def _remove(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "PrivateDaemon":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.notice = self.stop()
        except Exception as e:  # never hide the run's own outcome behind the daemon's
            self.notice = f"stopping the MPS control daemon failed: {type(e).__name__}: {e}"


def _short_tmp() -> str | None:
    """/tmp where it can be written to. MPS sockets live in the pipe directory and socket paths
    are limited to about 100 bytes, so a long $TMPDIR (a test's, say) would not do."""
    return "/tmp" if os.access("/tmp", os.W_OK) else None


@contextmanager
def _environ(key: str, value: str):
    """os.environ[key] = value inside the block, as it was after it; yields value."""
    saved = os.environ.get(key)
    os.environ[key] = value
    try:
        yield value
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def _tail(path: Path, limit: int = 400) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return text[-limit:].replace("\n", " | ")


# --------------------------------------------------------------------------------------------
# For a run
# --------------------------------------------------------------------------------------------

@dataclass
class MpsState:
    """What a run did about MPS: `text` goes into run_info['mps'], `notices` into its notices."""
    text: str
    notices: list[str] = field(default_factory=list)


@contextmanager
def for_run(use: bool, reason: str, hide: bool = False):
    """Everything a run does about MPS, around the life of its children: nothing ("off"; with
    `hide`, a daemon already running is kept from them), use the daemon already running, or
    start one and stop it once the block ends."""
    if not use:
        running = running_daemon() if hide else None
        if running is None:
            yield MpsState(f"off: {reason}")
            return
        # Clients look for the daemon in PIPE_ENV only: an empty directory there hides it.
        empty = tempfile.mkdtemp(prefix="flavr-nomps-", dir=_short_tmp())
        with _environ(PIPE_ENV, empty):
            try:
                yield MpsState(f"off: {reason} (the daemon running at {running} was hidden "
                               "from the run)")
            finally:
                shutil.rmtree(empty, ignore_errors=True)
        return
    running = running_daemon()
    if running is not None:
        yield MpsState(f"on (daemon already running: {running})")
        return
    control = find_control()
    if control is None:  # plan() said yes a moment ago; the binary went away
        yield MpsState(f"off: {NOT_FOUND}")
        return
    state = MpsState("on (started for this run)")
    daemon = PrivateDaemon(control)
    try:
        with daemon:
            yield state
    finally:
        if daemon.notice:
            state.notices.append(daemon.notice)
