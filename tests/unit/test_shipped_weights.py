"""The weights the project ships are the default; random weights only on request."""
import pytest

from models.base import WEIGHTS_DIR
from models.flavr.served import FLAVRServed
from pipeline.config import config_from_dict, resolve_checkpoint

SHIPPED = WEIGHTS_DIR / "flavr-2x.safetensors"


def config(**model):
    return config_from_dict({
        "name": "t", "videos": {"synthetic": {"count": 1}}, "model": model,
        "pipeline": [{"name": "decode", "kind": "decode", "gpus": [0]},
                     {"name": "m", "kind": "model", "stages": ["stem", "head"], "gpus": [0]}]})


def test_the_repository_ships_flavr_2x_weights_that_load():
    assert SHIPPED.is_file()
    FLAVRServed(2).check_checkpoint(SHIPPED)  # tensors of the right names and shapes


def test_a_config_without_checkpoint_gets_the_shipped_weights():
    assert resolve_checkpoint(config()) == SHIPPED


@pytest.mark.parametrize("factor", [4, 8])
def test_a_factor_without_shipped_weights_runs_random(factor):
    assert resolve_checkpoint(config(factor=factor)) is None


def test_random_weights_only_when_asked_for():
    assert resolve_checkpoint(config(checkpoint="random")) is None
