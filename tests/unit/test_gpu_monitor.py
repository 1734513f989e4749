"""NVML sampling: real readings on a GPU machine, a quiet no-op everywhere else."""
import time

import pytest

from pipeline.serving.gpu_monitor import (
    GpuMonitor,
    cpu_affinity_for_gpu,
    gpu_count_nvml,
    nvml_info,
)

HAVE_NVML_GPU = bool(gpu_count_nvml())


@pytest.mark.skipif(HAVE_NVML_GPU, reason="this machine has NVML GPUs")
def test_without_nvml_everything_is_a_no_op_with_a_reason():
    monitor = GpuMonitor([0, 1], interval_s=0.01)
    assert monitor.available is False and monitor.reason
    monitor.start()
    time.sleep(0.05)
    monitor.stop()
    assert monitor.samples == []
    assert monitor.baseline() == {"available": False, "reason": monitor.reason, "gpus": []}
    assert gpu_count_nvml() is None and cpu_affinity_for_gpu(0) is None
    assert nvml_info()["available"] is False


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_NVML_GPU, reason="needs a GPU visible through NVML")
def test_samples_a_busy_gpu():
    import torch

    monitor = GpuMonitor([0], interval_s=0.05)
    assert monitor.available, monitor.reason
    base = monitor.baseline()
    assert base["available"] and base["gpus"][0]["gpu"] == 0 and "processes" in base["gpus"][0]
    with monitor:
        x = torch.randn(4096, 4096, device="cuda:0")
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            x = (x @ x).clamp_(-1, 1)
        torch.cuda.synchronize()
    n = len(monitor.samples)
    assert n >= 10
    time.sleep(0.2)
    assert len(monitor.samples) == n  # stopped means stopped
    s = monitor.samples[-1]
    assert set(s) == {"t", "gpu", "util_pct", "mem_used_mib", "mem_total_mib"}
    assert max(x["util_pct"] for x in monitor.samples) > 0
    assert 0 < s["mem_used_mib"] <= s["mem_total_mib"]
    ts = [x["t"] for x in monitor.samples]
    assert ts == sorted(ts)


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_NVML_GPU, reason="needs a GPU visible through NVML")
def test_inventory_and_affinity():
    info = nvml_info()
    assert info["available"] and info["driver"] and len(info["gpus"]) == gpu_count_nvml()
    cores = cpu_affinity_for_gpu(0)
    assert cores is None or (cores and all(isinstance(c, int) and c >= 0 for c in cores))
