"""What a run of a config would be on this machine, decided before anything starts: the run's
options, the device, the validated placement, MPS, and the frame sizes the pools are sized for.
Shared by a run, a sweep's check of its configs and benchmark.py --dry-run, so all three judge a
config alike."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

from pipeline.config import validate
from pipeline.errors import ConfigError, VideoError
from pipeline.media.probe import probe
from pipeline.serving import mps
from pipeline.serving.gpu_monitor import gpu_count_nvml
from pipeline.serving.topology import Topology


@dataclass
class RunOptions:
    mean_interval_ms: float = 50.0
    batch: int = 1
    videos: int = 20  # measured requests
    warmup: int = 2  # extra requests issued first, excluded from statistics
    queue_size: int = 64
    per_gpu: bool = False
    seed: int = 0
    on_full: str = "stop"  # RnB: stop admitting when a queue overflows; or "block"
    device: str | None = None  # overrides the config's device
    logs_root: str = "logs"
    save_outputs: bool = False
    save_tensors: bool = False  # with save_outputs: raw output tensors instead of videos
    video_cache: str | None = None  # where synthetic clips are generated (default <repo>/videos)
    cpu_threads: int | None = None  # torch threads per CPU model process (default: cores / replicas)
    check_outputs: bool = False
    # "auto" picks by device and codec; or force one of pipeline.media.decode.BACKENDS (e.g. pyav)
    decode_backend: str = field(default_factory=lambda: os.environ.get("FLAVR_DECODE_BACKEND", "auto"))
    start_timeout_s: float = 600.0  # model build + warm-up of every replica
    stall_timeout_s: float = 300.0  # no request finished for this long: stop
    # a child that has reported ready and then stays silent this long is frozen: the run stops
    heartbeat_timeout_s: float = 30.0
    progress: bool = True
    # MPS control daemon (pipeline/mps.py): "auto" where processes share a GPU, or "on" / "off"
    mps: str = "auto"


def resolve_device(cfg, override: str | None) -> tuple[str, int | None, list[str]]:
    """('cuda', gpu_count) or ('cpu', None), with notices for the user."""
    want = override or cfg.device
    if want == "cpu":
        return "cpu", None, []
    count = gpu_count_nvml() or 0
    if want == "cuda":
        if count == 0:
            raise ConfigError("device", "cuda was asked for but this machine has no GPU "
                                        "(use --device cpu to run this placement on the CPU)")
        return "cuda", count, []
    if count == 0:
        return "cpu", None, ["no GPU found: running on the CPU, GPU ids are logical devices"]
    return "cuda", count, []


@dataclass
class Plan:
    """What a run of a config would be on this machine, before anything starts."""
    device_kind: str  # cuda | cpu
    gpu_count: int | None
    notices: list[str]
    topo: Topology
    use_mps: bool
    mps_reason: str


def plan_run(cfg, device: str | None, per_gpu: bool, mps_mode: str) -> Plan:
    """Resolve the device, check the config against it (applying -p), lay out the processes and
    decide about MPS; ConfigError names the first problem. Shared by a run, a sweep's check of
    its configs and benchmark.py --dry-run, so all three judge a config alike."""
    kind, count, notices = resolve_device(cfg, device)
    validate(cfg, count, force_per_gpu=per_gpu)
    topo = Topology.from_config(cfg)
    use_mps, mps_reason = mps.plan(mps_mode, kind, topo)
    return Plan(kind, count, notices, topo, use_mps, mps_reason)


def frame_sizes(cfg, videos) -> list[tuple[int, int]]:
    """The run's frame sizes, most common first: the config's resolution, or else each readable
    clip's own size (an unreadable clip fails as a request later, not here)."""
    if cfg.model.resolution:
        return [tuple(cfg.model.resolution)]
    sizes, reasons = Counter(), []
    for v in videos:
        try:
            info = probe(v)
            sizes[(info.height, info.width)] += 1
        except VideoError as exc:
            reasons.append(str(exc))
    if not sizes:
        raise ConfigError("videos", "no readable clip to take the frame size from: "
                                    + "; ".join(reasons[:3]))
    return [size for size, _ in sizes.most_common()]
