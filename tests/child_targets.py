"""Bodies of the small child processes the launcher tests start (a module of its own, so a spawned
child imports only this and the launcher, not torch)."""
from __future__ import annotations

import os
import signal
import sys
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


def report_origin(out, names) -> None:
    """Says its parent's pid, whether torch was imported before its body ran, and the named
    environment variables."""
    out.put((os.getppid(), "torch" in sys.modules, {n: os.environ.get(n) for n in names}))


def environment_of_two_children(out, names) -> None:
    """A main process of its own: sets the variables `names` (the first two), starts a child,
    changes the first, removes the second and sets the third, then starts another child.
    Says its pid and what each child reported."""
    from pipeline.serving.launch.local import LocalLauncher

    changed, removed, added = names
    os.environ[changed], os.environ[removed] = "before", "present"
    launcher = LocalLauncher()
    seen = launcher.queue()
    try:
        launcher.start("first", "the child started first", report_origin, seen, names)
        first = seen.get(timeout=120)
        os.environ[changed], os.environ[added] = "after", "new"
        del os.environ[removed]
        launcher.start("second", "the child started second", report_origin, seen, names)
        second = seen.get(timeout=120)
    finally:
        launcher.stop(grace_s=5.0)
    # The queue's named semaphores go with it, before the report: once the test has that, it
    # may end this process before the function returns.
    del seen
    out.put((os.getpid(), first, second))


def report_multiprocessing_folder(out) -> None:
    """Says where multiprocessing keeps this process's sockets (those that share CPU tensors)."""
    from multiprocessing import util

    out.put(util.get_temp_dir())
