"""The per-run logs folder: everything needed to read, re-render or compare a run later.

    logs/<yymmdd_HHMMSS>-<config>-mi<mi>-b<b>-v<v>-qs<qs>-p<0|1>/
        config.yaml    the resolved config (every setting explicit)
        args.json      the command-line arguments
        env.json       software and hardware the run used (environment_info)
        run.json       run_info: t0, step names, ... (what report.summary_from_run_dir needs)
        requests.csv   one row per request (pipeline/analysis/records.py); while the run goes,
                       each request's row is appended as it ends, so a crash keeps them
        nvml.csv       GPU samples, times relative to t0
        report.json    the summary (pipeline/report.py)
        report.txt     the printed report
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import yaml

from pipeline.analysis.records import SINK, RequestRow, columns
from pipeline.analysis.requests_csv import csv_cells, write_csv
from pipeline.errors import LogsError
from pipeline.folders import missing_folders, remove_empty

_REPO_ROOT = Path(__file__).resolve().parents[2]
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _num(value) -> str:
    """50 -> '50', 50.0 -> '50', 12.5 -> '12.5', True -> '1'."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def run_dir_name(config_name: str, mi, b, v, qs, p, when: _dt.datetime | None = None) -> str:
    """`<yymmdd_HHMMSS>-<config>-mi<mi>-b<b>-v<v>-qs<qs>-p<0|1>` (local time)."""
    when = when or _dt.datetime.now()
    name = _UNSAFE.sub("_", config_name).strip("_") or "config"
    return (f"{when:%y%m%d_%H%M%S}-{name}-mi{_num(mi)}-b{_num(b)}-v{_num(v)}-qs{_num(qs)}"
            f"-p{1 if p else 0}")


LOW_DISK_BYTES = 100 * 2**20


def check_writable(root) -> list[str]:
    """Raise LogsError naming `root` when a run could not write its logs there (it cannot be
    made, is not a folder, or a file in it cannot be written), before anything starts. Returns
    notices (little free space)."""
    root = Path(root)
    # The folders made for the check are removed after it: a run refused later (a config
    # the cluster cannot place) leaves nothing; the run folder is made with its parents.
    made = missing_folders(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-check-") as f:
            f.write(b"x")
            f.flush()
        free = shutil.disk_usage(root).free
    except OSError as exc:
        raise LogsError(f"logs folder '{root}' is not writable: "
                        f"{exc.strerror or type(exc).__name__}") from None
    finally:
        remove_empty(made)
    if free < LOW_DISK_BYTES:
        return [f"only {free / 2**20:.0f} MiB free for the logs in '{root}'"]
    return []


def create_run_dir(root, name: str) -> Path:
    """Make root/name; when it exists (two runs in one second) make root/name_2, _3, ..."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    candidate, n = root / name, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
            candidate = root / f"{name}_{n}"


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------

def _probe(fn):
    """Run one probe; a failure becomes {'error': ...} in the record instead of a crash."""
    try:
        return fn()
    except Exception as e:  # a probe must never stop a run
        return {"error": f"{type(e).__name__}: {e}"}


def package_version(*names: str) -> str | None:
    """Installed version of the first distribution found among names; None when absent."""
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _dali_version() -> str | None:
    found = package_version("nvidia-dali-cuda130", "nvidia-dali-cuda120", "nvidia-dali-cuda110",
                            "nvidia-dali")
    if found is not None:
        return found
    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower()
        if name.startswith("nvidia-dali"):
            return dist.version
    return None


def _torch_info() -> dict:
    # Versions only: nothing here may initialise CUDA in the main process.
    import torch

    return {"version": torch.__version__, "cuda": torch.version.cuda,
            "debug": bool(getattr(torch.version, "debug", False))}


def _git_info() -> dict:
    def git(*args) -> str:
        return subprocess.run(["git", *args], cwd=_REPO_ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"commit": commit, "dirty": dirty}


def _cpu_info() -> dict:
    info = {"count": os.cpu_count()}
    if hasattr(os, "sched_getaffinity"):
        info["usable"] = len(os.sched_getaffinity(0))
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def environment_info() -> dict:
    """Software and hardware of this run; every probe is independent and none can raise."""
    from pipeline.serving.gpu_monitor import nvml_info

    packages = {
        "torch": _probe(_torch_info) if package_version("torch") else None,
        "nvidia-dali": _probe(_dali_version),
        "av": _probe(lambda: package_version("av")),
        "numpy": _probe(lambda: package_version("numpy")),
        "pyyaml": _probe(lambda: package_version("pyyaml", "PyYAML")),
        "nvidia-ml-py": _probe(lambda: package_version("nvidia-ml-py")),
        "scipy": _probe(lambda: package_version("scipy")),
    }
    return {
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "platform": _probe(lambda: {"system": platform.platform(), "machine": platform.machine()}),
        "hostname": _probe(socket.gethostname),
        "cpu": _probe(_cpu_info),
        "packages": packages,  # None: not installed
        "nvml": _probe(nvml_info),
        "git": _probe(_git_info),
        "env": {k: os.environ[k] for k in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "OMP_NUM_THREADS",
                                           "PYTORCH_CUDA_ALLOC_CONF") if k in os.environ},
    }


# --------------------------------------------------------------------------------------------
# Writing a run
# --------------------------------------------------------------------------------------------

def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def write_process_table(run_dir: Path, children: dict) -> None:
    """processes.json: which pid is which replica (for operators and fault-injection tests).
    children: name -> (pid, role, gpu); the main process is added."""
    table = {name: {"pid": pid, "role": role, "gpu": gpu}
             for name, (pid, role, gpu) in children.items()}
    table["main"] = {"pid": os.getpid(), "role": "the main process", "gpu": None}
    # Written whole and renamed into place: tools poll for this file and must never read it
    # half-written.
    tmp = Path(run_dir) / "processes.json.tmp"
    tmp.write_text(json.dumps(table, indent=2))
    tmp.replace(Path(run_dir) / "processes.json")


class RequestsCsv:
    """requests.csv while a run goes: each request's row is appended, and flushed to the
    operating system, as the request ends, so a crash or a kill -9 of the main process leaves
    every completed row on disk (no fsync: a power cut may still lose the last ones). Fields a
    request gets after it ended (a step's timings that come late) are only in the final file,
    which `write_run` puts in its place, sorted and whole. A write error stops the streaming, is
    kept in `error`, and never stops the run."""

    def __init__(self, path: Path, step_names: list[str]):
        self.path = Path(path)
        self.columns = columns(step_names)
        self.error: str | None = None
        self._file = None
        try:
            self._file = open(self.path, "w", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=self.columns,
                                          extrasaction="ignore")
            self._writer.writeheader()
            self._file.flush()
        except OSError as exc:
            self._failed(exc)

    def append(self, row: RequestRow) -> None:
        """One finished request's row (times relative to the run's t0)."""
        if self._file is None:
            return
        try:
            self._writer.writerow(csv_cells(row, self.columns))
            self._file.flush()
        except OSError as exc:
            self._failed(exc)

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                self._failed(exc)
            self._file = None

    def _failed(self, exc: OSError) -> None:
        self.error = self.error or f"{self.path}: {exc.strerror or exc}"
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
        self._file = None


def _write_csv_whole(path: Path, rows: list[dict], columns: list[str]) -> None:
    """Written aside and renamed over the streamed file: it is replaced whole or not at all."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write_csv(tmp, rows, columns)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_run(run_dir, *, config_dict: dict, args_dict: dict, env: dict, rows: list[dict],
              columns: list[str], nvml_samples, summary: dict, report_text: str,
              run_info: dict | None = None) -> Path:
    """Write every log file of a run into run_dir; returns run_dir.

    rows/columns: records.RecordTable.finish(t0) and .columns(). nvml_samples: GpuMonitor.samples
    (absolute times; stored relative to t0). run_info defaults to summary['run'], which
    report.summarize fills with everything summary_from_run_dir needs (t0, step_names, ...).
    Each file is written on its own: one that fails (a full disk) does not stop the others, and
    LogsError then names every file that could not be written, and why.
    """
    from pipeline.serving.gpu_monitor import write_samples_csv

    run_dir = Path(run_dir)
    info = run_info if run_info is not None else summary["run"]
    if "step_names" not in info:
        info = {**info, "step_names": [s for s in summary["steps"] if s != SINK]}
    text = report_text if report_text.endswith("\n") else report_text + "\n"
    writers = {
        "config.yaml": lambda p: p.write_text(yaml.safe_dump(config_dict, sort_keys=False)),
        "args.json": lambda p: _write_json(p, args_dict),
        "env.json": lambda p: _write_json(p, env),
        "run.json": lambda p: _write_json(p, info),
        "requests.csv": lambda p: _write_csv_whole(p, rows, columns),
        "nvml.csv": lambda p: write_samples_csv(p, nvml_samples, info.get("t0", 0.0)),
        "report.json": lambda p: _write_json(p, summary),
        "report.txt": lambda p: p.write_text(text),
    }
    failed = []
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LogsError(f"could not write the logs: {run_dir}: {exc.strerror or exc}") from None
    for name, write in writers.items():
        try:
            write(run_dir / name)
        except OSError as exc:
            failed.append(f"{name} ({exc.strerror or type(exc).__name__})")
    if failed:
        raise LogsError(f"could not write {', '.join(failed)} in {run_dir}")
    return run_dir
