"""One schema, declared once: every config field loads, takes `--set`, and reaches the run folder's
copy; every run setting is a flag of benchmark.py and of the sweep, parsed into the same object."""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pipeline.analysis import sweep
from pipeline.cli import benchmark
from pipeline.config import (
    Config,
    ConfigError,
    OptionError,
    RunSettings,
    add_setting_flags,
    apply_overrides,
    check_settings,
    config_from_dict,
    config_to_dict,
    load_config,
    settings_from_args,
)
from pipeline.config.convert import from_dict, to_dict
from pipeline.config.fields import (
    entries,
    entry,
    is_schema_class,
    optional_of,
    scalar_of,
    setting,
)
from pipeline.serving.launch import LAUNCHERS
from pipeline.serving.plan import RunOptions, plan_run

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def base(path: str = "") -> Config:
    """A config holding the field at `path` (an optional section only some configs have)."""
    if path.startswith("videos.streams"):
        return load_config(CONFIGS / "streams-cpu.yaml")
    if path.startswith("model.change_based") or path == "videos.synthetic.moving_fraction":
        return load_config(CONFIGS / "change-cpu.yaml")
    return load_config(CONFIGS / "cpu-smoke.yaml")


def leaves(cls, prefix: str = ""):
    """(dotted path as --set writes it, entry) for every scalar-or-list field of the file schema;
    a list of steps is entered at its first step."""
    for e in entries(cls):
        if not e.spec.in_file:
            continue
        path = f"{prefix}{e.key}"
        inner, _ = optional_of(e.hint)
        if is_schema_class(inner):
            yield from leaves(inner, path + ".")
        elif is_schema_class(scalar_of(e.hint)):
            yield from leaves(scalar_of(e.hint), path + "[0].")
        else:
            yield path, e


def other_value(e, current):
    """A valid value of the field that differs from `current` where the schema allows one."""
    s, kind = e.spec, scalar_of(e.hint)
    if kind == (int | str):  # a gpus entry: an id (or "node:id")
        kind = int
    if s.choices:
        return next((c for c in s.choices if c != current), current)
    if kind is bool:
        return not current
    if kind in (int, float):
        lo = s.ge if s.ge is not None else s.gt + 1
        value = kind(lo if current != lo else lo + 1)
    else:
        value = "x.pth"
    inner, _ = optional_of(e.hint)
    if getattr(inner, "__origin__", None) in (list, tuple):
        return [value] * (len(inner.__args__) if inner.__origin__ is tuple else 2)
    return value


def at(d, path: str):
    for part in path.replace("[", ".[").split("."):
        d = d[int(part[1:-1])] if part.startswith("[") else d[part]
    return d


FILE_FIELDS = list(leaves(Config))


def test_the_walk_sees_every_config_field():
    paths = {p for p, _ in FILE_FIELDS}
    assert {"name", "device", "launcher", "frames_per_request", "videos.paths", "videos.max_pixels",
            "videos.synthetic.count", "model.resolution", "model.memory_limit_gib",
            "pipeline[0].gpus", "pipeline[0].pool_slots", "pipeline[0].sleep_ms"} <= paths


@pytest.mark.parametrize("path, e", FILE_FIELDS, ids=[p for p, _ in FILE_FIELDS])
def test_every_config_field_takes_set_and_reaches_the_run_folder_copy(path, e):
    cfg = base(path)
    value = other_value(e, at(config_to_dict(cfg), path))
    changed = apply_overrides(cfg, [f"{path}={json.dumps(value)}"])
    saved = config_to_dict(changed)
    assert at(saved, path) == value
    # The run folder's copy, written as YAML and read back, is the same config.
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(saved)), source=cfg.source) == changed


@pytest.mark.parametrize("path, e", FILE_FIELDS, ids=[p for p, _ in FILE_FIELDS])
def test_every_config_field_refuses_a_wrong_type_naming_itself(path, e):
    wrong = 7 if scalar_of(e.hint) in (bool, str) else "word"
    with pytest.raises(ConfigError) as info:
        apply_overrides(base(), [f"{path}={wrong}"])
    assert info.value.field.startswith(path), (info.value.field, info.value.reason)


# Fields of the optional sections that cpu-smoke.yaml leaves off (null).
SECTION_FIELDS = [(p, e) for p, e in FILE_FIELDS
                  if p.startswith(("videos.streams.", "model.change_based."))]


@pytest.mark.parametrize("path, e", SECTION_FIELDS, ids=[p for p, _ in SECTION_FIELDS])
def test_set_into_a_section_that_is_off_turns_it_on_with_its_defaults(path, e):
    cfg = base()
    section = path.rsplit(".", 1)[0]
    assert at(config_to_dict(cfg), section) is None
    value = other_value(e, e.default())
    changed = config_to_dict(apply_overrides(cfg, [f"{path}={json.dumps(value)}"]))
    assert at(changed, path) == value
    # the section's other fields are its declared defaults, as `--set SECTION={}` makes them
    fresh = at(config_to_dict(apply_overrides(cfg, [f"{section}={{}}"])), section)
    assert {**fresh, e.key: value} == at(changed, section)


def test_set_into_a_section_that_is_off_still_checks_the_value_and_the_key():
    with pytest.raises(ConfigError) as info:
        apply_overrides(base(), ["videos.streams.count=0"])
    assert info.value.field == "videos.streams.count" and "positive" in info.value.reason
    with pytest.raises(ConfigError) as info:
        apply_overrides(base(), ["model.change_based.treshold=0.1"])
    assert "did you mean 'threshold'" in str(info.value)
    with pytest.raises(ConfigError, match="no such field"):
        apply_overrides(base(), ["model.checkpoint.x=1"])  # a scalar, not a section


def test_dry_run_takes_set_into_a_section_that_is_off(capsys):
    args = ["-c", str(CONFIGS / "cpu-smoke.yaml"), "--dry-run", "--set", "videos.streams.count=2"]
    assert benchmark.main(args) == 0
    assert "one of 2 streams" in capsys.readouterr().out


FLAGGED = [e for e in entries(RunSettings) if e.spec.flags]


def test_every_run_setting_has_a_flag():
    assert [e.name for e in entries(RunSettings) if not e.spec.flags] == []


def parse_all(e, value):
    """The field parsed by benchmark.py, the sweep and the capacity search from one flag."""
    if scalar_of(e.hint) is bool:
        flag = e.spec.flags[-1] if value else "--no-" + e.spec.flags[-1][2:]
        words = [flag]
    else:
        words = [e.spec.flags[-1], str(value)]
    got = {"benchmark": settings_from_args(benchmark.build_parser().parse_args(
        ["-c", "x.yaml", *words]))}
    if e.name != "mean_interval_ms":  # a sweep's loads are lists: -mi 200,100,50
        args = sweep.build_parser().parse_args(["-c", "x.yaml", "-mi", "50", *words])
        got["sweep"] = sweep._options(args, args.videos)
        if e.name != "videos":  # a capacity probe's request count is --min-requests
            args = sweep.build_capacity_parser().parse_args(
                ["-c", "x.yaml", "--slo-p99-ms", "100", *words])
            got["capacity"] = sweep._options(args, 10)
    return {k: getattr(v, e.name) for k, v in got.items()}


@pytest.mark.parametrize("e", FLAGGED, ids=[e.name for e in FLAGGED])
def test_every_run_setting_parses_alike_in_benchmark_and_sweep(e):
    # a decoder that runs on any machine: a GPU one is refused where there is no GPU
    value = "pyav" if e.name == "decode_backend" else other_value(e, e.default())
    if isinstance(value, list):
        value = value[0]
    for command, parsed in parse_all(e, value).items():
        assert parsed == value, (command, e.name)


def test_the_sweep_has_the_flags_it_used_to_lack():
    args = sweep.build_parser().parse_args(
        ["-c", "x.yaml", "-mi", "50", "--decode-backend", "pyav", "--save-outputs",
         "--check-outputs"])
    opts = sweep._options(args, 5)
    assert (opts.decode_backend, opts.save_outputs, opts.check_outputs) == ("pyav", True, True)


def test_a_sweeps_runs_have_no_progress_bars_unless_asked():
    args = sweep.build_parser().parse_args(["-c", "x.yaml", "-mi", "50"])
    assert sweep._options(args, 5).progress is False
    assert settings_from_args(benchmark.build_parser().parse_args(["-c", "x.yaml"])).progress


def test_a_field_declared_once_is_loaded_serialised_and_a_flag():
    @dataclass(kw_only=True)
    class Knobs:
        depth: int = setting(3, doc="how deep", ge=1, le=9, flags=("--depth",))

    assert from_dict(Knobs, {"depth": 5}) == Knobs(depth=5)
    assert to_dict(Knobs(depth=5)) == {"depth": 5}
    parser = argparse.ArgumentParser()
    add_setting_flags(parser, Knobs)
    assert settings_from_args(parser.parse_args(["--depth", "7"]), Knobs) == Knobs(depth=7)
    assert "how deep [a positive integer <= 9]" in " ".join(parser.format_help().split())
    with pytest.raises(ConfigError) as info:
        from_dict(Knobs, {"depth": 10})
    assert info.value.field == "depth" and "<= 9" in info.value.reason


def test_a_schema_field_without_its_declaration_is_refused():
    @dataclass
    class Bare:
        depth: int = 3

    with pytest.raises(TypeError, match="setting"):
        entries(Bare)


# --- the launcher -------------------------------------------------------------------------

def test_launcher_is_a_config_field_with_a_flag_on_both_commands():
    cfg = base()
    assert cfg.launcher == "local" and config_to_dict(cfg)["launcher"] == "local"
    assert apply_overrides(cfg, ["launcher=local"]).launcher == "local"
    for parser, extra in ((benchmark.build_parser(), []), (sweep.build_parser(), ["-mi", "1"])):
        args = parser.parse_args(["-c", "x.yaml", *extra, "--launcher", "local"])
        assert args.launcher == "local"
    assert plan_run(cfg, RunSettings()).launcher == "local"


def test_an_unknown_launcher_names_the_field_and_the_choices():
    d = config_to_dict(base())
    d["launcher"] = "slurm"
    with pytest.raises(ConfigError) as info:
        config_from_dict(d)
    assert info.value.field == "launcher" and ", ".join(LAUNCHERS) in info.value.reason


# --- settings built in code -----------------------------------------------------------------

def test_run_options_is_the_settings_type():
    assert RunOptions is RunSettings


def test_settings_built_in_code_are_checked_and_named_by_their_flag():
    with pytest.raises(OptionError) as info:
        check_settings(RunSettings(videos=0))
    assert str(info.value).startswith("-v/--videos: ") and "positive" in str(info.value)
    with pytest.raises(OptionError, match="^--on-full: must be one of stop, block"):
        plan_run(base(), RunSettings(on_full="wait"))


def test_a_bad_decode_backend_in_the_environment_names_the_flag(monkeypatch, capsys):
    monkeypatch.setenv("FLAVR_DECODE_BACKEND", "nvdec")
    assert RunSettings().decode_backend == "nvdec"
    with pytest.raises(SystemExit):
        benchmark.build_parser().parse_args(["-c", "x.yaml"])
    assert "argument --decode-backend: must be one of auto" in capsys.readouterr().err


def test_the_declared_decode_backends_are_the_decoders():
    from pipeline.config.schema import DECODE_BACKENDS
    from pipeline.media.decode import BACKENDS

    assert DECODE_BACKENDS == ("auto", *BACKENDS)


def test_the_capacity_default_is_the_reports_p99_minimum():
    from pipeline.analysis.report import MIN_FOR_P99
    from pipeline.config import CapacitySettings

    assert entry(CapacitySettings, "min_requests").default() == MIN_FOR_P99


def test_a_benchmark_run_records_its_settings_under_their_field_names():
    # args.json is what compare and the study table read (per_gpu, queue_size, decode_backend...).
    args = benchmark.build_parser().parse_args(
        ["-c", "c.yaml", "-qs", "8", "-p", "--set", "model.precision=fp32"])
    record = benchmark.run_record(args, settings_from_args(args))
    assert record["queue_size"] == 8 and record["per_gpu"] is True
    assert record["overrides"] == ["model.precision=fp32"] and record["config"] == "c.yaml"
    assert set(dataclasses.asdict(RunSettings())) <= set(record)
