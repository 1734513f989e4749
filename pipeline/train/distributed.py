"""One process per GPU under torchrun (or one plain process): rank, device, process group, CPU
affinity, and the few collectives the loop needs.

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE and LOCAL_WORLD_SIZE; without them this is a single
process of world size 1 and no process group is made. GPUs use NCCL, CPUs gloo.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pipeline.errors import ConfigError
from pipeline.serving.gpu_monitor import cpu_affinity_for_gpu


@dataclass
class Dist:
    rank: int
    local_rank: int
    world: int
    local_world: int
    device: torch.device
    cores: list[int] | None = None  # the CPU cores this process was pinned to, if any

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device_pref: str) -> Dist:
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    cuda = torch.cuda.is_available()
    if device_pref == "cuda" and not cuda:
        raise ConfigError("train.device", "cuda was asked for, but torch sees no CUDA GPU")
    use_cuda = cuda and device_pref != "cpu"
    cores = None
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        # The cores next to this GPU (NVML's ideal affinity): host work and the launch thread
        # stay on the GPU's own socket.
        cores = cpu_affinity_for_gpu(local_rank)
        if cores and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cores)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank, local_rank, world, local_world, device, cores)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce(values: list[float], d: Dist, op: str = "sum") -> list[float]:
    """Reduce a few numbers over all ranks (a host sync: call it at log points only)."""
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    if d.world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.tolist()


def gather_objects(obj, d: Dist) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if d.world == 1:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()
