"""The run config: one schema for YAML and JSON files and for the run's command-line settings,
checked in full before any process starts.

A config says which videos make the requests, how the model runs, and the pipeline: an ordered list
of steps (decode first, then model partitions or test sleep steps), each with its replicas' GPU ids
and the placement of its output queue. Loading checks shape, types and bounds
(`config_from_dict`); `validate` checks meaning against the machine. Every error is a
`ConfigError` naming the dotted field at fault, e.g. `pipeline[2].gpus[1]`, so the user can go
straight to the line to edit.

    cfg = load_config("configs/flavr-split.yaml")
    validate(cfg, gpu_count=2)          # gpu_count=None: CPU mode, GPU ids are logical device ids
    print(describe_placement(cfg))

Modules: schema.py (the declaration: every field once), fields.py (the vocabulary it is written
in), convert.py (plain data <-> dataclasses, generic), loading.py (files), validate.py (rules
across fields), overrides.py (--set), files.py (clips and checkpoint on disk), describe.py
(--dry-run text), cli.py (argparse flags from the declaration), decode_backend.py (a forced
decoder against the run's device and clips).
"""
from pipeline.config.cli import (
    OptionError,
    add_override_flag,
    add_setting_flags,
    add_trust_flag,
    check_flag_value,
    check_settings,
    settings_from_args,
    with_trust,
)
from pipeline.config.decode_backend import check_decode_backend
from pipeline.config.describe import describe_placement
from pipeline.config.files import resolve_checkpoint, resolve_videos
from pipeline.config.loading import (
    ConfigFileError,
    config_from_dict,
    config_to_dict,
    load_config,
)
from pipeline.config.overrides import apply_overrides
from pipeline.config.schema import (
    DECODE_BACKENDS,
    DEVICES,
    FACTORS,
    MODEL_NAMES,
    PRECISIONS,
    QUEUES,
    STEP_KINDS,
    SYNTHETIC_CODECS,
    CapacitySettings,
    Config,
    ModelConfig,
    RunSettings,
    StepConfig,
    StreamsSpec,
    SweepSettings,
    SyntheticSpec,
    VideoSetConfig,
)
from pipeline.config.validate import validate
from pipeline.errors import ConfigError

__all__ = [
    "DECODE_BACKENDS", "DEVICES", "FACTORS", "MODEL_NAMES", "PRECISIONS", "QUEUES", "STEP_KINDS",
    "SYNTHETIC_CODECS", "CapacitySettings", "Config", "ConfigError", "ConfigFileError",
    "ModelConfig", "OptionError", "RunSettings", "StepConfig", "StreamsSpec", "SweepSettings", "SyntheticSpec",
    "VideoSetConfig", "add_override_flag", "add_setting_flags", "add_trust_flag", "apply_overrides", "check_flag_value", "check_settings",
    "check_decode_backend", "config_from_dict", "config_to_dict", "describe_placement", "load_config",
    "resolve_checkpoint", "resolve_videos", "settings_from_args", "validate", "with_trust",
]
