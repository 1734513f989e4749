"""model.change_based in the config: off unless given, converted once into the model's
ChangeConfig with its defaults, and refused with the dotted field where it cannot run."""
import pytest
from test_config import check, refused, split_dict

from models.flavr.change_based import ChangeConfig
from pipeline.config.change import change_config


def with_change(d: dict, **knobs) -> dict:
    d["model"]["change_based"] = knobs
    return d


def test_change_based_is_off_unless_given():
    assert change_config(check(split_dict()).model) is None


def test_an_empty_mapping_turns_it_on_with_the_models_defaults():
    cfg = check(with_change(split_dict()))
    assert change_config(cfg.model) == ChangeConfig()
    assert cfg.model.change_based.check is False


def test_the_knobs_reach_the_models_config():
    cfg = check(with_change(split_dict(), threshold=0.1, tile=32, halo=8, feather=4, fallback=0.7,
                            refresh=4, gates="own"))
    assert change_config(cfg.model) == ChangeConfig(0.1, 32, 8, 4, 0.7, 4, "own")


@pytest.mark.parametrize("knobs, field", [
    ({"tile": 20}, "model.change_based.tile"),  # not a multiple of 8
    ({"halo": 12}, "model.change_based.halo"),
    ({"halo": 8, "feather": 16}, "model.change_based.feather"),  # wider than the halo
    ({"threshold": 1.5}, "model.change_based.threshold"),
    ({"refresh": 0}, "model.change_based.refresh"),
    ({"gates": "mean"}, "model.change_based.gates"),
    ({"tiles": 64}, "model.change_based.tiles"),  # unknown key
])
def test_a_bad_knob_is_refused_naming_its_field(knobs, field):
    assert refused(with_change(split_dict(), **knobs)).field == field


def test_a_model_without_change_based_inference_is_refused():
    d = with_change(split_dict())
    d["model"]["name"] = "r2plus1d"
    d["frames_per_request"] = d["videos"]["synthetic"]["frames"] = 16
    d["pipeline"][1:] = [{"name": "r", "kind": "model", "stages": ["stem", "head"], "gpus": [0]}]
    err = refused(d)
    assert err.field == "model.change_based" and "FLAVR only" in str(err)


@pytest.mark.parametrize("switch", ["compile", "cuda_graphs"])
def test_compiling_a_tile_batch_of_changing_size_is_refused(switch):
    d = with_change(split_dict())
    d["model"][switch] = True
    assert refused(d).field == f"model.{switch}"


def streams_dict(**first_step) -> dict:
    d = with_change(split_dict())
    d["videos"]["streams"] = {"count": 4}
    d["pipeline"][1:] = [{"name": "flavr", "kind": "model", "stages": ["stem", "head"],
                          "gpus": [0, 1]}]
    d["pipeline"][0].update(first_step)
    return d


def test_streams_that_a_global_queue_could_move_between_replicas_are_refused():
    err = refused(streams_dict(queue="global"))
    assert err.field == "pipeline[0].queue" and "one replica" in str(err)


def test_streams_kept_on_one_replica_per_gpu_by_per_gpu_queues_run():
    check(streams_dict(queue="per_gpu", gpus=[0, 1]))


def test_streams_sharing_a_gpus_queue_between_two_replicas_are_refused():
    d = streams_dict(queue="per_gpu", gpus=[0])
    d["pipeline"][1]["gpus"] = [0, 0]
    assert refused(d).field == "pipeline[1].gpus"


def test_clip_requests_run_on_any_placement():
    d = with_change(split_dict())
    d["pipeline"][1]["gpus"] = [0, 0]
    d["pipeline"][0]["queue"] = "global"
    check(d)
