"""Whether a loaded config can run on this machine. Types, bounds and choices of single fields come
from the schema (checked again here, for configs built in code); what follows are the rules that
relate fields to each other and to the machine. Every error is a ConfigError naming the field."""
from __future__ import annotations

import difflib
import re

from models.registry import served_model
from pipeline.analysis.records import SINK
from pipeline.config.change import validate_change_based
from pipeline.config.convert import from_dict, to_dict
from pipeline.config.files import resolve_checkpoint, resolve_videos
from pipeline.config.schema import Config, StepConfig, split_gpu
from pipeline.errors import CheckpointError, ConfigError
from pipeline.serving.frame_limits import model_min_side

# Step names become CSV column prefixes (`<name>.compute_s`) and queue names.
_STEP_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def validate(cfg: Config, gpu_count: int | None, force_per_gpu: bool = False,
             launcher: str | None = None) -> Config:
    """Check everything a run needs from the config; raise ConfigError naming the first bad field.

    gpu_count: GPUs on this machine; None means CPU mode, where GPU ids are logical device ids and
    are not checked against hardware. force_per_gpu (the `-p` flag) sets every step's queue to
    per_gpu, in place, before the checks. Video paths must exist, and the checkpoint must hold
    weights that fit the model (read once here, on the CPU). `launcher` overrides the config's
    (--launcher): gpus entries that name nodes need the ray launcher. Returns cfg.
    """
    if force_per_gpu:
        for step in cfg.steps:
            step.queue = "per_gpu"
    from_dict(Config, to_dict(cfg))  # every single field, as if it had been loaded from a file
    served = served_model(cfg.model)  # imports torch: not needed to load or describe configs
    check = served.check_segment if cfg.videos.streams is not None else served.check_request
    reason = check(cfg.frames_per_request)
    if reason:
        raise ConfigError("frames_per_request", reason)
    _validate_videos(cfg)
    _validate_model(cfg)
    _validate_checkpoint(cfg, served)
    _validate_steps(cfg, served.stages, gpu_count, force_per_gpu, launcher or cfg.launcher)
    validate_change_based(cfg, served)
    return cfg


def _validate_videos(cfg: Config) -> None:
    v = cfg.videos
    if bool(v.paths) == (v.synthetic is not None):
        which = "both are given" if v.paths else "neither is given"
        raise ConfigError("videos", f"give exactly one of videos.paths or videos.synthetic ({which})")
    for i, p in enumerate(v.paths):
        if not p.strip():
            raise ConfigError(f"videos.paths[{i}]", "must not be empty")
    if v.synthetic is not None:
        s, sp = v.synthetic, "videos.synthetic"
        for name in ("width", "height"):
            value = getattr(s, name)
            if value % 2:
                raise ConfigError(f"{sp}.{name}",
                                  f"must be an even number >= 16 (4:2:0 video needs even sizes), got {value}")
        if s.width * s.height > v.max_pixels:
            raise ConfigError(sp, f"clips of {s.width}x{s.height} are over videos.max_pixels "
                                  f"({s.width * s.height} > {v.max_pixels} pixels): every request "
                                  "would fail")
        if s.frames < cfg.frames_per_request:
            raise ConfigError(f"{sp}.frames",
                              f"clips of {s.frames} frames are shorter than frames_per_request "
                              f"({cfg.frames_per_request})")
        factor = cfg.model.factor
        if s.truth_factor is not None and s.truth_factor % factor:
            # The same rule pipeline/media/truth.py applies to the written truth, checked here
            # so that --dry-run refuses what the run would.
            raise ConfigError(f"{sp}.truth_factor",
                              f"{s.truth_factor} is not a multiple of model.factor ({factor}): "
                              f"truth at {s.truth_factor}x the clips' frame rate does not hold "
                              f"the frames of a {factor}x model")
    else:
        resolve_videos(cfg)


def _validate_model(cfg: Config) -> None:
    m = cfg.model
    if m.resolution is not None:
        h, w = m.resolution
        least = model_min_side(m.name)
        if min(h, w) < least:
            raise ConfigError("model.resolution", f"{h}x{w} is smaller than the {m.name} model "
                                                  f"takes (at least {least}x{least})")
        if h * w > cfg.videos.max_pixels:
            raise ConfigError("model.resolution", f"{h}x{w} is over videos.max_pixels "
                                                  f"({h * w} > {cfg.videos.max_pixels} pixels)")


def _validate_checkpoint(cfg: Config, served) -> None:
    """The file exists and holds weights of this model; never unpickled beyond weights unless
    model.trust_checkpoint says so."""
    path = resolve_checkpoint(cfg)
    if path is not None:
        try:
            served.check_checkpoint(path, trust_checkpoint=cfg.model.trust_checkpoint)
        except CheckpointError as exc:
            raise ConfigError("model.checkpoint", str(exc)) from None


def _validate_steps(cfg: Config, stages_all, gpu_count, force_per_gpu: bool,
                    launcher: str) -> None:
    steps = cfg.steps
    if not steps:
        raise ConfigError("pipeline", "must list at least one step (decode first, then the model)")
    seen: dict[str, int] = {}
    for i, step in enumerate(steps):
        sp = f"pipeline[{i}]"
        if not _STEP_NAME.match(step.name):
            raise ConfigError(f"{sp}.name", f"'{step.name}' is not a valid step name; use letters, "
                                            "digits, '_' or '-' (names prefix the CSV columns)")
        if step.name == SINK:
            raise ConfigError(f"{sp}.name", "'sink' is reserved for the pipeline's final collector")
        if step.name in seen:
            raise ConfigError(f"{sp}.name", f"'{step.name}' is already the name of pipeline[{seen[step.name]}]")
        seen[step.name] = i
        if i == 0 and step.kind != "decode":
            raise ConfigError(f"{sp}.kind", f"the first step must be kind decode, got '{step.kind}'")
        if i > 0 and step.kind == "decode":
            raise ConfigError(f"{sp}.kind", "only the first step may be kind decode")
        _validate_gpus(step, sp, gpu_count, launcher)
        if step.kind == "model":
            _validate_stages(step, sp, stages_all)
        elif step.stages is not None:
            raise ConfigError(f"{sp}.stages", f"only model steps run stages (this step is kind {step.kind})")
        if step.kind == "sleep":
            if step.sleep_ms is None:
                raise ConfigError(f"{sp}.sleep_ms", "a sleep step needs sleep_ms > 0")
        elif step.sleep_ms is not None:
            raise ConfigError(f"{sp}.sleep_ms", f"only sleep steps take sleep_ms (this step is kind {step.kind})")
    _validate_coverage(steps, stages_all)
    _validate_per_gpu_queues(steps, force_per_gpu)


def _validate_stages(step: StepConfig, sp: str, stages_all) -> None:
    if step.stages is None:
        raise ConfigError(f"{sp}.stages", "a model step needs stages: [first, last]")
    for j, stage in enumerate(step.stages):
        if stage not in stages_all:
            close = difflib.get_close_matches(stage, stages_all, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"{sp}.stages[{j}]", f"unknown stage '{stage}'; {hint}"
                                                   f"stages are {', '.join(stages_all)}")
    first, last = (stages_all.index(s) for s in step.stages)
    if first > last:
        raise ConfigError(f"{sp}.stages", f"reversed: '{step.stages[0]}' comes after "
                                          f"'{step.stages[1]}' in the model")


def _validate_gpus(step: StepConfig, sp: str, gpu_count, launcher: str) -> None:
    if not step.gpus:
        raise ConfigError(f"{sp}.gpus", "must list at least one GPU id (one replica per entry)")
    for j, entry in enumerate(step.gpus):
        node, gpu = split_gpu(entry)
        if node is not None:
            if launcher != "ray":
                raise ConfigError(f"{sp}.gpus[{j}]", f"'{entry}' names a node, which only the ray "
                                                     f"launcher places (launcher: ray, or "
                                                     f"--launcher ray); the {launcher} launcher "
                                                     "runs every process on this machine")
            continue  # another node's GPUs: Ray checks that they exist when it places the run
        if gpu_count is not None and gpu >= gpu_count:
            if gpu_count == 0:
                have = "this machine has no GPUs"
            elif gpu_count == 1:
                have = "this machine has 1 GPU (id 0)"
            else:
                have = f"this machine has {gpu_count} GPUs (ids 0..{gpu_count - 1})"
            raise ConfigError(f"{sp}.gpus[{j}]", f"GPU {gpu} is not present: {have}; "
                                                 "run with --device cpu to run this placement on CPU")


def _stage_span(stages_all, lo: int, hi: int) -> str:
    if lo == hi:
        return f"stage {stages_all[lo]}"
    return f"stages {stages_all[lo]}..{stages_all[hi]}"


def _validate_coverage(steps: list[StepConfig], stages_all) -> None:
    """Model steps must run every stage exactly once, in pipeline order, with no step between them."""
    model = [(i, s) for i, s in enumerate(steps) if s.kind == "model"]
    if not model:
        if any(s.kind == "sleep" for s in steps):
            return  # a test pipeline: decode + sleep steps stand in for the model
        raise ConfigError("pipeline", "has no model step: stages "
                                      f"{stages_all[0]}..{stages_all[-1]} are run by no step")
    ranges = [(i, s, stages_all.index(s.stages[0]), stages_all.index(s.stages[1])) for i, s in model]
    # Overlaps: name both steps and the shared stages.
    for a in range(len(ranges)):
        for b in range(a + 1, len(ranges)):
            _, sa, lo_a, hi_a = ranges[a]
            ib, sb, lo_b, hi_b = ranges[b]
            lo, hi = max(lo_a, lo_b), min(hi_a, hi_b)
            if lo <= hi:
                span = _stage_span(stages_all, lo, hi)
                verb = "is" if lo == hi else "are"
                raise ConfigError(f"pipeline[{ib}].stages",
                                  f"{span} {verb} run by both '{sa.name}' and '{sb.name}'")
    # Gaps: name the uncovered stages, on the step that should have started there.
    covered = [False] * len(stages_all)
    for _, _, lo, hi in ranges:
        for k in range(lo, hi + 1):
            covered[k] = True
    k = 0
    while k < len(stages_all):
        if covered[k]:
            k += 1
            continue
        end = k
        while end + 1 < len(stages_all) and not covered[end + 1]:
            end += 1
        after = [r for r in ranges if r[2] > end]
        at = min(after, key=lambda r: r[2]) if after else max(ranges, key=lambda r: r[3])
        verb = "is" if k == end else "are"
        raise ConfigError(f"pipeline[{at[0]}].stages", f"{_stage_span(stages_all, k, end)} {verb} run by no step")
    # Order: each model step continues where the previous one stopped.
    for (ia, sa, lo_a, hi_a), (ib, sb, lo_b, hi_b) in zip(ranges, ranges[1:]):
        if lo_b < lo_a:
            raise ConfigError(f"pipeline[{ib}].stages",
                              f"model steps must run the stages in order: '{sb.name}' "
                              f"({sb.stages[0]}..{sb.stages[1]}) comes after '{sa.name}' "
                              f"({sa.stages[0]}..{sa.stages[1]})")
        if ib != ia + 1:
            between = steps[ia + 1]
            raise ConfigError(f"pipeline[{ia + 1}]",
                              f"'{between.name}' (kind {between.kind}) sits between model steps "
                              f"'{sa.name}' and '{sb.name}', which hand activations to each other")


def _validate_per_gpu_queues(steps: list[StepConfig], force_per_gpu: bool) -> None:
    """A per-GPU queue feeds only consumers on the producer's GPU: each producer GPU needs one."""
    for i, (producer, consumer) in enumerate(zip(steps, steps[1:])):
        if producer.queue != "per_gpu":
            continue
        for gpu in sorted(set(producer.gpus), key=str):
            if gpu not in consumer.gpus:
                forced = " (-p forces per-GPU queues everywhere)" if force_per_gpu else ""
                raise ConfigError(
                    f"pipeline[{i}].queue",
                    f"per_gpu{forced}: step '{producer.name}' has a replica on GPU {gpu} but the next "
                    f"step '{consumer.name}' has none there, so its output could never be taken; "
                    f"add {gpu} to pipeline[{i + 1}].gpus or use queue: global")

