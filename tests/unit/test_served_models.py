"""The model interface as the pipeline uses it: the registry, how a request's frames become rows
of model input, what a request yields, the frame size policy, weights and saved outputs, for
FLAVR and R(2+1)D-18 alike."""
import json
import warnings

import pytest
import torch
from r2plus1d_helpers import random_model

from models.flavr.served import FLAVRServed
from models.r2plus1d.served import R2Plus1DServed
from models.registry import MODEL_NAMES, model_class, served_model
from pipeline.config import ModelConfig, config_from_dict, validate
from pipeline.errors import CheckpointError, ConfigError


def test_the_registry_names_both_models_and_refuses_others():
    assert MODEL_NAMES == ("flavr", "r2plus1d")
    assert model_class("r2plus1d") is R2Plus1DServed
    assert served_model(ModelConfig(name="flavr", factor=4)) == FLAVRServed(factor=4)
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        model_class("resnet")


def test_flavr_makes_sliding_windows_and_returns_every_frame_with_the_new_ones():
    flavr = FLAVRServed(factor=4)
    frames = torch.rand(6, 3, 16, 24)
    rows = flavr.make_rows(frames)
    assert rows.shape == (5, 3, 4, 16, 24) == (flavr.rows_per_request(6), *flavr.row_shape(16, 24))
    assert torch.equal(rows[0, :, 0], frames[0]) and torch.equal(rows[0, :, 1], frames[0])
    assert flavr.outputs_per_request(6) == 5 * 4 + 1 and flavr.output_unit == "frames"
    assert flavr.input_size is None  # each clip's own size, padded inside the model


def test_r2plus1d_makes_consecutive_clips_of_16_and_classifies_each():
    r21 = R2Plus1DServed()
    frames = torch.rand(32, 3, 8, 8)
    rows = r21.make_rows(frames)
    assert rows.shape == (2, 3, 16, 8, 8) == (r21.rows_per_request(32), *r21.row_shape(8, 8))
    assert torch.equal(rows[1, :, 0], frames[16]) and torch.equal(rows[0, :, 15], frames[15])
    assert r21.outputs_per_request(32) == 2 and r21.output_unit == "clips"
    assert r21.input_size == (112, 112)


@pytest.mark.parametrize("frames", [8, 20, 33])
def test_r2plus1d_refuses_a_request_that_is_not_whole_clips(frames):
    reason = R2Plus1DServed().check_request(frames)
    assert f"got {frames}" in reason and "multiple of 16" in reason
    assert R2Plus1DServed().check_request(48) is None


def r2plus1d_config(**over) -> dict:
    d = {"name": "r", "device": "cpu",
         "videos": {"synthetic": {"count": 1, "width": 32, "height": 32, "frames": 32}},
         "frames_per_request": 16, "model": {"name": "r2plus1d"},
         "pipeline": [{"name": "decode", "kind": "decode", "gpus": [0]},
                      {"name": "front", "kind": "model", "stages": ["stem", "layer1"], "gpus": [0]},
                      {"name": "back", "kind": "model", "stages": ["layer2", "head"], "gpus": [0]}]}
    d.update(over)
    return d


def test_a_config_checks_stages_and_requests_against_the_chosen_model():
    validate(config_from_dict(r2plus1d_config()), None)
    with pytest.raises(ConfigError) as err:
        validate(config_from_dict(r2plus1d_config(frames_per_request=20)), None)
    assert err.value.field == "frames_per_request" and "multiple of 16" in err.value.reason
    d = r2plus1d_config()
    d["pipeline"][2]["stages"] = ["layer2", "dec4"]  # a FLAVR stage
    with pytest.raises(ConfigError) as err:
        validate(config_from_dict(d), None)
    assert err.value.field == "pipeline[2].stages[1]"
    assert "stages are stem, layer1, layer2, layer3, layer4, head" in err.value.reason


def test_a_resolution_below_the_models_minimum_is_refused_by_field():
    d = r2plus1d_config()
    d["model"] = {"name": "flavr", "resolution": [6, 64]}
    d["pipeline"][1:] = [{"name": "m", "kind": "model", "stages": ["stem", "head"], "gpus": [0]}]
    d["frames_per_request"] = 4
    with pytest.raises(ConfigError) as err:
        validate(config_from_dict(d), None)
    assert err.value.field == "model.resolution" and "at least 8" in err.value.reason


def test_r2plus1d_weights_round_trip_through_safetensors(tmp_path):
    r21 = R2Plus1DServed()
    model = random_model()
    path = r21.save_checkpoint(model, tmp_path / "r21.safetensors")
    r21.check_checkpoint(path)
    loaded = r21.build("cpu", checkpoint=path)  # as a runner builds it: fp32, eval mode
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                  loaded.state_dict().values()))
    x = torch.rand(1, 3, 16, 16, 16)
    assert torch.equal(loaded(x), model(x))  # the normalisation constants are set after loading


def test_a_flavr_checkpoint_is_refused_by_r2plus1d_naming_the_file(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights
        flavr = FLAVRServed().load("cpu", seed=0)
    path = FLAVRServed().save_checkpoint(flavr, tmp_path / "flavr.safetensors")
    with pytest.raises(CheckpointError) as err:
        R2Plus1DServed().check_checkpoint(path)
    assert str(path) in str(err.value) and "R(2+1)D-18" in str(err.value)
    assert "\n" not in str(err.value)


def test_r2plus1d_saves_top_classes_as_json(tmp_path):
    scores = torch.zeros(2, 400)
    scores[0, 7], scores[1, 399] = 5.0, 9.0
    path = R2Plus1DServed().save_output(scores, "/clips/walk.webm", 32, tmp_path / "request000003")
    assert path.name == "request000003-walk.json"
    saved = json.loads(path.read_text())
    assert saved["video"] == "/clips/walk.webm" and saved["classes"] == 400
    assert [c["top1"] for c in saved["clips"]] == [7, 399]
    assert [c["first_frame"] for c in saved["clips"]] == [0, 16]
    top5 = saved["clips"][0]["top5"]
    assert len(top5) == 5 and top5[0]["class"] == 7
    assert top5[0]["p"] > top5[1]["p"] and sum(e["p"] for e in top5) < 1
