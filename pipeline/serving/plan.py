"""What a run of a config would be on this machine, decided before anything starts: the device,
the validated placement, how many processes it starts, the launcher, MPS, and the frame sizes the
pools are sized for. Shared by a run, a sweep's check of its configs and benchmark.py --dry-run,
so all three judge a config alike."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field, replace

from pipeline.config import RunSettings, check_decode_backend, check_settings, validate
from pipeline.errors import ConfigError, VideoError
from pipeline.serving import mps
from pipeline.serving.frame_limits import FrameLimits
from pipeline.serving.gpu_monitor import gpu_count_nvml
from pipeline.serving.launch import check_launcher_flags
from pipeline.serving.topology import Topology

# The name the run's settings had before they joined the config schema; call sites still use it.
RunOptions = RunSettings

# A CPU run's processes share the cores: more than a few per core only adds switching and memory
# (each holds its own torch), and a placement of hundreds of logical GPUs would start hundreds.
PROCESSES_PER_CORE = 4
MIN_PROCESS_CAP = 16


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


def cpu_process_cap() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(MIN_PROCESS_CAP, PROCESSES_PER_CORE * cores)


def check_process_count(topo: Topology, device_kind: str) -> None:
    """A CPU run may start only so many processes (the client, the sink and every replica)."""
    if device_kind != "cpu":
        return
    replicas = sum(len(step) for step in topo.replicas)
    total, cap = replicas + 2, cpu_process_cap()
    if total > cap:
        raise ConfigError("pipeline", f"a CPU run of this placement would start {total} processes "
                                      f"(client, sink and {replicas} step replicas); this machine "
                                      f"allows at most {cap} ({PROCESSES_PER_CORE} per core, at "
                                      f"least {MIN_PROCESS_CAP}): list fewer ids in the steps' gpus")


@dataclass
class Plan:
    """What a run of a config would be on this machine, before anything starts."""
    device_kind: str  # cuda | cpu
    gpu_count: int | None
    notices: list[str]
    topo: Topology
    use_mps: bool
    mps_reason: str
    launcher: str  # pipeline.serving.launch.LAUNCHERS


def plan_run(cfg, settings: RunSettings) -> Plan:
    """Check the settings, resolve the device, check the config against it (applying -p), lay out
    the processes and decide about MPS; ConfigError names the first problem."""
    settings = check_settings(settings)
    kind, count, notices = resolve_device(cfg, settings.device)
    launcher = settings.launcher or cfg.launcher
    check_launcher_flags(cfg, settings)  # --ray-address that the local launcher would ignore
    validate(cfg, count, force_per_gpu=settings.per_gpu, launcher=launcher)
    check_decode_backend(settings.decode_backend, kind, cfg, local=launcher == "local")
    topo = Topology.from_config(cfg)
    check_process_count(topo, kind)
    use_mps, mps_reason = mps.plan(settings.mps, kind, topo)
    if launcher != "local" and use_mps:
        # MPS is a daemon per machine, started before the children; Ray actors on other nodes
        # never see it, and on this one Ray's workers start outside the run's control.
        use_mps, mps_reason = False, f"the {launcher} launcher's processes run without MPS"
    return Plan(kind, count, notices, topo, use_mps, mps_reason, launcher)


def config_as_run(cfg, settings: RunSettings, plan: Plan):
    """The config with the flags that override its fields (--launcher, --ray-address, --device)
    written into them: the run folder's config.yaml then loads back as the same run, and a
    comparison tells a Ray run from a local one."""
    return replace(cfg, launcher=plan.launcher, device=settings.device or cfg.device,
                   ray=replace(cfg.ray, address=settings.ray_address or cfg.ray.address))


@dataclass
class ClipSurvey:
    """The run's clips as the pools see them: the frame sizes to size for (most common first),
    a clip to warm the decoders up on, and the clips that will fail their requests."""
    sizes: list[tuple[int, int]]
    warmup_video: str
    refused: list[str] = field(default_factory=list)  # "path: reason", a few at most
    failing: frozenset[str] = frozenset()  # every clip found to fail (the warm-ups avoid them)


def survey_clips(cfg, videos) -> ClipSurvey:
    """Probe the clips (headers and packets, no decoding). At native resolution every clip within
    the frame limits adds its size; with model.resolution set the size is that, and probing stops
    at the first usable clip. An unreadable or out-of-limits clip fails as a request later, not
    here, unless no clip at all is usable."""
    limits = FrameLimits.of(cfg)
    fixed = tuple(cfg.model.resolution) if cfg.model.resolution else None
    sizes, refused, failing, warmup = Counter(), [], set(), None
    for v in videos:
        try:
            info = limits.check(v)
        except VideoError as exc:
            refused.append(str(exc))
            failing.add(str(v))
            continue
        warmup = warmup or str(v)
        if fixed is not None:
            break
        sizes[(info.height, info.width)] += 1
    if warmup is None:
        raise ConfigError("videos", "no usable clip: " + "; ".join(refused[:3])
                          + (f"; and {len(refused) - 3} more" if len(refused) > 3 else ""))
    ordered = [fixed] if fixed is not None else [size for size, _ in sizes.most_common()]
    return ClipSurvey(ordered, warmup, refused[:5], frozenset(failing))
