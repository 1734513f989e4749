"""The run config: one schema for YAML and JSON files, checked in full before any process starts.

A config says which videos make the requests, how the model runs, and the pipeline: an ordered list
of steps (decode first, then model partitions or test sleep steps), each with its replicas' GPU ids
and the placement of its output queue. Loading checks shape and types (`config_from_dict`);
`validate` checks meaning against the machine. Every error is a `ConfigError` naming the dotted
field at fault, e.g. `pipeline[2].gpus[1]`, so the user can go straight to the line to edit.

    cfg = load_config("configs/flavr-split.yaml")
    validate(cfg, gpu_count=2)          # gpu_count=None: CPU mode, GPU ids are logical device ids
    print(describe_placement(cfg))
"""
from __future__ import annotations

import collections
import difflib
import glob
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from models.registry import MODEL_NAMES, served_model
from pipeline.analysis.records import SINK
from pipeline.errors import CheckpointError, ConfigError

DEVICES = ("auto", "cuda", "cpu")
FACTORS = (2, 4, 8)
PRECISIONS = ("fp32", "bf16", "fp16")
STEP_KINDS = ("decode", "model", "sleep")
QUEUES = ("global", "per_gpu")
SYNTHETIC_CODECS = ("vp8", "vp9", "h264", "hevc")

# Step names become CSV column prefixes (`<name>.compute_s`) and queue names.
_STEP_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_GLOB_CHARS = re.compile(r"[*?\[]")
_REPO_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------

@dataclass
class SyntheticSpec:
    """Generated test clips (made once and cached by pipeline/synthetic.py)."""

    count: int = 4
    width: int = 256
    height: int = 256
    frames: int = 16
    fps: float = 24.0
    codec: str = "vp9"
    seed: int = 0


@dataclass
class VideoSetConfig:
    """Where request clips come from: files/globs, or a synthetic set. Exactly one of the two."""

    paths: list[str] = field(default_factory=list)
    synthetic: SyntheticSpec | None = None


@dataclass
class ModelConfig:
    name: str = "flavr"  # which model the steps run: a name of models/registry.py
    factor: int = 2
    checkpoint: str | None = None
    # Allow full unpickling of a torch.save checkpoint that holds more than weights (it can run
    # code from the file); without it such a file is refused.
    trust_checkpoint: bool = False
    precision: str = "fp32"
    resolution: tuple[int, int] | None = None  # (H, W)
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    memory_limit_gib: float | None = None  # cap on each model runner's GPU memory (caching allocator)
    # A step hands each output on as soon as the stage that finishes it has run (a split's early
    # U-Net skips cross to the next GPU while the encoder still computes); false: all at the end.
    early_handoff: bool = True


@dataclass(kw_only=True)
class StepConfig:
    name: str
    kind: str  # decode | model | sleep
    gpus: list[int]  # one replica per entry; repeat an id for several replicas on one GPU
    queue: str = "global"  # placement of this step's OUTPUT queue: global | per_gpu
    stages: tuple[str, str] | None = None  # first and last FLAVR stage (kind model)
    # TEST step (kind sleep): sleep this long per request instead of running the model, so
    # capacity searches and queueing tests can run against a service time that is known exactly.
    sleep_ms: float | None = None
    pool_slots: int = 4  # output buffers this step's replicas each own


@dataclass(kw_only=True)
class Config:
    name: str
    device: str = "auto"
    videos: VideoSetConfig
    frames_per_request: int = 8
    model: ModelConfig = field(default_factory=ModelConfig)
    steps: list[StepConfig]
    source: str | None = None  # the file it was loaded from


# --------------------------------------------------------------------------------------------
# Loading: shape and types
# --------------------------------------------------------------------------------------------

class ConfigFileError(ConfigError):
    """A config file that cannot be read or parsed; names the file and, where known, the line."""

    def __init__(self, path, line: int | None, reason: str):
        self.path = str(path)
        self.line = line
        self.field = "<file>"
        self.reason = reason
        where = self.path if line is None else f"{self.path}:{line}"
        ValueError.__init__(self, f"{where}: {reason}")


def load_config(path) -> Config:
    """Read a YAML (.yaml/.yml) or JSON (.json) config; shape and types are checked here."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise ConfigFileError(path, None, "config files must end in .yaml, .yml or .json")
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigFileError(path, None, f"cannot read: {e.strerror or e}") from None
    if suffix == ".json":
        data = _parse_json(path, text)
    else:
        data = _parse_yaml(path, text)
    if data is None:
        raise ConfigFileError(path, None, "the file is empty")
    return config_from_dict(data, source=str(path))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""


def _construct_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' is given twice (first on line {seen[key] + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_yaml(path: Path, text: str):
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(p for p in (e.context, e.problem) if p) or "invalid YAML"
        raise ConfigFileError(path, line, f"cannot parse YAML: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigFileError(path, None, f"cannot parse YAML: {e}") from None


def _parse_json(path: Path, text: str):
    def unique_pairs(pairs):
        out = {}
        for key, value in pairs:
            if key in out:
                raise ValueError(f"key '{key}' is given twice")
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=unique_pairs)
    except json.JSONDecodeError as e:
        raise ConfigFileError(path, e.lineno, f"cannot parse JSON: {e.msg} (column {e.colno})") from None
    except ValueError as e:  # a duplicate key; json does not say where
        raise ConfigFileError(path, None, f"cannot parse JSON: {e}") from None


_TOP_KEYS = ("name", "device", "videos", "frames_per_request", "model", "pipeline")
_VIDEO_KEYS = ("paths", "synthetic")
_SYNTHETIC_KEYS = ("count", "width", "height", "frames", "fps", "codec", "seed")
_MODEL_KEYS = ("name", "factor", "checkpoint", "trust_checkpoint", "precision", "resolution", "channels_last", "compile",
               "cuda_graphs", "memory_limit_gib", "early_handoff")
_STEP_KEYS = ("name", "kind", "gpus", "queue", "stages", "sleep_ms", "pool_slots")


def config_from_dict(d, source: str | None = None) -> Config:
    """Build a Config from the YAML/JSON structure. Checks keys and types; `validate` checks meaning."""
    d = _mapping(d, "<config>")
    _check_keys(d, "", _TOP_KEYS, required=("videos", "pipeline"))
    if "name" in d:
        name = _str(d["name"], "name")
    elif source is not None:
        name = Path(source).stem
    else:
        raise ConfigError("name", "missing: a config that does not come from a file needs a name")
    cfg = Config(
        name=name,
        device=_str(d.get("device", "auto"), "device"),
        videos=_videos_from(d["videos"], "videos"),
        frames_per_request=_int(d.get("frames_per_request", 8), "frames_per_request"),
        model=_model_from(d.get("model", {}), "model"),
        steps=_steps_from(d["pipeline"], "pipeline"),
        source=None if source is None else str(source),
    )
    return cfg


def _videos_from(d, path: str) -> VideoSetConfig:
    d = _mapping(d, path)
    _check_keys(d, path, _VIDEO_KEYS)
    paths = [_str(p, f"{path}.paths[{i}]") for i, p in enumerate(_list(d.get("paths", []), f"{path}.paths"))]
    synthetic = None
    if d.get("synthetic") is not None:
        s = _mapping(d["synthetic"], f"{path}.synthetic")
        sp = f"{path}.synthetic"
        _check_keys(s, sp, _SYNTHETIC_KEYS)
        default = SyntheticSpec()
        synthetic = SyntheticSpec(
            count=_int(s.get("count", default.count), f"{sp}.count"),
            width=_int(s.get("width", default.width), f"{sp}.width"),
            height=_int(s.get("height", default.height), f"{sp}.height"),
            frames=_int(s.get("frames", default.frames), f"{sp}.frames"),
            fps=_number(s.get("fps", default.fps), f"{sp}.fps"),
            codec=_str(s.get("codec", default.codec), f"{sp}.codec"),
            seed=_int(s.get("seed", default.seed), f"{sp}.seed"),
        )
    return VideoSetConfig(paths=paths, synthetic=synthetic)


def _model_from(d, path: str) -> ModelConfig:
    d = _mapping(d, path)
    _check_keys(d, path, _MODEL_KEYS)
    default = ModelConfig()
    resolution = d.get("resolution")
    if resolution is not None:
        items = _list(resolution, f"{path}.resolution")
        if len(items) != 2:
            raise ConfigError(f"{path}.resolution", f"must be [height, width], got {len(items)} values")
        resolution = tuple(_int(v, f"{path}.resolution[{i}]") for i, v in enumerate(items))
    checkpoint = d.get("checkpoint")
    return ModelConfig(
        name=_str(d.get("name", default.name), f"{path}.name"),
        factor=_int(d.get("factor", default.factor), f"{path}.factor"),
        checkpoint=None if checkpoint is None else _str(checkpoint, f"{path}.checkpoint"),
        trust_checkpoint=_bool(d.get("trust_checkpoint", default.trust_checkpoint),
                               f"{path}.trust_checkpoint"),
        precision=_str(d.get("precision", default.precision), f"{path}.precision"),
        resolution=resolution,
        channels_last=_bool(d.get("channels_last", default.channels_last), f"{path}.channels_last"),
        compile=_bool(d.get("compile", default.compile), f"{path}.compile"),
        cuda_graphs=_bool(d.get("cuda_graphs", default.cuda_graphs), f"{path}.cuda_graphs"),
        memory_limit_gib=(None if d.get("memory_limit_gib") is None
                          else _number(d["memory_limit_gib"], f"{path}.memory_limit_gib")),
        early_handoff=_bool(d.get("early_handoff", default.early_handoff), f"{path}.early_handoff"),
    )


def _steps_from(items, path: str) -> list[StepConfig]:
    steps = []
    for i, d in enumerate(_list(items, path)):
        sp = f"{path}[{i}]"
        d = _mapping(d, sp)
        _check_keys(d, sp, _STEP_KEYS, required=("name", "kind", "gpus"))
        stages = d.get("stages")
        if stages is not None:
            pair = _list(stages, f"{sp}.stages")
            if len(pair) != 2:
                raise ConfigError(f"{sp}.stages",
                                  f"must be [first, last] stage names, got {len(pair)} values")
            stages = tuple(_str(v, f"{sp}.stages[{j}]") for j, v in enumerate(pair))
        sleep_ms = d.get("sleep_ms")
        steps.append(StepConfig(
            name=_str(d["name"], f"{sp}.name"),
            kind=_str(d["kind"], f"{sp}.kind"),
            gpus=[_int(g, f"{sp}.gpus[{j}]") for j, g in enumerate(_list(d["gpus"], f"{sp}.gpus"))],
            queue=_str(d.get("queue", "global"), f"{sp}.queue"),
            stages=stages,
            sleep_ms=None if sleep_ms is None else _number(sleep_ms, f"{sp}.sleep_ms"),
            pool_slots=_int(d.get("pool_slots", 4), f"{sp}.pool_slots"),
        ))
    return steps


def config_to_dict(cfg: Config) -> dict:
    """The YAML/JSON structure of `cfg`, every setting explicit; config_from_dict round-trips it."""
    videos: dict = {}
    if cfg.videos.paths:
        videos["paths"] = list(cfg.videos.paths)
    if cfg.videos.synthetic is not None:
        s = cfg.videos.synthetic
        videos["synthetic"] = {"count": s.count, "width": s.width, "height": s.height,
                               "frames": s.frames, "fps": s.fps, "codec": s.codec, "seed": s.seed}
    m = cfg.model
    steps = []
    for s in cfg.steps:
        step = {"name": s.name, "kind": s.kind, "gpus": list(s.gpus), "queue": s.queue}
        if s.stages is not None:
            step["stages"] = list(s.stages)
        if s.sleep_ms is not None:
            step["sleep_ms"] = s.sleep_ms
        step["pool_slots"] = s.pool_slots
        steps.append(step)
    return {
        "name": cfg.name,
        "device": cfg.device,
        "videos": videos,
        "frames_per_request": cfg.frames_per_request,
        "model": {"name": m.name, "factor": m.factor, "checkpoint": m.checkpoint,
                  "trust_checkpoint": m.trust_checkpoint, "precision": m.precision,
                  "resolution": None if m.resolution is None else list(m.resolution),
                  "channels_last": m.channels_last, "compile": m.compile,
                  "cuda_graphs": m.cuda_graphs, "memory_limit_gib": m.memory_limit_gib,
                  "early_handoff": m.early_handoff},
        "pipeline": steps,
    }


def apply_overrides(cfg: Config, overrides) -> Config:
    """The config with `--set FIELD=VALUE` assignments applied (VALUE read as YAML; `pipeline[1]`
    indexes the step list), validated again as a whole."""
    if not overrides:
        return cfg
    d = config_to_dict(cfg)  # fresh containers: cfg itself is left as it was
    for text in overrides:
        field, sep, value = text.partition("=")
        if not sep or not field:
            raise ConfigError("--set", f"expected FIELD=VALUE, got '{text}'")
        keys = [int(k[1:-1]) if k.startswith("[") else k
                for k in re.findall(r"[^.\[\]]+|\[\d+\]", field)]
        node = d
        for i, key in enumerate(keys[:-1]):
            try:
                node = node[key]
            except (KeyError, IndexError, TypeError):
                raise ConfigError(field, f"--set: no such field ('{keys[i]}' not found)") from None
        last = keys[-1]
        if isinstance(node, dict):
            node[last] = yaml.safe_load(value)
        elif isinstance(node, list) and isinstance(last, int) and last < len(node):
            node[last] = yaml.safe_load(value)
        else:
            raise ConfigError(field, "--set: no such field")
    return config_from_dict(d, source=cfg.source)


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


def _check_keys(d: dict, path: str, allowed, required=()) -> None:
    for key in d:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else "valid keys: " + ", ".join(allowed)
            raise ConfigError(_join(path, key), f"unknown key '{key}'; {hint}")
    for key in required:
        if key not in d:
            raise ConfigError(_join(path, key), "missing (required)")


def _kind_of(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {value}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _mapping(value, path: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(path, f"must be a mapping (key: value entries), got {_kind_of(value)}")
    return value


def _list(value, path: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(path, f"must be a list, got {_kind_of(value)}")
    return list(value)


def _str(value, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, f"must be a string, got {_kind_of(value)}")
    return value


def _int(value, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"must be an integer, got {_kind_of(value)}")
    return value


def _number(value, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(path, f"must be a number, got {_kind_of(value)}")
    return float(value)


def _bool(value, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(path, f"must be true or false, got {_kind_of(value)}")
    return value


# --------------------------------------------------------------------------------------------
# Validation: meaning, and fit to the machine
# --------------------------------------------------------------------------------------------

def validate(cfg: Config, gpu_count: int | None, force_per_gpu: bool = False) -> Config:
    """Check everything a run needs from the config; raise ConfigError naming the first bad field.

    gpu_count: GPUs on this machine; None means CPU mode, where GPU ids are logical device ids and
    are not checked against hardware. force_per_gpu (the `-p` flag) sets every step's queue to
    per_gpu, in place, before the checks. Video paths must exist, and the checkpoint must hold
    weights that fit the model (read once here, on the CPU). Returns cfg.
    """
    if force_per_gpu:
        for step in cfg.steps:
            step.queue = "per_gpu"

    if not cfg.name:
        raise ConfigError("name", "must not be empty")
    _choice(cfg.device, DEVICES, "device")
    served = _validate_model(cfg.model)
    reason = served.check_request(cfg.frames_per_request)
    if reason:
        raise ConfigError("frames_per_request", reason)
    _validate_videos(cfg)
    _validate_checkpoint(cfg, served)
    _validate_steps(cfg, served.stages, gpu_count, force_per_gpu)
    return cfg


def _choice(value, allowed, path: str) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(path, f"must be one of {', '.join(allowed)}; got '{value}'{hint}")


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
        if s.count < 1:
            raise ConfigError(f"{sp}.count", f"must be >= 1, got {s.count}")
        for name in ("width", "height"):
            value = getattr(s, name)
            if value < 16 or value % 2:
                raise ConfigError(f"{sp}.{name}",
                                  f"must be an even number >= 16 (4:2:0 video needs even sizes), got {value}")
        if s.frames < cfg.frames_per_request:
            raise ConfigError(f"{sp}.frames",
                              f"clips of {s.frames} frames are shorter than frames_per_request "
                              f"({cfg.frames_per_request})")
        if not s.fps > 0:
            raise ConfigError(f"{sp}.fps", f"must be > 0, got {s.fps}")
        _choice(s.codec, SYNTHETIC_CODECS, f"{sp}.codec")
        if s.seed < 0:
            raise ConfigError(f"{sp}.seed", f"must be >= 0, got {s.seed}")
    else:
        resolve_videos(cfg)


def _validate_model(m: ModelConfig):
    """The model's own fields; returns the model they describe (models/registry.py)."""
    _choice(m.name, MODEL_NAMES, "model.name")
    if m.factor not in FACTORS:
        raise ConfigError("model.factor", f"must be one of 2, 4, 8 (the released FLAVR models); got {m.factor}")
    _choice(m.precision, PRECISIONS, "model.precision")
    if m.resolution is not None:
        if len(m.resolution) != 2:
            raise ConfigError("model.resolution", "must be [height, width]")
        for i, value in enumerate(m.resolution):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"model.resolution[{i}]", f"must be a positive integer, got {value!r}")
    if m.memory_limit_gib is not None and not m.memory_limit_gib > 0:
        raise ConfigError("model.memory_limit_gib", f"must be > 0 GiB, got {m.memory_limit_gib}")
    served = served_model(m)
    for i, value in enumerate(m.resolution or ()):
        if value < served.min_size:
            raise ConfigError(f"model.resolution[{i}]", f"{served.title} needs frames of at least "
                                                        f"{served.min_size} pixels, got {value}")
    return served


def _validate_checkpoint(cfg: Config, served) -> None:
    """The file exists and holds weights of this model; never unpickled beyond weights unless
    model.trust_checkpoint says so."""
    path = resolve_checkpoint(cfg)
    if path is not None:
        try:
            served.check_checkpoint(path, trust_checkpoint=cfg.model.trust_checkpoint)
        except CheckpointError as exc:
            raise ConfigError("model.checkpoint", str(exc)) from None


def _validate_steps(cfg: Config, stages_all, gpu_count, force_per_gpu: bool) -> None:
    steps = cfg.steps
    if not steps:
        raise ConfigError("pipeline", "must list at least one step (decode first, then the model)")
    seen: dict[str, int] = {}
    for i, step in enumerate(steps):
        sp = f"pipeline[{i}]"
        if not _STEP_NAME.match(step.name or ""):
            raise ConfigError(f"{sp}.name", f"'{step.name}' is not a valid step name; use letters, "
                                            "digits, '_' or '-' (names prefix the CSV columns)")
        if step.name == SINK:
            raise ConfigError(f"{sp}.name", "'sink' is reserved for the pipeline's final collector")
        if step.name in seen:
            raise ConfigError(f"{sp}.name", f"'{step.name}' is already the name of pipeline[{seen[step.name]}]")
        seen[step.name] = i
        _choice(step.kind, STEP_KINDS, f"{sp}.kind")
        if i == 0 and step.kind != "decode":
            raise ConfigError(f"{sp}.kind", f"the first step must be kind decode, got '{step.kind}'")
        if i > 0 and step.kind == "decode":
            raise ConfigError(f"{sp}.kind", "only the first step may be kind decode")
        _choice(step.queue, QUEUES, f"{sp}.queue")
        if step.pool_slots < 1:
            raise ConfigError(f"{sp}.pool_slots", f"must be >= 1, got {step.pool_slots}")
        _validate_gpus(step, sp, gpu_count)
        if step.kind == "model":
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
        elif step.stages is not None:
            raise ConfigError(f"{sp}.stages", f"only model steps run stages (this step is kind {step.kind})")
        if step.kind == "sleep":
            if step.sleep_ms is None or not step.sleep_ms > 0:
                raise ConfigError(f"{sp}.sleep_ms", "a sleep step needs sleep_ms > 0")
        elif step.sleep_ms is not None:
            raise ConfigError(f"{sp}.sleep_ms", f"only sleep steps take sleep_ms (this step is kind {step.kind})")
    _validate_coverage(steps, stages_all)
    _validate_per_gpu_queues(steps, force_per_gpu)


def _validate_gpus(step: StepConfig, sp: str, gpu_count) -> None:
    if not step.gpus:
        raise ConfigError(f"{sp}.gpus", "must list at least one GPU id (one replica per entry)")
    for j, gpu in enumerate(step.gpus):
        if isinstance(gpu, bool) or not isinstance(gpu, int) or gpu < 0:
            raise ConfigError(f"{sp}.gpus[{j}]", f"must be a GPU id >= 0, got {gpu!r}")
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
        for gpu in sorted(set(producer.gpus)):
            if gpu not in consumer.gpus:
                forced = " (-p forces per-GPU queues everywhere)" if force_per_gpu else ""
                raise ConfigError(
                    f"pipeline[{i}].queue",
                    f"per_gpu{forced}: step '{producer.name}' has a replica on GPU {gpu} but the next "
                    f"step '{consumer.name}' has none there, so its output could never be taken; "
                    f"add {gpu} to pipeline[{i + 1}].gpus or use queue: global")


# --------------------------------------------------------------------------------------------
# Files the config points to
# --------------------------------------------------------------------------------------------

def _search_dirs(cfg: Config) -> list[Path]:
    """Relative paths are looked up next to the config file first, then in the working directory."""
    dirs = []
    if cfg.source is not None:
        dirs.append(Path(cfg.source).resolve().parent)
    cwd = Path.cwd()
    if cwd not in dirs:
        dirs.append(cwd)
    return dirs


def resolve_videos(cfg: Config, synthetic_root=None) -> list[Path]:
    """The clip files of the run, globs expanded in sorted order.

    For a synthetic set the clips are generated (once; cached) under synthetic_root, by default
    <repo>/videos/synthetic.
    """
    if cfg.videos.synthetic is not None:
        from pipeline.media.synthetic import ensure_synthetic_set

        s = cfg.videos.synthetic
        root = Path(synthetic_root) if synthetic_root is not None else _REPO_ROOT / "videos" / "synthetic"
        made = ensure_synthetic_set(root, s.count, s.width, s.height, s.frames, s.fps, s.codec, s.seed)
        return [Path(p) for p in made]
    out: list[Path] = []
    for i, text in enumerate(cfg.videos.paths):
        fp = f"videos.paths[{i}]"
        pattern = os.path.expanduser(text)
        bases = [None] if os.path.isabs(pattern) else _search_dirs(cfg)
        if _GLOB_CHARS.search(pattern):
            for base in bases:
                full = pattern if base is None else str(base / pattern)
                matches = sorted(Path(m).absolute() for m in glob.glob(full, recursive=True)
                                 if os.path.isfile(m))
                if matches:
                    out += matches
                    break
            else:
                raise ConfigError(fp, f"'{text}' matches no files{_looked_in(bases)}")
            continue
        for base in bases:
            candidate = Path(pattern) if base is None else base / pattern
            if candidate.is_file():
                out.append(candidate.absolute())
                break
            if candidate.is_dir():
                raise ConfigError(fp, f"'{text}' is a folder; give files or a glob such as '{text.rstrip('/')}/*.mp4'")
        else:
            raise ConfigError(fp, f"no such file '{text}'{_looked_in(bases)}")
    return out


def resolve_checkpoint(cfg: Config) -> Path | None:
    """The checkpoint file (relative paths as for videos), or None when the model runs untrained."""
    text = cfg.model.checkpoint
    if text is None:
        return None
    pattern = os.path.expanduser(text)
    bases = [None] if os.path.isabs(pattern) else _search_dirs(cfg)
    for base in bases:
        candidate = Path(pattern) if base is None else base / pattern
        if candidate.is_file():
            return candidate.absolute()
    raise ConfigError("model.checkpoint", f"no such file '{text}'{_looked_in(bases)}")


def _looked_in(bases) -> str:
    dirs = [str(b) for b in bases if b is not None]
    return f" (looked in {' and '.join(dirs)})" if dirs else ""


# --------------------------------------------------------------------------------------------
# Describing a placement (--dry-run)
# --------------------------------------------------------------------------------------------

def describe_placement(cfg: Config, cpu_mode: bool | None = None) -> str:
    """The resolved placement, readable: steps, replicas per GPU, and every queue.

    cpu_mode: say that GPU ids are logical device ids (None: assume so when cfg.device is cpu).
    """
    if cpu_mode is None:
        cpu_mode = cfg.device == "cpu"
    lines = [f"config {cfg.name}" + (f" ({cfg.source})" if cfg.source else "") + f", device {cfg.device}"]
    v = cfg.videos
    if v.synthetic is not None:
        s = v.synthetic
        lines.append(f"videos    synthetic: {s.count} clips {s.width}x{s.height}, {s.frames} frames at "
                     f"{s.fps:g} fps, {s.codec}, seed {s.seed}")
    else:
        lines.append(f"videos    {', '.join(v.paths)}")
    m = cfg.model
    served, n = served_model(m), cfg.frames_per_request
    rows, outs, unit = served.rows_per_request(n), served.outputs_per_request(n), served.output_unit
    lines.append(f"requests  {n} input frames each -> {rows} {served.row_name}{'s' * (rows != 1)} "
                 f"-> {outs} output {unit.removesuffix('s') if outs == 1 else unit}")
    if m.resolution is not None:
        res = f"{m.resolution[0]}x{m.resolution[1]} (HxW)"
    elif served.input_size is not None:
        res = f"{served.input_size[0]}x{served.input_size[1]} (HxW, the model's input size)"
    else:
        res = "native"
    flags = [f for f in ("channels_last", "compile", "cuda_graphs", "trust_checkpoint")
             if getattr(m, f)]
    lines.append(f"model     {served.describe()}, {m.precision}, resolution {res}, "
                 f"checkpoint {m.checkpoint or 'none (random weights)'}"
                 + (f", {', '.join(flags)}" if flags else ""))
    if cpu_mode:
        lines.append("          (CPU mode: GPU ids below are logical device ids)")
    lines.append("")

    first = cfg.steps[0].name if cfg.steps else "?"
    rows = [("step", "kind", "work", "replicas", "output queue"),
            ("client", "-", "issues requests", "1 (host)", f"global -> {first}")]
    for i, step in enumerate(cfg.steps):
        if step.kind == "model":
            work = f"{step.stages[0]}..{step.stages[1]}" if step.stages else "?"
        elif step.kind == "sleep":
            work = f"TEST sleep {step.sleep_ms:g} ms" if step.sleep_ms is not None else "TEST sleep"
        else:
            work = "clip -> frames"
        nxt = cfg.steps[i + 1].name if i + 1 < len(cfg.steps) else SINK
        if i + 1 == len(cfg.steps):
            queue = "global -> sink" + (" (per_gpu ignored: the sink queue is always global)"
                                        if step.queue == "per_gpu" else " (the sink queue is always global)")
        elif step.queue == "per_gpu":
            queue = (f"per_gpu -> {nxt} (one queue per GPU: "
                     + ", ".join(str(g) for g in sorted(set(step.gpus))) + ")")
        else:
            queue = f"global -> {nxt}"
        rows.append((step.name, step.kind, work, _replicas_text(step.gpus), queue))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    for r in rows:
        lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1])
    lines.append("")
    gpus = sorted({g for s in cfg.steps for g in s.gpus})
    for g in gpus:
        here = [f"{s.name} x{s.gpus.count(g)}" for s in cfg.steps if g in s.gpus]
        lines.append(f"GPU {g}: " + ", ".join(here))
    return "\n".join(lines)


def _replicas_text(gpus: list[int]) -> str:
    counts = collections.Counter(gpus)
    parts = [f"GPU {g}" + (f" x{n}" if n > 1 else "") for g, n in sorted(counts.items())]
    return f"{len(gpus)}: " + ", ".join(parts)
