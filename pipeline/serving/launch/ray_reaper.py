"""A watcher for the Ray instance a run starts on this machine, so that a main process killed
with -9 leaves nothing of it behind.

Ray ties its own head processes (GCS, raylet, ...) to the main process (the kernel kills them
with it), but the raylet's agents (DashboardAgent, RuntimeEnvAgent) outlive it: each notices
its raylet gone at once, then waits out a 60 s attempt to report that to the GCS, which died
too. And the instance's session folder (/tmp/flavr-ray-<pid>-*) is only removed by stop().

So the launcher starts this small process (python -m pipeline.serving.launch.ray_reaper),
tells it on its stdin the processes of the instance (pid and start time, so that a reused pid
is never taken for one), and says "done" when stop() has shut the instance down. When its stdin
ends without "done", the main process is gone: it kills those processes still running and
removes the session folder. Linux only (/proc); elsewhere the launcher starts none.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

DONE = "done"


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat); None when it is
    gone or has ended (a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the name, which may hold spaces or ')'
    return None if fields[0] == "Z" else fields[19]  # state (field 3), start time (field 22)


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


class Reaper:
    """The main process's end of the watcher."""

    def __init__(self, session_dir: str, known: set[int]):
        self.known = set(known)  # processes below this one that are not the instance's
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, str(os.getpid()), session_dir],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            text=True, close_fds=True)
        self.known.add(self.proc.pid)

    def note_processes(self) -> None:
        """Tell the watcher every process this one has below it now that it was not told of."""
        lines = []
        for pid in descendants(os.getpid()) - self.known:
            started = start_time(pid)
            if started is not None:
                lines.append(f"{pid} {started}\n")
                self.known.add(pid)
        self._send("".join(lines))

    def close(self) -> None:
        """The instance is shut down: the watcher leaves without touching anything."""
        self._send(DONE + "\n")
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _send(self, text: str) -> None:
        if not text:
            return
        try:
            self.proc.stdin.write(text)
            self.proc.stdin.flush()
        except OSError:  # the watcher is gone: nothing to be done about it here
            pass


def _watch(session_dir: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the main process stops the run
    processes: dict[int, str] = {}
    for line in sys.stdin:
        if line.strip() == DONE:
            return
        pid, started = line.split()
        processes[int(pid)] = started
    # stdin ended without "done": the main process is gone.
    for pid, started in processes.items():
        if start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    deadline = time.monotonic() + 5.0
    while (any(start_time(p) == s for p, s in processes.items())
           and time.monotonic() < deadline):
        time.sleep(0.05)
    shutil.rmtree(session_dir, ignore_errors=True)


if __name__ == "__main__":
    _watch(sys.argv[2])
