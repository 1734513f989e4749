"""Inputs that cannot hurt the host: every number has bounds, each refusal is one line naming the
flag or field and the allowed range, a CPU run starts only so many processes, and clips outside
the frame limits are found before anything is sized or decoded for them."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.analysis import sweep
from pipeline.cli import benchmark
from pipeline.config import (
    CapacitySettings,
    Config,
    ConfigError,
    OptionError,
    RunSettings,
    SweepSettings,
    check_settings,
    config_from_dict,
    validate,
)
from pipeline.config.fields import entries, is_schema_class, optional_of, scalar_of
from pipeline.serving.plan import RunOptions, cpu_process_cap, plan_run, survey_clips

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def small() -> dict:
    return {
        "name": "b", "device": "cpu",
        "videos": {"synthetic": {"count": 2, "width": 32, "height": 32, "frames": 8}},
        "frames_per_request": 4,
        "pipeline": [{"name": "decode", "kind": "decode", "gpus": [0]},
                     {"name": "m", "kind": "model", "stages": ["stem", "head"], "gpus": [0]}],
    }


def refused(d: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        validate(config_from_dict(d), None)
    return info.value


def numbers(cls, prefix=""):
    for e in entries(cls):
        inner, _ = optional_of(e.hint)
        if is_schema_class(inner) or is_schema_class(scalar_of(e.hint)):
            yield from numbers(scalar_of(inner), f"{prefix}{e.name}.")
        elif scalar_of(e.hint) in (int, float) and e.spec.choices is None:
            yield f"{prefix}{e.name}", e.spec


ALL_NUMBERS = [n for cls in (Config, RunSettings, SweepSettings, CapacitySettings)
               for n in numbers(cls, cls.__name__ + ".")]


@pytest.mark.parametrize("name, spec", ALL_NUMBERS, ids=[n for n, _ in ALL_NUMBERS])
def test_every_number_in_the_schema_has_a_lower_and_an_upper_bound(name, spec):
    assert spec.ge is not None or spec.gt is not None, name
    assert spec.le is not None, name


# --- flags ------------------------------------------------------------------------------------

HOSTILE_FLAGS = [
    (["-v", "1e9"], "-v/--videos", "<= 100_000"),
    (["-v", "1000000000"], "-v/--videos", "<= 100_000"),
    (["--warmup", "1e9"], "--warmup", "<= 10_000"),
    (["-b", "1000000"], "-b/--batch_size", "<= 64"),
    (["-mi", "inf"], "-mi/--mean_interval_ms", "finite"),
    (["-mi", "nan"], "-mi/--mean_interval_ms", "finite"),
    (["-mi", "-5"], "-mi/--mean_interval_ms", ">= 0"),
    (["-qs", "1e12"], "-qs/--queue_size", "<= 10_000"),
    (["--seed", "-1"], "--seed", ">= 0"),
    (["--stall-timeout", "0"], "--stall-timeout", "> 0"),
    (["-v", "2.5"], "-v/--videos", "expected an integer"),
]


@pytest.mark.parametrize("words, flag, words_in_error", HOSTILE_FLAGS,
                         ids=[" ".join(w) for w, _, _ in HOSTILE_FLAGS])
def test_benchmark_refuses_a_hostile_flag_in_one_line_naming_it(words, flag, words_in_error, capsys):
    with pytest.raises(SystemExit) as info:
        benchmark.main(["-c", str(CONFIGS / "cpu-smoke.yaml"), *words])
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {flag}: " in last and words_in_error in last, last


@pytest.mark.parametrize("words, flag, words_in_error",
                         [h for h in HOSTILE_FLAGS if h[1] != "-mi/--mean_interval_ms"],
                         ids=[" ".join(w) for w, f, _ in HOSTILE_FLAGS if f != "-mi/--mean_interval_ms"])
def test_the_sweep_refuses_the_same_flags(words, flag, words_in_error, capsys):
    with pytest.raises(SystemExit):
        sweep.main(["-c", str(CONFIGS / "cpu-smoke.yaml"), "-mi", "50", *words])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {flag}: " in last and words_in_error in last, last


@pytest.mark.parametrize("loads", [["-mi", "50,inf"], ["-mi", "nan"], ["-mi", "1e12"],
                                   ["--rates", "1e9"], ["--rates", "5,inf"]])
def test_a_sweeps_loads_are_bounded_like_a_runs(loads, capsys):
    assert sweep.main(["-c", str(CONFIGS / "cpu-smoke.yaml"), *loads]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {loads[0]}: must be"), err


@pytest.mark.parametrize("words, flag", [(["--repeats", "1e9"], "--repeats"),
                                         (["--min-requests", "1e9"], "--min-requests"),
                                         (["--max-probes", "0"], "--max-probes"),
                                         (["--slo-p99-ms", "inf"], "--slo-p99-ms"),
                                         (["--rel-tol", "nan"], "--rel-tol")])
def test_the_sweeps_own_numbers_are_bounded(words, flag, capsys):
    cmd = ["-c", "x.yaml", "-mi", "50"] if flag == "--repeats" else \
        ["capacity", "-c", "x.yaml", "--slo-p99-ms", "100"]
    with pytest.raises(SystemExit):
        sweep.main([*cmd, *words])
    assert f"argument {flag}: must be" in capsys.readouterr().err


def test_settings_built_in_code_meet_the_same_bounds():
    for bad, flag in ((dict(videos=10**9), "-v/--videos"), (dict(batch=10**6), "-b/--batch_size"),
                      (dict(mean_interval_ms=math.inf), "-mi/--mean_interval_ms"),
                      (dict(mean_interval_ms=math.nan), "-mi/--mean_interval_ms"),
                      (dict(queue_size=10**12), "-qs/--queue_size"),
                      (dict(warmup=10**9), "--warmup")):
        with pytest.raises(OptionError) as info:
            check_settings(RunOptions(**bad))
        assert str(info.value).startswith(f"{flag}: must be"), str(info.value)


# --- config fields --------------------------------------------------------------------------

@pytest.mark.parametrize("mutate, field, words", [
    (lambda d: d["videos"]["synthetic"].update(count=10**10), "videos.synthetic.count", "<= 10_000"),
    (lambda d: d["videos"]["synthetic"].update(width=10**9), "videos.synthetic.width", "<= 8192"),
    (lambda d: d["videos"]["synthetic"].update(frames=10**9), "videos.synthetic.frames", "<= 1000"),
    (lambda d: d["pipeline"][1].update(pool_slots=10**8), "pipeline[1].pool_slots", "<= 64"),
    (lambda d: d.update(frames_per_request=10**11), "frames_per_request", "<= 128"),
    (lambda d: d["videos"]["synthetic"].update(fps=math.inf), "videos.synthetic.fps", "finite"),
    (lambda d: d["videos"]["synthetic"].update(fps=math.nan), "videos.synthetic.fps", "finite"),
    (lambda d: d["model"].update(memory_limit_gib=math.inf), "model.memory_limit_gib", "finite"),
    (lambda d: d["model"].update(resolution=[720, 10**6]), "model.resolution[1]", "<= 8192"),
    (lambda d: d["pipeline"][1].update(gpus=[0, 5000]), "pipeline[1].gpus[1]", "<= 1023"),
    (lambda d: d["pipeline"][1].update(gpus=list(range(200))), "pipeline[1].gpus", "at most 64"),
    (lambda d: d["videos"].update(max_pixels=10**12), "videos.max_pixels", "<="),
    (lambda d: d.update(name="n" * 1000), "name", "at most 100 characters"),
])
def test_hostile_config_numbers_are_refused_naming_the_field_and_range(mutate, field, words):
    d = small()
    d["model"] = {"resolution": [32, 32]}
    mutate(d)
    e = refused(d)
    assert e.field == field and words in e.reason, (e.field, e.reason)
    assert "\n" not in str(e)


def test_a_sleep_step_cannot_sleep_forever():
    d = small()
    d["pipeline"][1] = {"name": "s", "kind": "sleep", "sleep_ms": 1e12, "gpus": [0]}
    e = refused(d)
    assert e.field == "pipeline[1].sleep_ms" and "<= 60_000" in e.reason


def test_a_yaml_infinity_is_refused(tmp_path):
    path = tmp_path / "inf.yaml"
    path.write_text("videos: {synthetic: {fps: .inf}}\npipeline: []\n")
    from pipeline.config import load_config

    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == "videos.synthetic.fps" and "finite" in info.value.reason


# --- processes ------------------------------------------------------------------------------

def test_a_cpu_placement_over_the_process_cap_is_refused_before_any_process_starts():
    d = small()
    d["pipeline"] = [{"name": "decode", "kind": "decode", "gpus": [0]}]
    cap = cpu_process_cap()
    replicas = cap  # with the client and the sink: over the cap
    for k in range(0, replicas - 1, 64):
        d["pipeline"].append({"name": f"s{k}", "kind": "sleep", "sleep_ms": 1,
                              "gpus": list(range(min(64, replicas - 1 - k)))})
    with pytest.raises(ConfigError) as info:
        plan_run(config_from_dict(d), RunSettings())
    assert info.value.field == "pipeline"
    assert f"would start {cap + 2} processes" in info.value.reason
    assert f"at most {cap}" in info.value.reason


def test_a_cpu_run_at_the_cap_is_planned():
    d = small()
    cap = cpu_process_cap()
    d["pipeline"] = [{"name": "decode", "kind": "decode", "gpus": [0]},
                     {"name": "s", "kind": "sleep", "sleep_ms": 1, "gpus": [0] * (cap - 3)}]
    assert sum(len(s) for s in plan_run(config_from_dict(d), RunSettings()).topo.replicas) == cap - 2


# --- frame size -----------------------------------------------------------------------------

def test_max_pixels_defaults_to_4k_and_is_configurable():
    assert config_from_dict(small()).videos.max_pixels == 3840 * 2160
    d = small()
    d["videos"]["max_pixels"] = 1920 * 1080
    assert validate(config_from_dict(d), None).videos.max_pixels == 1920 * 1080


def test_a_synthetic_set_over_max_pixels_is_refused():
    d = small()
    d["videos"]["max_pixels"] = 1000
    e = refused(d)
    assert e.field == "videos.synthetic" and "over videos.max_pixels" in e.reason


@pytest.mark.parametrize("resolution, words", [([4, 64], "smaller than the flavr model takes "
                                                         "(at least 8x8)"),
                                               ([4096, 4096], "over videos.max_pixels")])
def test_a_resolution_the_model_cannot_take_or_over_the_cap_is_refused(resolution, words):
    d = small()
    d["model"] = {"resolution": resolution}
    e = refused(d)
    assert e.field == "model.resolution" and words in e.reason, e.reason


def clips(tmp_path: Path, sizes) -> list[Path]:
    from pipeline.media.synthetic import write_clip

    return [write_clip(tmp_path / f"c{i}_{w}x{h}.webm", width=w, height=h, frames=4, fps=24,
                       codec="vp9", seed=i) for i, (w, h) in enumerate(sizes)]


def test_pools_are_sized_only_for_clips_within_the_limits(tmp_path):
    big, tiny, a, b = clips(tmp_path, [(64, 64), (6, 6), (32, 16), (32, 16)])
    d = small()
    d["videos"] = {"paths": [str(p) for p in (big, tiny, a, b)], "max_pixels": 40 * 40}
    cfg = config_from_dict(d)
    survey = survey_clips(cfg, [big, tiny, a, b])
    assert survey.sizes == [(16, 32)]
    assert survey.warmup_video == str(a)  # never the oversized clip
    assert any(str(big) in r and "over videos.max_pixels" in r for r in survey.refused)
    assert any(str(tiny) in r and "smaller than the flavr model takes" in r for r in survey.refused)


def test_with_a_resolution_small_clips_are_resized_not_refused(tmp_path):
    tiny, big = clips(tmp_path, [(6, 6), (64, 64)])
    d = small()
    d["videos"] = {"paths": [str(tiny), str(big)], "max_pixels": 40 * 40}
    d["model"] = {"resolution": [32, 32]}
    survey = survey_clips(config_from_dict(d), [tiny, big])
    assert survey.sizes == [(32, 32)] and survey.warmup_video == str(tiny)


def test_a_set_with_no_usable_clip_is_refused_with_the_reasons(tmp_path):
    (big,) = clips(tmp_path, [(64, 64)])
    d = small()
    d["videos"] = {"paths": [str(big)], "max_pixels": 1000}
    with pytest.raises(ConfigError) as info:
        survey_clips(config_from_dict(d), [big])
    assert info.value.field == "videos" and "over videos.max_pixels" in info.value.reason


@pytest.mark.parametrize("words, words_in_error", [
    (["-n", "1000000000"], "-n/--requests: must be a positive integer <= 100_000"),
    (["-mi", "inf"], "argument -mi/--mean_interval_ms: must be a finite number"),
])
def test_the_schedule_command_has_the_benchmarks_bounds(words, words_in_error):
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "client.py", *words], cwd=repo, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and words_in_error in done.stderr, done.stderr
