"""Bodies of the small child processes the launcher tests start (a module of its own, so a spawned
child imports only this and the launcher, not torch)."""
from __future__ import annotations

import os
import signal
import tempfile
import time


def exit_with(code: int) -> None:
    os._exit(code)


def sleep_for(seconds: float) -> None:
    time.sleep(seconds)


def ignore_sigterm_and_sleep(ready) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.put(os.getpid())
    time.sleep(600)


def report_and_sleep(out, seconds: float) -> None:
    """Says its pid and where its temporary files go, leaves a file there, then sleeps."""
    handle, path = tempfile.mkstemp(prefix="left-by-child-")
    os.close(handle)
    out.put((os.getpid(), tempfile.gettempdir(), path))
    time.sleep(seconds)


def write_float(floats, index: int, value: float) -> None:
    floats[index] = value


def set_flag(flag) -> None:
    flag.set()


def launch_a_sleeper_and_wait(out) -> None:
    """A main process of its own: starts one child through the local launcher, says both pids,
    and waits (a test kills it with SIGKILL)."""
    from pipeline.serving.launch.local import LocalLauncher

    launcher = LocalLauncher()
    launcher.start("sleeper", "a child that sleeps", sleep_for, 600.0)
    out.put((os.getpid(), launcher.pid("sleeper")))
    time.sleep(600)


def report_env(out, names) -> None:
    out.put({name: os.environ.get(name) for name in names})
