"""The local launcher: every process of a run is a child of the main process, on this machine;
queues are multiprocessing queues and tensors cross by CUDA IPC (shared memory on the CPU).

Children are forked from multiprocessing's server process (forkserver), which imported torch
once, so a child starts in a fraction of a second instead of importing torch afresh (seconds of
CPU per child). The server never touches CUDA, so its children may. A child takes the main
process's environment at its start, as a spawned one would (torch in the server has read its
own at import, from the first run's main process). FLAVR_START_METHOD=spawn spawns each child
from scratch instead, as on platforms without forkserver.

Children die with the main process: on Linux each asks the kernel (prctl PR_SET_PDEATHSIG) to
kill it the moment the thread that started it ends. A spawned child's parent is the main
process, which a kill -9 ends; a forked child's parent is the server, which leaves as soon as
the main process has gone (each child gives up its hold on the server's liveness pipe). They ask
first thing, before their start arguments import anything heavy, so even a child still starting
up goes at once. (The thread that starts a run's children must outlive them: run() starts and
stops them on one thread.)

Children keep their temporary files (multiprocessing's pymp-* folders, which hold the sockets
that share CPU tensors) in one folder of the run, flavr-run-<main pid>-*, which stop() removes
once every child is gone: a child that is killed cannot clean up after itself. A main process
killed with -9 cannot either; the next launcher removes folders whose main process is gone.
torch.compile's cache (Triton's inside it), which also defaults to the temporary folder, stays
where it was, so compiled kernels outlive the run.
"""
from __future__ import annotations

import ctypes
import getpass
import mmap
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import time
import weakref
from multiprocessing import reduction, util
from pathlib import Path

from pipeline.serving.launch.base import Launcher
from pipeline.serving.launch.ipc_leftovers import remove_ipc_leftovers
from pipeline.switches import env_choice


class Flag:
    """A one-way flag (set / is_set) shared by processes, read without taking a lock.

    A multiprocessing.Event takes a lock on every is_set(); a child killed while holding it would
    leave it taken, and the next set() or is_set() anywhere would wait forever. Here the flag is
    a semaphore's count, read with sem_getvalue, which locks nothing.
    """

    def __init__(self, ctx):
        self._sem = ctx.Semaphore(0)

    def set(self) -> None:
        if not self.is_set():
            self._sem.release()

    def is_set(self) -> bool:
        return self._sem.get_value() > 0


class SharedFloats:
    """n float64 in a memory file of this run, mapped by the main process and by every child it
    starts (the descriptor goes with the start arguments). Unlike multiprocessing's RawArray,
    whose heap keeps its file open for the life of the process, this one is closed with the run."""

    def __init__(self, n: int, fd: int | None = None):
        self.n = n
        if fd is None:
            fd = _memory_file(8 * max(n, 1))
        self._fd = fd
        self._map = mmap.mmap(fd, 8 * max(n, 1))
        self._view = memoryview(self._map).cast("d")
        self._closer = weakref.finalize(self, _close_floats, self._view, self._map, fd)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> float:
        return self._view[i]

    def __setitem__(self, i: int, value: float) -> None:
        self._view[i] = value

    def close(self) -> None:
        self._closer()

    def __reduce__(self):
        # Only while a child is being started: DupFd hands the descriptor to that child.
        return _attach_floats, (self.n, reduction.DupFd(self._fd))


def _memory_file(size: int) -> int:
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("flavr-shared-floats", os.MFD_CLOEXEC)
    else:  # an unlinked temporary file elsewhere
        fd, name = tempfile.mkstemp(prefix="flavr-shared-floats-")
        os.unlink(name)
    os.ftruncate(fd, size)
    return fd


def _attach_floats(n: int, dup) -> SharedFloats:
    return SharedFloats(n, dup.detach())


def _close_floats(view, mapping, fd: int) -> None:
    view.release()
    mapping.close()
    os.close(fd)


TEMP_PREFIX = "flavr-run-"


def remove_stale_temp_dirs(root: str | None = None, prefix: str = TEMP_PREFIX) -> list[Path]:
    """Remove the run folders (<prefix><pid>-*, flavr-run-<pid>-* by default) of main processes
    that no longer exist, in `root` (default: the temporary folder). Returns what was removed."""
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(prefix + "*"):
        pid = folder.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)) and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        return True
    return True


START_METHOD_ENV = "FLAVR_START_METHOD"
SERVER_PRELOAD = ["pipeline.serving.launch.server_preload"]


def process_context():
    """The multiprocessing context children start from: forkserver where this platform has it,
    unless FLAVR_START_METHOD=spawn. Never fork: CUDA cannot survive it."""
    method = env_choice(START_METHOD_ENV, ("forkserver", "spawn"))
    if method == "forkserver" and "forkserver" not in mp.get_all_start_methods():
        method = "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(SERVER_PRELOAD)  # read once, when the server starts
    return ctx


def _name_server_folder() -> None:
    """multiprocessing keeps the server's socket in the main process's own temporary folder
    (pymp-*), which a main process killed with -9 leaves behind. Make that folder now, named
    like a run folder of this process (flavr-run-<pid>-mp-*), so that the next launcher removes
    it as it does the run folders of dead main processes. A normal exit removes it as before."""
    config = getattr(mp.current_process(), "_config", None)
    if not isinstance(config, dict) or config.get("tempdir") is not None:
        return  # made already (or a multiprocessing that keeps it elsewhere): left as it is
    folder = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-mp-")
    util.Finalize(None, shutil.rmtree, args=(folder, True), exitpriority=-100)
    config["tempdir"] = folder


_PR_SET_PDEATHSIG = 1


def prepare_child(parent_pid: int, temp_dir: str, environ: dict[str, str]) -> None:
    """First thing in a child: be killed when the parent goes (leave now if it has gone
    already), take the main process's environment, and keep temporary files in the run's
    folder."""
    # A spawned child starts with SIGINT blocked (LocalLauncher.start), a forked one with the
    # server's mask: blocked in both until enter_child ignores it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the child still polls for its parent (child.main_process_gone)
    forked = _release_server()
    if not forked and os.getppid() != parent_pid:
        os._exit(1)
    if os.environ != environ:  # forked: the server's, from when it started
        os.environ.clear()
        os.environ.update(environ)
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = _compile_cache_dir()
    os.environ["TMPDIR"] = temp_dir  # for libraries and their helper processes too
    tempfile.tempdir = temp_dir


def _release_server() -> bool:
    """In a child forked by the server: close this child's copy of the server's liveness pipe.
    The server leaves when every copy is closed, so then it leaves with the main process, and
    the parent-death signal, which watches the server, takes this child with it. A main process
    that had gone already leaves nothing holding the pipe: the server and this child go at once.
    Returns whether this child was forked by the server (False: spawned)."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is None:
        return False
    os.close(fd)
    server._forkserver_alive_fd = None  # a server this child starts (if any) is its own
    return True


def _compile_cache_dir() -> str:
    """Where torch.compile keeps its cache by default: torchinductor_<user> in the temporary
    folder (the usual one, not the run's)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError, ModuleNotFoundError):
        user = f"uid_{os.getuid()}"
    return os.path.join(tempfile.gettempdir(), "torchinductor_" + user.replace("/", "_"))


class _ChildSetup:
    """The first start argument of every child. Unpickling it runs prepare_child, so the child
    is armed before the rest of its arguments (and their heavy imports) are loaded."""

    def __init__(self, parent_pid: int, temp_dir: str):
        self.parent_pid = parent_pid
        self.temp_dir = temp_dir
        self.environ = dict(os.environ)  # at the child's start, as a spawned child would see it

    def __reduce__(self):
        return prepare_child, (self.parent_pid, self.temp_dir, self.environ)


def _child_main(_armed, target, *args) -> None:
    # multiprocessing hands its processes' settings down to their children, the main process's
    # own temporary folder (_name_server_folder) among them: a child makes its own instead, in
    # the run's folder with its other temporary files, which stop() removes.
    getattr(mp.current_process(), "_config", {}).pop("tempdir", None)
    target(*args)


class LocalLauncher(Launcher):
    name = "local"

    def __init__(self):
        self.mp = process_context()
        self.procs: dict[str, mp.Process] = {}
        self.roles: dict[str, str] = {}
        self._shared: list[SharedFloats] = []
        self.temp_dir: str | None = None  # the children's temporary files; made at the first start

    def queue(self, maxsize: int = 0):
        return self.mp.Queue(maxsize=maxsize)

    def event(self) -> "Flag":
        return Flag(self.mp)

    def shared_floats(self, n: int) -> SharedFloats:
        # Zeroed; an aligned 8-byte store is atomic on the CPUs this runs on, so no lock.
        floats = SharedFloats(n)
        self._shared.append(floats)
        return floats

    def start(self, name: str, role: str, target, *args, where=None) -> None:
        """`role` says what the process is for error messages, e.g. "step 'encoder' on GPU 0".
        `where` needs nothing here: this machine, and the GPU id the child's context carries."""
        # Not daemonic: a step may start helpers of its own (compile workers, decoder threads);
        # the orchestrator always calls stop(), which ends every process it started.
        if self.temp_dir is None:
            remove_stale_temp_dirs()
            self.temp_dir = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-")
            if self.mp.get_start_method() == "forkserver":
                _name_server_folder()  # before this start may launch the server
        setup = _ChildSetup(os.getpid(), self.temp_dir)
        proc = self.mp.Process(target=_child_main, args=(setup, target, *args), name=name,
                               daemon=False)
        # Ctrl-C reaches the whole process group, and a child takes seconds (imports) before it
        # can ignore SIGINT itself: start it with SIGINT blocked (the mask survives fork and
        # exec, into a spawned child or the server this start may launch; prepare_child blocks
        # it in any child), so an early Ctrl-C stops the run through the main process alone,
        # without a KeyboardInterrupt traceback from every child. enter_child unblocks it.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        self.procs[name] = proc
        self.roles[name] = role

    def dead(self) -> list[tuple[str, str, int]]:
        """(name, role, exit code) of every process that has exited."""
        return [(n, self.roles[n], p.exitcode) for n, p in self.procs.items()
                if p.exitcode is not None]

    def pid(self, name: str) -> int | None:
        return self.procs[name].pid

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        if proc.is_alive():
            proc.kill()  # SIGKILL: also ends a stopped (SIGSTOP) process
            proc.join(2.0)

    def stop(self, grace_s: float = 3.0, pump=None) -> list[str]:
        """Wait up to `grace_s` for every process to leave on its own, then terminate, then kill.
        `pump()` runs while waiting: a child cannot exit while data it queued sits unread in a
        full pipe, so the caller keeps reading. Returns the names that had to be forced."""
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(p.is_alive() for p in self.procs.values()):
            if pump is not None:
                pump()
            time.sleep(0.02)
        forced = []
        for name, proc in self.procs.items():
            if proc.is_alive():
                forced.append(name)
                proc.terminate()
        for proc in self.procs.values():
            proc.join(1.0)
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        for floats in self._shared:
            floats.close()
        remove_ipc_leftovers(p.pid for p in self.procs.values() if p.pid and not p.is_alive())
        if self.temp_dir is not None and not any(p.is_alive() for p in self.procs.values()):
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        return forced
