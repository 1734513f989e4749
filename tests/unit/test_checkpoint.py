"""FLAVR checkpoints: the released files, plain state dicts, the project's own format and
.safetensors files."""

import warnings

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from models import base
from models.flavr.checkpoint import (
    PROJECT_FORMAT,
    build_model,
    infer_factor,
    load_state,
    save_checkpoint,
)
from pipeline.errors import CheckpointError


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def model4():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights are the point here
        return build_model(4, seed=0)


@pytest.fixture(scope="module")
def released4(model4, tmp_path_factory):
    """A 4x file in the released layout, training entries included, as the authors published it."""
    path = tmp_path_factory.mktemp("ckpt") / "FLAVR_4x.pth"
    state = {"module." + k: v for k, v in model4.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 200, "best_psnr": 32.1, "lr": 2e-5,
                "optimizer": {"state": {}, "param_groups": [{"lr": 2e-5, "params": [0, 1]}]}}, path)
    return path


def test_released_file_loads_with_its_factor_taken_from_the_head(released4, model4):
    model = build_model(checkpoint=released4)
    assert model.config.factor == 4 and model.config.encoder_bias
    assert same_weights(model, model4)


def test_released_layout_save_then_load_round_trips_exactly(model4, tmp_path):
    path = save_checkpoint(model4, tmp_path / "out.pth", layout="released")
    raw = torch.load(path, weights_only=True)
    assert list(raw) == ["state_dict"]
    assert all(k.startswith("module.") for k in raw["state_dict"])
    assert same_weights(build_model(checkpoint=path), model4)


def test_project_format_round_trips_and_needs_no_unpickling(model4, tmp_path):
    path = save_checkpoint(model4, tmp_path / "out.pth")
    raw = torch.load(path, weights_only=True)  # plain types only
    assert raw["format"] == PROJECT_FORMAT and raw["factor"] == 4
    assert same_weights(build_model(4, checkpoint=path), model4)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_plain_state_dict_loads_with_or_without_module_prefix(prefix, model4):
    state = {prefix + k: v for k, v in model4.state_dict().items()}
    assert same_weights(build_model(checkpoint=state), model4)


def test_2x_checkpoint_builds_a_2x_model_without_encoder_bias():
    state = build_model(2, seed=1).state_dict()
    assert infer_factor(state) == 2
    model = build_model(checkpoint=state)
    assert model.config.factor == 2 and not model.config.encoder_bias


def test_asking_for_another_factor_names_the_file_and_the_factor_found(released4):
    with pytest.raises(CheckpointError) as err:
        build_model(factor=2, checkpoint=released4)
    assert str(released4) in str(err.value) and "4x" in str(err.value)


def test_missing_keys_are_listed_with_a_count(model4, released4, tmp_path):
    state = torch.load(released4, weights_only=True)["state_dict"]
    del state["module.decoder.2.upconv.1.attn_layer.0.bias"]
    path = tmp_path / "damaged.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as err:
        build_model(checkpoint=path)
    message = str(err.value)
    assert str(path) in message
    assert "missing 1 (decoder.2.upconv.1.attn_layer.0.bias)" in message and "unexpected 0" in message


def test_unexpected_keys_are_listed_with_a_count(model4):
    state = dict(model4.state_dict())
    state.update({f"extra.{i}": torch.zeros(1) for i in range(7)})
    with pytest.raises(CheckpointError, match=r"unexpected 7 \(extra.0, .*, \.\.\.\)"):
        build_model(checkpoint=state)


def test_wrong_tensor_shape_is_refused(model4):
    state = dict(model4.state_dict())
    state["encoder.layer1.0.conv1.0.weight"] = torch.zeros(64, 64, 3, 3, 1)
    with pytest.raises(CheckpointError, match="encoder.layer1.0.conv1.0.weight"):
        build_model(checkpoint=state)


def test_a_head_that_is_not_2_4_or_8x_is_refused():
    with pytest.raises(CheckpointError, match="output channels"):
        infer_factor({"outconv.1.weight": torch.zeros(6, 64, 7, 7)})


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "FLAVR_2x.pth"
    with pytest.raises(CheckpointError, match="FLAVR_2x.pth: checkpoint file not found"):
        load_state(path)


def test_released_file_with_numpy_values_is_refused_unless_trusted(model4, tmp_path):
    # Some training scripts stored metrics as numpy scalars, which weights_only=True refuses;
    # only full unpickling reads them, and that can run code from the file.
    path = tmp_path / "np.pth"
    state = {"module." + k: v for k, v in model4.state_dict().items()}
    torch.save({"state_dict": state, "best_psnr": np.float64(32.1)}, path)
    with pytest.raises(CheckpointError) as err:
        load_state(path)
    assert str(path) in str(err.value) and "--trust-checkpoint" in str(err.value)
    with pytest.warns(UserWarning, match="trusted as asked"):
        loaded = load_state(path, trust=True)
    assert torch.equal(loaded["outconv.1.weight"], model4.state_dict()["outconv.1.weight"])


def test_random_weights_are_announced_once_per_process(monkeypatch):
    monkeypatch.setattr(base, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_model(2)
        build_model(2)
    messages = [str(w.message) for w in caught if "random weights" in str(w.message)]
    assert len(messages) == 1 and "--checkpoint" in messages[0]


def test_seed_makes_random_weights_reproducible_without_touching_global_rng():
    before = torch.get_rng_state()
    assert same_weights(build_model(8, seed=3), build_model(8, seed=3))
    assert torch.equal(torch.get_rng_state(), before)


def test_safetensors_round_trips_with_the_models_own_key_names_and_its_factor(model4, tmp_path):
    path = save_checkpoint(model4, tmp_path / "flavr-4x.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert list(f.keys()) == sorted(model4.state_dict())
        assert f.metadata()["factor"] == "4"
    assert same_weights(build_model(checkpoint=path), model4)


def test_safetensors_of_a_bare_state_dict_loads_and_says_its_factor_by_its_head(model4, tmp_path):
    # What a training command writes: the model's state dict as it is, no metadata.
    path = tmp_path / "trained.safetensors"
    save_file({k: v.contiguous() for k, v in model4.state_dict().items()}, str(path))
    model = build_model(checkpoint=path)
    assert model.config.factor == 4 and same_weights(model, model4)


def test_safetensors_whose_metadata_disagrees_with_its_head_is_refused(model4, tmp_path):
    path = tmp_path / "mislabelled.safetensors"
    save_file({k: v.contiguous() for k, v in model4.state_dict().items()}, str(path),
              metadata={"factor": "2"})
    with pytest.raises(CheckpointError, match="says factor 2 but its head"):
        build_model(checkpoint=path)
