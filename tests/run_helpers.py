"""Running the pipeline in tests and watching it from outside: building small CPU runs, a run in
a background thread, the benchmark command as a subprocess, and what a run leaves behind
(processes, /dev/shm entries, file descriptors)."""
from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.analysis.requests_csv import read_csv
from pipeline.config import config_from_dict
from pipeline.serving.orchestrator import RunOptions, run

REPO = Path(__file__).resolve().parents[1]
SIZE = 16  # 16x16 frames: decode and hand-off cost next to nothing
# A run that stops gives its children the launcher's grace to leave (3 s), then terminates them
# (1 s more); on a loaded 2-core machine a child's interpreter exit alone takes seconds. Bounds
# on how long stopping takes are this, never less.
RUN_END_S = 3.0 + 1.0 + 6.0
FRAMES = 4  # frames_per_request


# -- building runs ------------------------------------------------------------------------------

def sleep_steps(sleep_ms: float = 20, pool_slots: int = 4, decode_slots: int = 4) -> list[dict]:
    return [{"name": "decode", "kind": "decode", "gpus": [0], "pool_slots": decode_slots},
            {"name": "sleep", "kind": "sleep", "sleep_ms": sleep_ms, "gpus": [0],
             "pool_slots": pool_slots}]


def make_config(videos: dict, steps: list[dict], name: str = "faults"):
    return config_from_dict({
        "name": name, "device": "cpu", "videos": videos, "frames_per_request": FRAMES,
        "model": {"factor": 2, "precision": "fp32", "resolution": [SIZE, SIZE]},
        "pipeline": steps})


def synthetic(count: int = 2) -> dict:
    return {"synthetic": {"count": count, "width": SIZE, "height": SIZE, "frames": 6, "fps": 24,
                          "codec": "vp9", "seed": 3}}


def options(tmp_path: Path, **over) -> RunOptions:
    base = dict(mean_interval_ms=20, videos=8, warmup=1, queue_size=16,
                logs_root=str(tmp_path / "logs"), progress=False, cpu_threads=1,
                start_timeout_s=120, stall_timeout_s=60, video_cache=str(tmp_path / "videos"))
    base.update(over)
    return RunOptions(**base)


def clip(path: Path, frames: int = 6, seed: int = 0, codec: str = "vp9") -> Path:
    from pipeline.media.synthetic import write_clip

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_clip(path, width=SIZE, height=SIZE, frames=frames, fps=24, codec=codec, seed=seed)


class Background:
    """run(cfg, opts) in a thread of this process, so a test can act while it runs."""

    def __init__(self, cfg, opts: RunOptions):
        self.result = None
        self.exc = None
        self.thread = threading.Thread(target=self._main, args=(cfg, opts), daemon=True)
        self.thread.start()

    def _main(self, cfg, opts):
        try:
            self.result = run(cfg, opts)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            self.exc = exc

    def join(self, timeout: float):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the run did not end within {timeout} s"
        if self.exc is not None:
            raise self.exc
        return self.result


# -- observing a run from outside ---------------------------------------------------------------

def wait_for(predicate, timeout: float, what: str, poll_s: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def run_dir_of(logs_root: Path) -> Path | None:
    found = sorted(Path(logs_root).glob("*/processes.json"))
    return found[-1].parent if found else None


def process_table(run_dir: Path) -> dict:
    return json.loads((run_dir / "processes.json").read_text())


def outputs_written(run_dir: Path) -> int:
    """Requests the sink has finished (it saves each one as it completes, with save_outputs)."""
    return len(list((run_dir / "outputs").glob("request*")))


def saved_outputs(result) -> dict:
    """The tensors a run saved (save_outputs with save_tensors), by file name."""
    import torch

    return {p.name: torch.load(p) for p in sorted((result.run_dir / "outputs").glob("*.pt"))}


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child its parent has not reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def children_alive(table: dict) -> list[str]:
    return [name for name, p in table.items() if name != "main" and alive(p["pid"])]


def shm_entries() -> set[str]:
    """What a run puts in /dev/shm: multiprocessing's named semaphores (sem.mp-*, one per lock,
    semaphore and event of the queues), unlinked when the main process frees them. CPU slot
    pools are memory files without a name (transport/slots.py) and never appear here."""
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def _shm_mapped_inodes(maps_files) -> set[int]:
    inodes = set()
    for maps in maps_files:
        try:
            lines = Path(maps).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) >= 6 and fields[5].startswith("/dev/shm/"):
                inodes.add(int(fields[4]))
    return inodes


def shm_left_over(before: set[str], wait_s: float = 15.0) -> set[str]:
    """Entries left behind by the run: what `_unmapped_new` finds on every look over `wait_s`
    (after collecting this process's garbage each time). A run's queues free their semaphores
    when collected, and each queue's feeder thread, which holds two of them, must first wake up
    and leave: on a loaded machine that takes a while. Entries that come and go (another
    program's semaphore caught between its creation and its first mapping) do not count."""
    end = time.monotonic() + wait_s
    left = None
    while True:
        gc.collect()
        now_left = _unmapped_new(before)
        left = now_left if left is None else left & now_left
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.5)


def _unmapped_new(before: set[str]) -> set[str]:
    """Entries that appeared since `before` and that no live process but this one maps.

    Other programs on the machine may use /dev/shm meanwhile: a live named semaphore or segment
    is mapped by its owner (glibc maps a semaphore under a temporary name, so match by inode).
    What nobody maps was never unlinked; what this process still maps after a run is the run's
    own objects, kept alive."""
    inodes = {}
    for name in shm_entries() - before:
        try:
            inodes[os.stat(Path("/dev/shm") / name).st_ino] = name
        except FileNotFoundError:
            pass
    if not inodes:
        return set()
    me = str(os.getpid())
    others = _shm_mapped_inodes(p for p in Path("/proc").glob("[0-9]*/maps")
                                if p.parent.name != me)
    return {name for ino, name in inodes.items()
            if ino not in others and (Path("/dev/shm") / name).exists()}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def warm_process_state() -> None:
    """Start what a first run starts once per process (multiprocessing's resource tracker), so
    fd and /dev/shm counts taken before a run compare like with like."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


def by_status(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["status"], []).append(r)
    return out


def assert_logs_account_for_everything(run_dir: Path, n_requests: int, allowed=("ok", "error",
                                       "dropped", "unfinished")) -> list[dict]:
    for name in ("requests.csv", "report.json", "report.txt", "run.json"):
        assert (run_dir / name).exists(), name
    rows = read_csv(run_dir / "requests.csv")
    assert [r["request_id"] for r in rows] == list(range(n_requests))
    for r in rows:
        assert r["status"] in allowed, r
        if r["status"] != "ok":
            assert r["error"], f"request {r['request_id']} is {r['status']} without a reason"
        else:
            assert r["done_s"] is not None and not r["error"]
    counts = json.loads((run_dir / "report.json").read_text())["counts"]
    assert counts["total"] == n_requests
    measured = [r for r in rows if not r["warmup"]]
    for status in ("ok", "error", "dropped", "unfinished"):
        assert counts[status] == sum(r["status"] == status for r in measured), status
    return rows


# -- a run of the pipeline: decode and a real FLAVR runner on 16x16 frames ------------------------

WHOLE = [{"name": "decode", "kind": "decode", "gpus": [0]},
         {"name": "flavr", "kind": "model", "stages": ["stem", "head"], "gpus": [0]}]


# -- the benchmark command ------------------------------------------------------------------------

def write_yaml_config(tmp_path: Path, steps: list[dict], clips: list[Path]) -> Path:
    import yaml

    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump({
        "name": "faults", "device": "cpu", "videos": {"paths": [str(c) for c in clips]},
        "frames_per_request": FRAMES,
        "model": {"factor": 2, "precision": "fp32", "resolution": [SIZE, SIZE]},
        "pipeline": steps}))
    return path


class Benchmark:
    """`python benchmark.py` in a session (process group) of its own, as a terminal starts it.
    Its output goes to files: children inherit them, and a pipe nobody reads could block them."""

    def __init__(self, tmp_path: Path, config: Path, *flags: str):
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.temp_root = env.get("TMPDIR") or tempfile.gettempdir()  # where its run folder goes
        cmd = [sys.executable, str(REPO / "benchmark.py"), "-c", str(config), "--logs",
               str(tmp_path / "logs"), "--no-progress", *flags]
        self.out_path, self.err_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err,
                                         start_new_session=True)
        self.pid = self.proc.pid

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    @property
    def out(self) -> str:
        return self.out_path.read_text()

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def kill_group(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def long_benchmark(tmp_path: Path, serving: bool = True) -> tuple[Benchmark, Path, dict]:
    """A benchmark that would run for minutes, caught once requests are flowing (or, with
    serving=False, as soon as its processes exist: they are still starting up)."""
    clips = [clip(tmp_path / "clips" / f"c{i}.webm", seed=i) for i in range(2)]
    config = write_yaml_config(tmp_path, WHOLE, clips)
    bench = Benchmark(tmp_path, config, "-mi", "200", "-v", "400", "--warmup", "1",
                      "--save-outputs")
    try:
        run_dir = wait_for(lambda: run_dir_of(tmp_path / "logs"), 90, "processes.json")
        if serving:
            wait_for(lambda: outputs_written(run_dir) >= 2, 90, "the first requests to complete")
    except AssertionError:
        bench.kill_group()
        raise AssertionError(f"the benchmark did not get going:\n{bench.out}\n{bench.err}")
    return bench, run_dir, process_table(run_dir)


def csv_rows(path: Path) -> int:
    """Data rows in requests.csv as it is now (0 when missing or not a file)."""
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except OSError:
        return 0


@dataclass
class KilledMain:
    """A benchmark whose main process was killed with -9 while serving, and what followed."""
    bench: Benchmark
    run_dir: Path
    table: dict  # its process table
    exit_code: int | None  # the main process's, once killed
    children_gone_s: float | None  # how long after the kill its children were all gone (None:
    # still there 10 s later; they were then killed)
    stale: list  # what the next launcher's clean-up of temporary folders removed


_killed_main: list = []


def killed_main(tmp_path_factory) -> KilledMain:
    """One benchmark killed with -9 once requests.csv holds three rows, made once per session:
    a test of the children's exit (test_faults) and one of the logs (test_logs) look at the same
    kill, which costs a whole benchmark start-up."""
    from pipeline.serving.launch.local import remove_stale_temp_dirs

    if not _killed_main:
        tmp = tmp_path_factory.mktemp("killed-main")
        bench, run_dir, table = long_benchmark(tmp)
        try:
            wait_for(lambda: csv_rows(run_dir / "requests.csv") >= 3, 90,
                     "three rows in requests.csv")
        except AssertionError:
            bench.kill_group()
            raise
        t_kill = time.monotonic()
        os.kill(bench.pid, signal.SIGKILL)
        gone = None
        try:
            wait_for(lambda: not children_alive(table), 10, "the children to notice and exit",
                     poll_s=0.01)
            gone = time.monotonic() - t_kill
        except AssertionError:
            pass
        finally:
            for name in children_alive(table):  # nothing stays behind, whatever the tests find
                os.kill(table[name]["pid"], signal.SIGKILL)
        code = bench.wait(timeout=10)
        # The children's temporary folder outlives a main process killed -9; the next run's
        # launcher removes it.
        stale = remove_stale_temp_dirs(bench.temp_root)
        _killed_main.append(KilledMain(bench, run_dir, table, code, gone, stale))
    return _killed_main[0]
