"""The config schema: what loads, what is refused, and how each refusal names the field at fault."""
import copy
import json
from pathlib import Path

import pytest
import yaml

from models.registry import served_model
from pipeline.config import (
    Config,
    ConfigFileError,
    config_from_dict,
    config_to_dict,
    describe_placement,
    load_config,
    resolve_checkpoint,
    resolve_videos,
    validate,
)
from pipeline.errors import ConfigError, VideoError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SHIPPED = sorted(p for p in CONFIGS.iterdir() if p.suffix in (".yaml", ".yml", ".json"))


def split_dict() -> dict:
    return {
        "name": "t",
        "videos": {"synthetic": {"count": 2, "width": 64, "height": 64, "frames": 8}},
        "frames_per_request": 4,
        "model": {"factor": 2, "precision": "fp32"},
        "pipeline": [
            {"name": "decode", "kind": "decode", "gpus": [0], "queue": "per_gpu"},
            {"name": "enc", "kind": "model", "stages": ["stem", "layer4"], "gpus": [0]},
            {"name": "dec", "kind": "model", "stages": ["dec0", "head"], "gpus": [1]},
        ],
    }


def check(d: dict, gpu_count=None, force_per_gpu=False) -> Config:
    return validate(config_from_dict(d), gpu_count, force_per_gpu=force_per_gpu)


def refused(d: dict, gpu_count=None, force_per_gpu=False) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        check(d, gpu_count, force_per_gpu)
    return info.value


# --- shipped configs ------------------------------------------------------------------------

def test_all_shipped_configs_are_present():
    names = {p.name for p in SHIPPED}
    assert {"flavr-whole.yaml", "flavr-split.yaml", "flavr-replicated.yaml", "flavr-split-4gpu.yaml",
            "flavr-replicated.json", "cpu-smoke.yaml"} <= names


# Footage that a script makes (scripts/stream_clips.sh writes .cache/streams/), absent on a clone.
MADE_BY_SCRIPT = ".cache/"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_loads_and_validates_in_cpu_mode(path, tmp_path, monkeypatch):
    made = [p for p in load_config(path).videos.paths
            if p.startswith(MADE_BY_SCRIPT) and not (CONFIGS.parent / p).is_file()]
    if made:  # the rest of the config is still checked, with empty files standing in
        monkeypatch.chdir(tmp_path)
        for p in made:
            (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / p).touch()
    cfg = validate(load_config(path), gpu_count=None)
    assert cfg.name == path.stem
    assert cfg.source == str(path)


def test_yaml_and_json_forms_give_equal_configs():
    from_yaml = load_config(CONFIGS / "flavr-replicated.yaml")
    from_json = load_config(CONFIGS / "flavr-replicated.json")
    from_json.source = from_yaml.source
    assert from_json == from_yaml


def test_config_to_dict_round_trips_through_yaml_and_json(tmp_path):
    cfg = load_config(CONFIGS / "flavr-split.yaml")
    d = config_to_dict(cfg)
    assert config_from_dict(d, source=cfg.source) == cfg
    (tmp_path / "flavr-split.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    (tmp_path / "flavr-split.json").write_text(json.dumps(d))
    for path in (tmp_path / "flavr-split.yaml", tmp_path / "flavr-split.json"):
        again = load_config(path)
        again.source = cfg.source
        assert again == cfg


def test_defaults_fill_omitted_fields_and_name_defaults_to_file_stem(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("videos: {synthetic: {}}\npipeline:\n"
                    "  - {name: decode, kind: decode, gpus: [0]}\n"
                    "  - {name: m, kind: model, stages: [stem, head], gpus: [0]}\n")
    cfg = validate(load_config(path), None)
    assert cfg.name == "mine"
    assert cfg.device == "auto" and cfg.frames_per_request == 8
    assert cfg.model.factor == 2 and cfg.model.precision == "fp32" and cfg.model.resolution is None
    assert cfg.videos.synthetic.codec == "vp9" and cfg.videos.synthetic.fps == 24.0
    assert cfg.steps[0].queue == "global" and cfg.steps[0].pool_slots == 4


def test_resolution_and_stages_become_tuples():
    cfg = check({**split_dict(), "model": {"resolution": [48, 64]}})
    assert cfg.model.resolution == (48, 64)
    assert cfg.steps[1].stages == ("stem", "layer4")


# --- file errors ----------------------------------------------------------------------------

def test_yaml_parse_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodel:\n  factor: [2\n  precision: fp32\n")
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert info.value.line is not None and 3 <= info.value.line <= 5


def test_json_parse_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "name": "x",\n  "model": {"factor": 2,}\n}\n')
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    assert f"{path}:3" in str(info.value)


def test_duplicate_yaml_key_is_refused_with_its_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\ndevice: cpu\nname: b\n")
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    assert info.value.line == 3 and "'name' is given twice" in str(info.value)


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(ConfigFileError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "c.toml").write_text("")
    with pytest.raises(ConfigFileError, match=r"\.yaml, \.yml or \.json"):
        load_config(tmp_path / "c.toml")


def test_empty_file_is_refused(tmp_path):
    (tmp_path / "e.yaml").write_text("# nothing\n")
    with pytest.raises(ConfigFileError, match="empty"):
        load_config(tmp_path / "e.yaml")


def test_file_errors_are_config_errors(tmp_path):
    (tmp_path / "e.yaml").write_text("")
    with pytest.raises(ConfigError):
        load_config(tmp_path / "e.yaml")


# --- keys and types -------------------------------------------------------------------------

def test_unknown_top_level_key_suggests_closest():
    d = split_dict()
    d["frames_per_requests"] = 4
    e = refused(d)
    assert e.field == "frames_per_requests"
    assert "unknown key" in e.reason and "did you mean 'frames_per_request'" in e.reason


def test_unknown_nested_key_names_dotted_path():
    d = split_dict()
    d["model"]["precison"] = "bf16"
    e = refused(d)
    assert e.field == "model.precison" and "did you mean 'precision'" in e.reason


def test_unknown_step_key_names_step_index():
    d = split_dict()
    d["pipeline"][2]["gpu"] = [1]
    e = refused(d)
    assert e.field == "pipeline[2].gpu" and "did you mean 'gpus'" in e.reason


def test_unknown_key_without_close_match_lists_valid_keys():
    d = split_dict()
    d["videos"]["synthetic"]["zzz"] = 1
    e = refused(d)
    assert e.field == "videos.synthetic.zzz" and "valid keys: count, width" in e.reason


def test_missing_required_keys():
    d = split_dict()
    del d["pipeline"][1]["gpus"]
    assert refused(d).field == "pipeline[1].gpus"
    d = split_dict()
    del d["videos"]
    assert refused(d).field == "videos"


def test_name_is_required_without_a_file():
    d = split_dict()
    del d["name"]
    assert refused(d).field == "name"


@pytest.mark.parametrize("mutate, field, words", [
    (lambda d: d["model"].update(factor="2"), "model.factor", "must be an integer, got string '2'"),
    (lambda d: d["model"].update(factor=2.0), "model.factor", "must be an integer"),
    (lambda d: d["model"].update(compile="yes"), "model.compile", "must be true or false"),
    (lambda d: d.update(frames_per_request=True), "frames_per_request", "must be an integer, got boolean"),
    (lambda d: d["pipeline"][2].update(gpus=1), "pipeline[2].gpus", "must be a list"),
    (lambda d: d["pipeline"][2].update(gpus=[1, "a"]), "pipeline[2].gpus[1]", "must be a GPU id or 'node:id'"),
    (lambda d: d["pipeline"][1].update(name=3), "pipeline[1].name", "must be a string"),
    (lambda d: d["videos"]["synthetic"].update(fps="fast"), "videos.synthetic.fps", "must be a number"),
    (lambda d: d.update(model=[1]), "model", "must be a mapping"),
    (lambda d: d.update(pipeline={"a": 1}), "pipeline", "must be a list"),
    (lambda d: d["model"].update(resolution=[64]), "model.resolution", "[height, width]"),
    (lambda d: d["pipeline"][1].update(stages=["stem"]), "pipeline[1].stages", "[first, last]"),
])
def test_wrong_types_name_the_field(mutate, field, words):
    d = split_dict()
    mutate(d)
    e = refused(d)
    assert e.field == field and words in e.reason, (e.field, e.reason)


# --- values ---------------------------------------------------------------------------------

@pytest.mark.parametrize("factor", [1, 3, 16])
def test_factor_must_be_2_4_or_8(factor):
    d = split_dict()
    d["model"]["factor"] = factor
    e = refused(d)
    assert e.field == "model.factor" and "2, 4, 8" in e.reason


def test_precision_must_be_known():
    d = split_dict()
    d["model"]["precision"] = "bf61"
    e = refused(d)
    assert e.field == "model.precision" and "fp32, bf16, fp16" in e.reason and "did you mean 'bf16'" in e.reason


def test_device_must_be_known():
    d = {**split_dict(), "device": "gpu"}
    assert refused(d).field == "device"


def test_frames_per_request_at_least_two():
    d = {**split_dict(), "frames_per_request": 1}
    e = refused(d)
    assert e.field == "frames_per_request" and ">= 2" in e.reason


@pytest.mark.parametrize("res, field", [([0, 64], "model.resolution[0]"), ([64, -8], "model.resolution[1]")])
def test_resolution_must_be_positive(res, field):
    d = split_dict()
    d["model"]["resolution"] = res
    e = refused(d)
    assert e.field == field and "positive" in e.reason


def test_videos_need_exactly_one_source():
    d = split_dict()
    d["videos"]["paths"] = ["a.mp4"]
    e = refused(d)
    assert e.field == "videos" and "exactly one" in e.reason and "both" in e.reason
    d["videos"] = {}
    e = refused(d)
    assert e.field == "videos" and "neither" in e.reason


def test_synthetic_clip_shorter_than_a_request_is_refused():
    d = split_dict()
    d["videos"]["synthetic"]["frames"] = 3
    e = refused(d)
    assert e.field == "videos.synthetic.frames" and "frames_per_request" in e.reason


@pytest.mark.parametrize("factor, truth, ok", [(2, 3, False), (4, 2, False), (2, 4, True),
                                              (4, 4, True)])
def test_a_synthetic_truth_factor_must_be_a_multiple_of_the_models(factor, truth, ok):
    # Checked by validation, which --dry-run runs too, not first when the run reads the truth.
    d = split_dict()
    d["model"]["factor"] = factor
    d["videos"]["synthetic"]["truth_factor"] = truth
    if ok:
        check(d)
        return
    e = refused(d)
    assert e.field == "videos.synthetic.truth_factor"
    assert f"{truth} is not a multiple of model.factor ({factor})" in e.reason


def test_dry_run_refuses_a_truth_factor_the_run_would_refuse(capsys):
    from pipeline.cli import benchmark

    code = benchmark.main(["-c", str(CONFIGS / "cpu-smoke.yaml"), "--check-outputs", "--set",
                           "videos.synthetic.truth_factor=3", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: config field 'videos.synthetic.truth_factor': 3 is not")


def test_synthetic_sizes_must_be_even():
    d = split_dict()
    d["videos"]["synthetic"]["width"] = 63
    assert refused(d).field == "videos.synthetic.width"


def test_synthetic_codec_must_be_known():
    d = split_dict()
    d["videos"]["synthetic"]["codec"] = "vp7"
    e = refused(d)
    assert e.field == "videos.synthetic.codec" and "vp9" in e.reason


def test_pool_slots_positive():
    d = split_dict()
    d["pipeline"][1]["pool_slots"] = 0
    assert refused(d).field == "pipeline[1].pool_slots"


# --- steps ----------------------------------------------------------------------------------

def test_pipeline_must_not_be_empty():
    d = {**split_dict(), "pipeline": []}
    e = refused(d)
    assert e.field == "pipeline" and "at least one step" in e.reason


def test_first_step_must_be_decode():
    d = split_dict()
    d["pipeline"] = d["pipeline"][1:]
    e = refused(d)
    assert e.field == "pipeline[0].kind" and "first step must be kind decode" in e.reason


def test_only_the_first_step_decodes():
    d = split_dict()
    d["pipeline"].insert(1, {"name": "decode2", "kind": "decode", "gpus": [0]})
    e = refused(d)
    assert e.field == "pipeline[1].kind" and "only the first step" in e.reason


def test_unknown_step_kind():
    d = split_dict()
    d["pipeline"][2]["kind"] = "modle"
    e = refused(d)
    assert e.field == "pipeline[2].kind" and "decode, model, sleep" in e.reason and "'model'" in e.reason


def test_step_names_unique():
    d = split_dict()
    d["pipeline"][2]["name"] = "enc"
    e = refused(d)
    assert e.field == "pipeline[2].name" and "pipeline[1]" in e.reason


def test_step_name_sink_is_reserved():
    d = split_dict()
    d["pipeline"][2]["name"] = "sink"
    e = refused(d)
    assert e.field == "pipeline[2].name" and "reserved" in e.reason


def test_step_name_must_suit_csv_columns():
    d = split_dict()
    d["pipeline"][2]["name"] = "dec.1"
    assert refused(d).field == "pipeline[2].name"


def test_unknown_stage_suggests_closest():
    d = split_dict()
    d["pipeline"][2]["stages"] = ["dec0", "haed"]
    e = refused(d)
    assert e.field == "pipeline[2].stages[1]" and "unknown stage 'haed'" in e.reason and "'head'" in e.reason


def test_reversed_stages():
    d = split_dict()
    d["pipeline"][1]["stages"] = ["layer4", "stem"]
    e = refused(d)
    assert e.field == "pipeline[1].stages" and "reversed" in e.reason


def test_model_step_needs_stages():
    d = split_dict()
    del d["pipeline"][1]["stages"]
    assert refused(d).field == "pipeline[1].stages"


def test_gap_between_model_steps_names_the_stage():
    d = split_dict()
    d["pipeline"][2]["stages"] = ["dec1", "head"]
    e = refused(d)
    assert e.field == "pipeline[2].stages" and e.reason == "stage dec0 is run by no step"


def test_gap_at_the_end_names_the_stages():
    d = split_dict()
    d["pipeline"][2]["stages"] = ["dec0", "dec2"]
    e = refused(d)
    assert e.field == "pipeline[2].stages" and e.reason == "stages dec3..head are run by no step"


def test_overlap_names_both_steps():
    d = split_dict()
    d["pipeline"][1]["name"], d["pipeline"][2]["name"] = "a", "b"
    d["pipeline"][2]["stages"] = ["layer3", "head"]
    e = refused(d)
    assert e.field == "pipeline[2].stages"
    assert e.reason == "stages layer3..layer4 are run by both 'a' and 'b'"


def test_model_steps_out_of_order():
    d = split_dict()
    d["pipeline"][1]["stages"], d["pipeline"][2]["stages"] = ["dec0", "head"], ["stem", "layer4"]
    e = refused(d)
    assert e.field == "pipeline[2].stages" and "in order" in e.reason


def test_decode_only_pipeline_runs_no_model():
    d = split_dict()
    d["pipeline"] = d["pipeline"][:1]
    e = refused(d)
    assert e.field == "pipeline" and "run by no step" in e.reason


def test_decode_plus_sleep_steps_is_a_valid_test_pipeline():
    d = split_dict()
    d["pipeline"][1:] = [{"name": "busy", "kind": "sleep", "sleep_ms": 5, "gpus": [0, 0]},
                         {"name": "busy2", "kind": "sleep", "sleep_ms": 2.5, "gpus": [1]}]
    cfg = check(d)
    assert cfg.steps[1].sleep_ms == 5.0 and cfg.steps[2].stages is None


def test_sleep_step_with_partial_model_coverage_is_refused():
    d = split_dict()
    d["pipeline"][2] = {"name": "busy", "kind": "sleep", "sleep_ms": 5, "gpus": [1]}
    e = refused(d)
    assert e.field == "pipeline[1].stages" and e.reason == "stages dec0..head are run by no step"


def test_sleep_step_needs_positive_sleep_ms():
    d = split_dict()
    d["pipeline"][1:] = [{"name": "busy", "kind": "sleep", "gpus": [0]}]
    assert refused(d).field == "pipeline[1].sleep_ms"
    d["pipeline"][1]["sleep_ms"] = 0
    e = refused(d)
    assert e.field == "pipeline[1].sleep_ms" and "> 0" in e.reason


def test_sleep_ms_only_on_sleep_steps():
    d = split_dict()
    d["pipeline"][1]["sleep_ms"] = 3
    assert refused(d).field == "pipeline[1].sleep_ms"


def test_sleep_step_between_model_steps_is_refused():
    d = split_dict()
    d["pipeline"].insert(2, {"name": "busy", "kind": "sleep", "sleep_ms": 1, "gpus": [0]})
    e = refused(d)
    assert e.field == "pipeline[2]" and "between model steps" in e.reason


# --- GPUs and queues ------------------------------------------------------------------------

def test_gpus_must_not_be_empty():
    d = split_dict()
    d["pipeline"][1]["gpus"] = []
    e = refused(d)
    assert e.field == "pipeline[1].gpus" and "at least one" in e.reason


def test_gpu_ids_non_negative():
    d = split_dict()
    d["pipeline"][2]["gpus"] = [1, -1]
    e = refused(d)
    assert e.field == "pipeline[2].gpus[1]" and ">= 0" in e.reason


def test_repeated_gpu_id_means_several_replicas():
    d = split_dict()
    d["pipeline"][2]["gpus"] = [1, 1, 1]
    assert check(d).steps[2].gpus == [1, 1, 1]


def test_gpu_missing_from_machine_message():
    d = split_dict()
    d["pipeline"][2]["gpus"] = [1, 3]
    e = refused(d, gpu_count=2)
    assert e.field == "pipeline[2].gpus[1]"
    assert e.reason == ("GPU 3 is not present: this machine has 2 GPUs (ids 0..1); "
                        "run with --device cpu to run this placement on CPU")


def test_gpu_ids_are_logical_in_cpu_mode():
    d = split_dict()
    d["pipeline"][2]["gpus"] = [7]
    assert check(d, gpu_count=None).steps[2].gpus == [7]


def test_gpu_check_on_single_and_no_gpu_machines():
    assert "this machine has 1 GPU (id 0)" in refused(split_dict(), gpu_count=1).reason
    assert "this machine has no GPUs" in refused(split_dict(), gpu_count=0).reason


def test_unknown_queue():
    d = split_dict()
    d["pipeline"][1]["queue"] = "pergpu"
    e = refused(d)
    assert e.field == "pipeline[1].queue" and "did you mean 'per_gpu'" in e.reason


def test_per_gpu_queue_needs_a_consumer_on_each_producer_gpu():
    d = split_dict()
    d["pipeline"][0]["gpus"] = [0, 1]  # decode on GPU 1 too, but no encoder there
    e = refused(d)
    assert e.field == "pipeline[0].queue"
    assert "GPU 1" in e.reason and "'decode'" in e.reason and "'enc'" in e.reason


def test_force_per_gpu_sets_every_queue():
    d = split_dict()
    d["pipeline"][2]["gpus"] = [1, 0]
    cfg = check(d, force_per_gpu=True)
    assert [s.queue for s in cfg.steps] == ["per_gpu"] * 3


def test_force_per_gpu_refuses_a_placement_it_cannot_serve():
    d = split_dict()  # encoder on GPU 0 feeds a decoder only on GPU 1
    check(copy.deepcopy(d))
    e = refused(d, force_per_gpu=True)
    assert e.field == "pipeline[1].queue" and "-p" in e.reason and "GPU 0" in e.reason


def test_last_step_per_gpu_queue_is_accepted():
    d = split_dict()
    d["pipeline"][2]["queue"] = "per_gpu"
    check(d)


# --- files ----------------------------------------------------------------------------------

def test_video_paths_resolve_against_config_folder_then_cwd(tmp_path, monkeypatch):
    conf_dir, cwd = tmp_path / "conf", tmp_path / "cwd"
    (conf_dir / "clips").mkdir(parents=True)
    cwd.mkdir()
    for name in ("b.webm", "a.webm"):
        (conf_dir / "clips" / name).write_bytes(b"x")
    (cwd / "here.webm").write_bytes(b"x")
    monkeypatch.chdir(cwd)
    d = split_dict()
    d["videos"] = {"paths": ["clips/*.webm", "here.webm"]}
    path = conf_dir / "c.json"
    path.write_text(json.dumps(d))
    cfg = validate(load_config(path), None)
    assert resolve_videos(cfg) == [conf_dir / "clips" / "a.webm", conf_dir / "clips" / "b.webm",
                                   cwd / "here.webm"]


def test_missing_video_file_names_its_entry(tmp_path):
    d = split_dict()
    (tmp_path / "ok.webm").write_bytes(b"x")
    d["videos"] = {"paths": [str(tmp_path / "ok.webm"), str(tmp_path / "gone.webm")]}
    e = refused(d)
    assert e.field == "videos.paths[1]" and "no such file" in e.reason


def test_glob_matching_nothing_names_its_entry(tmp_path):
    d = split_dict()
    d["videos"] = {"paths": [str(tmp_path / "*.mp4")]}
    e = refused(d)
    assert e.field == "videos.paths[0]" and "matches no files" in e.reason


def test_a_file_as_the_synthetic_clips_folder_is_an_error_naming_it_and_the_flag(tmp_path):
    cache = tmp_path / "cache"
    cache.write_bytes(b"")
    with pytest.raises(VideoError) as e:
        resolve_videos(check(split_dict()), synthetic_root=cache)
    assert str(e.value).startswith(f"{cache}: ") and "(--video-cache)" in str(e.value)
    assert "Not a directory" in str(e.value)


def test_missing_checkpoint(tmp_path):
    d = split_dict()
    d["model"]["checkpoint"] = str(tmp_path / "FLAVR_2x.pth")
    assert refused(d).field == "model.checkpoint"
    (tmp_path / "FLAVR_2x.pth").write_bytes(b"x")  # found; its contents are another test's
    assert resolve_checkpoint(config_from_dict(d)) == tmp_path / "FLAVR_2x.pth"


# --- describe_placement ---------------------------------------------------------------------

def test_describe_placement_lists_steps_replicas_and_queues():
    d = split_dict()
    d["pipeline"][2]["gpus"] = [1, 1]
    d["pipeline"][2]["queue"] = "per_gpu"
    text = describe_placement(check(d), cpu_mode=True)
    assert "logical device ids" in text
    lines = text.splitlines()
    dec = next(line for line in lines if line.strip().startswith("dec "))
    assert "dec0..head" in dec and "GPU 1 x2" in dec and "sink" in dec and "always global" in dec
    decode = next(line for line in lines if line.strip().startswith("decode "))
    assert "per_gpu -> enc" in decode
    assert "GPU 1: dec x2" in lines


def test_describe_placement_names_the_weights_the_run_will_load():
    d = split_dict()
    d["model"]["checkpoint"] = None  # FLAVR 2x: the weights the project ships
    shipped = served_model(config_from_dict(d).model).shipped_weights()
    assert shipped is not None
    assert f"checkpoint {shipped} (the project's weights for this model)" in describe_placement(
        check(d))
    d["model"]["checkpoint"] = "random"
    assert "checkpoint none (random weights)" in describe_placement(check(d))


def test_describe_placement_marks_sleep_steps_as_test_steps():
    d = split_dict()
    d["pipeline"][1:] = [{"name": "busy", "kind": "sleep", "sleep_ms": 5, "gpus": [0]}]
    assert "TEST sleep 5 ms" in describe_placement(check(d))

