"""gpus entries that name nodes ("node1:0"): what the Ray launcher accepts, what the local one
refuses, and how each refusal names the field at fault."""
import pytest

from pipeline.config import config_from_dict, validate
from pipeline.config.schema import split_gpu
from pipeline.errors import ConfigError
from pipeline.serving.plan import RunOptions, plan_run
from pipeline.serving.topology import Topology


def split_dict(launcher: str = "ray", enc=("n1:0",), dec=("n2:0",), queue="global") -> dict:
    return {
        "name": "t", "launcher": launcher,
        "videos": {"synthetic": {"count": 2, "width": 64, "height": 64, "frames": 8}},
        "frames_per_request": 4,
        "model": {"factor": 2, "precision": "fp32"},
        "pipeline": [
            {"name": "decode", "kind": "decode", "gpus": list(enc), "queue": "per_gpu"},
            {"name": "enc", "kind": "model", "stages": ["stem", "layer4"], "gpus": list(enc),
             "queue": queue},
            {"name": "dec", "kind": "model", "stages": ["dec0", "head"], "gpus": list(dec)},
        ],
    }


def refused(d: dict, gpu_count=None, launcher=None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        validate(config_from_dict(d), gpu_count, launcher=launcher)
    return info.value


def test_named_nodes_are_accepted_by_the_ray_launcher_whatever_this_machine_has():
    cfg = validate(config_from_dict(split_dict()), gpu_count=0)
    assert cfg.steps[2].gpus == ["n2:0"]
    topo = Topology.from_config(cfg)
    dec = topo.replicas[2][0]
    assert (dec.node, dec.gpu, dec.name) == ("n2", 0, "dec[0]@n2.gpu0")
    assert topo.named_nodes


def test_split_gpu_reads_both_forms():
    assert split_gpu(3) == (None, 3)
    assert split_gpu("gpu-host.a:12") == ("gpu-host.a", 12)


def test_the_local_launcher_refuses_a_named_node_naming_the_entry():
    e = refused(split_dict(launcher="local"))
    assert e.field == "pipeline[0].gpus[0]"
    assert "'n1:0' names a node" in e.reason and "launcher ray" in e.reason


def test_the_launcher_flag_decides_over_the_config():
    e = refused(split_dict(launcher="ray"), launcher="local")
    assert e.field == "pipeline[0].gpus[0]" and "the local launcher" in e.reason
    plan = plan_run(config_from_dict(split_dict(launcher="local")),
                    RunOptions(launcher="ray", device="cpu"))
    assert plan.launcher == "ray"


@pytest.mark.parametrize("entry, words", [
    ("n1", "'node:id'"), ("n1:", "'node:id'"), (":0", "'node:id'"), ("n 1:0", "'node:id'"),
    ("n1:x", "'node:id'"), ("n1:2000", "GPU id of 'n1:2000' must be")])
def test_malformed_entries_are_refused_at_load_naming_the_entry(entry, words):
    d = split_dict(dec=(entry,))
    with pytest.raises(ConfigError) as info:
        config_from_dict(d)
    assert info.value.field == "pipeline[2].gpus[0]" and words in info.value.reason


def test_per_gpu_queues_tell_gpu_0_of_two_nodes_apart():
    cfg = validate(config_from_dict(split_dict(enc=("n1:0", "n2:0"), dec=("n1:0", "n2:0"),
                                               queue="per_gpu")), None)
    topo = Topology.from_config(cfg)
    assert topo.input_keys(2) == ["n1:0", "n2:0"]
    assert [r.name for r in topo.producers_for(2, "n2:0")] == ["enc[1]@n2.gpu0"]
    assert topo.queue_names(2) == {"n1:0": "dec.in[n1:0]", "n2:0": "dec.in[n2:0]"}


def test_a_per_gpu_queue_needs_a_consumer_on_the_same_node():
    e = refused(split_dict(enc=("n1:0",), dec=("n2:0",), queue="per_gpu"))
    assert e.field == "pipeline[1].queue" and "n1:0" in e.reason


def test_ray_address_flag_and_config_field():
    cfg = config_from_dict({**split_dict(), "ray": {"address": "head:6379"}})
    assert cfg.ray.address == "head:6379"
    assert RunOptions(ray_address="other:6379").ray_address == "other:6379"
    with pytest.raises(ConfigError) as info:
        config_from_dict({**split_dict(), "ray": {"adress": "x"}})
    assert info.value.field == "ray.adress" and "did you mean 'address'" in info.value.reason
