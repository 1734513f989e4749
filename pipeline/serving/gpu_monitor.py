"""GPU utilisation and memory through NVML, sampled by a thread of the main process.

NVML reads driver counters and creates no CUDA context, so the main process can sample before and
while its children own the GPUs. Where NVML or GPUs are absent (a CPU machine) every entry point
degrades to "not available" with a reason; nothing here raises for lack of a GPU.

GPU ids are CUDA ordinals as the workers see them. CUDA_VISIBLE_DEVICES (indices or UUIDs) is
honoured; NVML numbers GPUs in PCI bus order, so on machines whose CUDA order differs set
CUDA_DEVICE_ORDER=PCI_BUS_ID for the two to agree.
"""
from __future__ import annotations

import os
import threading

from pipeline.clock import now

MIB = 1024 * 1024


def _nvml():
    """The initialised pynvml module; raises with a readable reason when unavailable."""
    try:
        import pynvml
    except ImportError as e:
        raise RuntimeError(f"nvidia-ml-py is not installed ({e})") from None
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        raise RuntimeError(f"NVML is not available: {e}") from None
    return pynvml


def _visible_entries(nv) -> list[str]:
    """NVML selectors of the GPUs CUDA numbers 0, 1, ...: indices or UUIDs."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return [str(i) for i in range(nv.nvmlDeviceGetCount())]
    entries = []
    for item in env.split(","):
        item = item.strip()
        if not item:
            break  # CUDA stops at the first empty or invalid entry
        entries.append(item)
    return entries


def _handle(nv, cuda_id: int):
    entries = _visible_entries(nv)
    if not 0 <= cuda_id < len(entries):
        raise RuntimeError(f"GPU {cuda_id} is not visible ({len(entries)} visible)")
    entry = entries[cuda_id]
    if entry.isdigit():
        return nv.nvmlDeviceGetHandleByIndex(int(entry))
    if entry.startswith("GPU-"):
        return nv.nvmlDeviceGetHandleByUUID(entry)
    raise RuntimeError(f"cannot map CUDA_VISIBLE_DEVICES entry {entry!r} to an NVML device")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def gpu_count_nvml() -> int | None:
    """GPUs CUDA will see (after CUDA_VISIBLE_DEVICES), or None where NVML is unavailable."""
    try:
        nv = _nvml()
    except RuntimeError:
        return None
    try:
        count = 0
        for i in range(len(_visible_entries(nv))):
            try:
                _handle(nv, i)
            except Exception:
                break
            count += 1
        return count
    except Exception:
        return None
    finally:
        _shutdown(nv)


def cpu_affinity_for_gpu(gpu_id: int) -> list[int] | None:
    """CPU cores close to the GPU (NVML's ideal affinity) that this process may use, or None."""
    try:
        nv = _nvml()
    except RuntimeError:
        return None
    try:
        ncpu = os.cpu_count() or 1
        words = nv.nvmlDeviceGetCpuAffinity(_handle(nv, gpu_id), (ncpu + 63) // 64)
        cores = [w * 64 + bit for w, mask in enumerate(words) for bit in range(64) if (int(mask) >> bit) & 1]
        allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(ncpu))
        cores = [c for c in cores if c in allowed]
        return cores or None
    except Exception:
        return None
    finally:
        _shutdown(nv)


def nvml_info() -> dict:
    """Driver and GPU inventory for the run's environment record."""
    try:
        nv = _nvml()
    except RuntimeError as e:
        return {"available": False, "reason": str(e)}
    try:
        info: dict = {"available": True}
        for key, probe in (("driver", nv.nvmlSystemGetDriverVersion),
                           ("nvml", nv.nvmlSystemGetNVMLVersion),
                           ("cuda_driver", nv.nvmlSystemGetCudaDriverVersion)):
            try:
                value = probe()
                if key == "cuda_driver":
                    value = f"{value // 1000}.{value % 1000 // 10}"
                info[key] = _text(value)
            except Exception as e:
                info[key] = None
                info[f"{key}_error"] = str(e)
        gpus = []
        for i in range(len(_visible_entries(nv))):
            try:
                h = _handle(nv, i)
                gpus.append({"gpu": i, "name": _text(nv.nvmlDeviceGetName(h)),
                             "uuid": _text(nv.nvmlDeviceGetUUID(h)),
                             "mem_total_mib": nv.nvmlDeviceGetMemoryInfo(h).total / MIB})
            except Exception as e:
                gpus.append({"gpu": i, "error": str(e)})
        info["gpus"] = gpus
        return info
    except Exception as e:
        return {"available": False, "reason": f"NVML query failed: {e}"}
    finally:
        _shutdown(nv)


def _shutdown(nv) -> None:
    try:
        nv.nvmlShutdown()
    except Exception:
        pass


class GpuMonitor:
    """Samples util % and memory of the given GPUs every interval_s on a background thread.

        monitor = GpuMonitor([0, 1])
        baseline = monitor.baseline()   # before starting workers: is anything already there?
        monitor.start(); ...; monitor.stop()
        monitor.samples                 # [{t, gpu, util_pct, mem_used_mib, mem_total_mib}, ...]

    Without NVML or GPUs, `available` is False, `reason` says why, and start/stop do nothing.
    """

    def __init__(self, gpu_ids, interval_s: float = 0.1):
        self.gpu_ids = sorted(set(int(g) for g in gpu_ids))
        self.interval_s = float(interval_s)
        self.samples: list[dict] = []
        self.errors: list[str] = []  # sampling failures during the run (first few kept)
        self.available = False
        self.reason: str | None = None
        self._nv = None
        self._handles: dict[int, object] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            nv = _nvml()
        except RuntimeError as e:
            self.reason = str(e)
            return
        try:
            self._handles = {g: _handle(nv, g) for g in self.gpu_ids}
        except Exception as e:
            self.reason = f"cannot open GPU through NVML: {e}"
            _shutdown(nv)
            return
        if not self._handles:
            self.reason = "no GPUs to watch"
            _shutdown(nv)
            return
        self._nv = nv
        self.available = True

    def _read(self, gpu: int) -> dict:
        h = self._handles[gpu]
        util = self._nv.nvmlDeviceGetUtilizationRates(h)
        mem = self._nv.nvmlDeviceGetMemoryInfo(h)
        return {"t": now(), "gpu": gpu, "util_pct": int(util.gpu),
                "mem_used_mib": mem.used / MIB, "mem_total_mib": mem.total / MIB}

    def sample_once(self) -> list[dict]:
        """One reading per GPU (not added to `samples`); [] when unavailable or stopped."""
        if self._nv is None:
            return []
        out = []
        for gpu in self.gpu_ids:
            try:
                out.append(self._read(gpu))
            except Exception as e:
                if len(self.errors) < 10:
                    self.errors.append(f"GPU {gpu}: {e}")
        return out

    def baseline(self) -> dict:
        """One reading per GPU plus the compute processes already on it (JSON-able)."""
        if self._nv is None:
            return {"available": False, "reason": self.reason or "stopped", "gpus": []}
        gpus = []
        for reading in self.sample_once():
            h = self._handles[reading["gpu"]]
            processes = []
            try:
                for p in self._nv.nvmlDeviceGetComputeRunningProcesses(h):
                    used = getattr(p, "usedGpuMemory", None)
                    entry = {"pid": int(p.pid), "used_mib": None if used is None else used / MIB}
                    try:
                        entry["name"] = _text(self._nv.nvmlSystemGetProcessName(p.pid))
                    except Exception:
                        pass
                    processes.append(entry)
            except Exception as e:
                reading["processes_error"] = str(e)
            reading["processes"] = processes
            gpus.append(reading)
        return {"available": True, "reason": None, "gpus": gpus}

    def _loop(self) -> None:
        next_t = now()
        while not self._stop.is_set():
            self.samples.extend(self.sample_once())
            next_t += self.interval_s
            delay = next_t - now()
            if delay < 0:  # fell behind (a slow NVML call): keep the interval, skip the backlog
                next_t, delay = now(), 0.0
            self._stop.wait(delay)

    def start(self) -> None:
        if self._nv is None or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="gpu-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling and release NVML (idempotent; a monitor is used once). Samples stay."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._nv is not None:
            _shutdown(self._nv)
            self._nv = None

    def __enter__(self) -> "GpuMonitor":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ----------------------------------------------------------------------------------------------
# nvml.csv: samples with times relative to the run's t0, like requests.csv
# ----------------------------------------------------------------------------------------------

SAMPLE_COLUMNS = ("t_s", "gpu", "util_pct", "mem_used_mib", "mem_total_mib")


def relative_time(t: float, t0: float) -> float:
    """A clock time as stored in the run logs: seconds after t0, to the microsecond."""
    return round(float(t) - float(t0), 6)


def write_samples_csv(path, samples, t0: float) -> None:
    """Write samples (absolute `t`, or already relative `t_s`); floats are written exactly."""
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SAMPLE_COLUMNS)
        for s in samples or ():
            t_s = s["t_s"] if "t_s" in s else relative_time(s["t"], t0)
            writer.writerow([repr(float(t_s)), int(s["gpu"]), repr(s["util_pct"]),
                             repr(float(s["mem_used_mib"])), repr(float(s["mem_total_mib"]))])


def read_samples_csv(path) -> list[dict]:
    """Samples back from nvml.csv, with `t_s` (relative) instead of `t`."""
    import csv

    out = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            util = raw["util_pct"]
            out.append({"t_s": float(raw["t_s"]), "gpu": int(raw["gpu"]),
                        "util_pct": int(util) if util.isdigit() else float(util),
                        "mem_used_mib": float(raw["mem_used_mib"]),
                        "mem_total_mib": float(raw["mem_total_mib"])})
    return out
