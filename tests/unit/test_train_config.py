"""The training config: defaults, the shipped files, overrides, and errors that name the field."""
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.train.__main__ import main
from pipeline.train.config import config_from_dict, load_train_config

SHIPPED = sorted((Path(__file__).resolve().parents[2] / "configs" / "train").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_train_config(path)
    assert cfg.name == path.stem


def test_overrides_set_fields_and_are_checked_like_the_file():
    cfg = load_train_config(SHIPPED[-1], ["optim.lr=1e-4", "train.steps=3000", "data.val_clips=[]"])
    assert cfg.optim.lr == 1e-4 and cfg.train.steps == 3000 and cfg.data.val_clips == []
    with pytest.raises(ConfigError) as e:
        load_train_config(None, ["optim.lrr=1"])
    assert e.value.field == "optim.lrr"


@pytest.mark.parametrize("data, field, words", [
    ({"optim": {"lr": 5.0}}, "optim.lr", "must be >= 1e-07 and <= 0.1; got 5"),
    ({"optim": {"lr": "fast"}}, "optim.lr", "must be a number"),
    ({"train": {"precision": "fp8"}}, "train.precision", "must be one of fp32, tf32, bf16"),
    ({"train": {"batch_size": 0}}, "train.batch_size", "must be a positive integer"),
    ({"train": {"compile": "yes"}}, "train.compile", "true or false"),
    ({"model": {"factor": 3}}, "model.factor", "must be one of 2, 4, 8"),
    ({"data": {"crop": 100}}, "data.crop", "multiple of 8"),
    ({"data": {"cropp": 64}}, "data.cropp", "did you mean 'crop'"),
    ({"synthetic": {"layers_min": 5, "layers_max": 3}}, "synthetic.layers_min", "more than"),
    ({"data": {"photo_size": [720, -1]}}, "data.photo_size[1]", "must be >= 16"),
])
def test_a_bad_field_is_named_in_the_error(data, field, words):
    with pytest.raises(ConfigError) as e:
        config_from_dict(data)
    assert e.value.field == field and words in str(e.value)


def test_the_command_reports_a_bad_config_in_one_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: -1\n")
    assert main(["-c", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: config field 'optim.lr': must be >= 1e-07 and <= 0.1; got -1"
