"""The suite leaves nothing behind: checked once, at the end of the session.

What the tests' processes could leave, and how each is told apart from other programs on a
shared machine:
  * processes: every process the tests start, directly or not, inherits the environment mark
    FLAVR_TEST_SESSION=<pytest's pid>, which stays even once its parent has gone;
  * temporary files: processes the tests start get a temporary folder of the session's own
    (TMPDIR), so whatever is in it at the end was left by a test; in this process's own
    temporary folder, the run folders a launcher made here (flavr-run-<pytest's pid>-*, but
    not -mp-*, the fork server's, which leaves with this process);
  * named semaphores in /dev/shm (multiprocessing's sem.mp-*, stranded when their owner and its
    resource tracker are killed): new ones that no live process maps. These cannot be told
    apart from another program's, so they fail the session only with FLAVR_LEAK_CHECK=strict
    (a machine of its own, as in CI) and are reported otherwise.
Leftover processes and files fail the session; the leftovers are then removed.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

MARK = "FLAVR_TEST_SESSION"
SHM = Path("/dev/shm")
GRACE_S = 10.0  # for processes still on their way out when the last test ends


def pytest_configure(config):
    if MARK in os.environ:  # a session started by a test: the outer one checks
        return
    tempfile.gettempdir()  # this process keeps the usual folder (pytest's tmp_path lives there)
    private = Path(tempfile.mkdtemp(prefix="flavr-tests-"))
    os.environ[MARK] = str(os.getpid())
    os.environ["TMPDIR"] = str(private)
    config.stash[_STATE] = {"private": private, "shm": _shm_names(),
                            "tmp": set(os.listdir(tempfile.gettempdir()))}


# Last, after pytest has removed its own folder of this session (tmp_path_retention_policy).
@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    state = session.config.stash.get(_STATE, None)
    if state is None:
        return
    processes = _our_processes(wait_s=GRACE_S)
    files = _left_files(state)
    semaphores = sorted(_unmapped_shm() - state["shm"])
    lines = []
    if processes:
        lines.append(f"{len(processes)} process(es) started by the tests are still running:")
        lines += [f"    pid {pid}: {cmd}" for pid, cmd in processes]
    if files:
        lines.append(f"{len(files)} temporary file(s) or folder(s) left by the tests:")
        lines += [f"    {f}" for f in files]
    strict = os.environ.get("FLAVR_LEAK_CHECK") == "strict"
    if semaphores:
        lines.append(f"{len(semaphores)} named semaphore(s) appeared in /dev/shm that no live "
                     f"process maps (perhaps another program's"
                     f"{'' if strict else '; FLAVR_LEAK_CHECK=strict fails on them'}):")
        lines += [f"    /dev/shm/{name}" for name in semaphores[:20]]
    session.config.stash[_REPORT] = lines
    if processes or files or (semaphores and strict):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    for pid, _ in processes:  # nothing stays behind, even after a failure
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    for f in files:
        if f.is_dir():
            shutil.rmtree(f, ignore_errors=True)
        else:
            f.unlink(missing_ok=True)
    shutil.rmtree(state["private"], ignore_errors=True)
    _remove_empty_caches(state)


def _remove_empty_caches(state: dict) -> None:
    """Folders made in this process's temporary folder that the session left empty: torch's
    compiler cache (torchinductor_<user>, made as soon as the compiler is imported, empty unless
    something compiled) and pytest's parent of its session folders (pytest-of-<user>)."""
    tmp = Path(tempfile.gettempdir())
    for name in set(os.listdir(tmp)) - state["tmp"]:
        if name.startswith(("torchinductor_", "pytest-of-")):
            folder = tmp / name
            link = folder / "pytest-current"  # to the session folder, which pytest removed
            if link.is_symlink() and not link.exists():
                link.unlink()
            try:
                folder.rmdir()  # only if empty
            except OSError:
                pass


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = config.stash.get(_REPORT, [])
    if lines:
        terminalreporter.section("left behind by the tests", sep="=", red=True)
        for line in lines:
            terminalreporter.write_line(line)


_STATE = pytest.StashKey[dict]()
_REPORT = pytest.StashKey[list]()


def _our_processes(wait_s: float) -> list[tuple[int, str]]:
    """(pid, command line) of live processes carrying this session's mark, except this one, its
    resource tracker and the launcher's fork server (they leave with this process). Waits up to
    `wait_s` for them to go."""
    end = time.monotonic() + wait_s
    while True:
        found = _marked_processes()
        if not found or time.monotonic() > end:
            return found
        time.sleep(0.2)


def _marked_processes() -> list[tuple[int, str]]:
    me = os.getpid()
    mark = f"{MARK}={me}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        pid = int(proc.name)
        if pid == me:
            continue
        try:
            if mark not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state[0] == "Z":
            continue  # exited; its parent has not reaped it yet
        if int(state[1]) == me and ("resource_tracker" in cmd or "forkserver" in cmd):
            continue
        found.append((pid, cmd.strip()[:200]))
    return found


def _left_files(state: dict) -> list[Path]:
    private = state["private"]
    left = sorted(private.iterdir()) if private.is_dir() else []
    tmp = Path(tempfile.gettempdir())
    ours = f"flavr-run-{os.getpid()}-"
    server = ours + "mp-"  # the launcher's fork server's socket: removed as this process exits
    left += sorted(tmp / n for n in set(os.listdir(tmp)) - state["tmp"]
                   if n.startswith(ours) and not n.startswith(server))
    return left


def _shm_names() -> set[str]:
    return set(os.listdir(SHM)) if SHM.is_dir() else set()


def _unmapped_shm() -> set[str]:
    """/dev/shm entries that no live process maps (glibc maps a named semaphore under a
    temporary name, so entries are matched by inode)."""
    inodes = {}
    for name in _shm_names():
        try:
            inodes[os.stat(SHM / name).st_ino] = name
        except FileNotFoundError:
            pass
    mapped = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            lines = maps.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) >= 6 and fields[5].startswith("/dev/shm/"):
                mapped.add(int(fields[4]))
    return {name for ino, name in inodes.items() if ino not in mapped and (SHM / name).exists()}
