"""The Ray launcher on GPUs, on a real Ray cluster of two nodes on this machine: a split placement
run by Ray actors gives the local launcher's outputs. Within one node its hand-off is CUDA IPC
(on one GPU: read in place, nothing copied); between two nodes, on two GPUs of this machine,
NCCL carries it (pulled and timed), where the local launcher makes a peer copy."""
from __future__ import annotations

import os

import pytest
import torch

ray = pytest.importorskip("ray", reason="the Ray launcher needs ray (pip install -e '.[ray]')")

from pipeline.analysis.requests_csv import read_rows  # noqa: E402
from pipeline.config import config_from_dict  # noqa: E402
from pipeline.serving.orchestrator import RunOptions, run  # noqa: E402
from ray_helpers import local_cluster  # noqa: E402
from run_helpers import alive, process_table, saved_outputs, wait_for  # noqa: E402

BACKEND = os.environ.get("FLAVR_DECODE_BACKEND", "auto")
SIZE = 128
STORE = 100 * 2**20  # each node's object store
REQUESTS = 6  # measured, after one warm-up


def split(encoder_gpu, decoder_gpu) -> list[dict]:
    return [{"name": "decode", "kind": "decode", "gpus": [encoder_gpu], "queue": "per_gpu"},
            {"name": "encoder", "kind": "model", "stages": ["stem", "layer4"],
             "gpus": [encoder_gpu]},
            {"name": "decoder", "kind": "model", "stages": ["dec0", "head"],
             "gpus": [decoder_gpu]}]


def make_config(steps, name: str, launcher: str, address: str | None = None):
    return config_from_dict({
        "name": name, "device": "cuda", "launcher": launcher, "ray": {"address": address},
        "videos": {"synthetic": {"count": 2, "width": SIZE, "height": SIZE, "frames": 6,
                                 "fps": 24, "codec": "vp9", "seed": 1}},
        "frames_per_request": 4,
        "model": {"factor": 2, "precision": "fp32", "resolution": [SIZE, SIZE],
                  "checkpoint": "random"},
        "pipeline": steps})


def options(tmp_path) -> RunOptions:
    return RunOptions(mean_interval_ms=50, videos=REQUESTS, warmup=1, queue_size=16, mps="off",
                      logs_root=str(tmp_path / "logs"), progress=False, start_timeout_s=300,
                      stall_timeout_s=120, video_cache=str(tmp_path / "videos"),
                      decode_backend=BACKEND, save_outputs=True, save_tensors=True)


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on this machine that each count one GPU. Ray only counts GPUs: an actor
    uses the GPU its config names (`n2:1` is GPU 1), so on a one-GPU machine only n1 is used."""
    node = dict(num_cpus=4, num_gpus=1, object_store_memory=STORE)
    with local_cluster(dict(node, resources={"n1": 10}, include_dashboard=False),
                       dict(node, resources={"n2": 10})) as c:
        yield c


def _run_both(tmp_path, ray_steps, local_steps, cluster):
    on_ray = run(make_config(ray_steps, "on-ray", "ray", cluster.address), options(tmp_path))
    assert on_ray.error is None, on_ray.error
    for name, p in process_table(on_ray.run_dir).items():  # its actors are gone
        if name != "main":
            wait_for(lambda: not alive(p["pid"]), 30, f"{name} to be gone")
    local = run(make_config(local_steps, "local", "local"), options(tmp_path))
    assert local.error is None, local.error
    for result in (on_ray, local):
        ok = [r for r in read_rows(result.run_dir / "requests.csv") if r.status == "ok"]
        assert len(ok) == REQUESTS + 1, result.rows
    a, b = saved_outputs(on_ray), saved_outputs(local)
    assert a.keys() == b.keys() and len(a) == REQUESTS + 1
    for key in a:
        # One model and one seed on the same GPU kind; cuDNN's autotuning may pick other
        # algorithms from run to run, so equal within float error, not bit for bit.
        torch.testing.assert_close(a[key], b[key], atol=2e-3, rtol=0, msg=key)
    return on_ray, local


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_split_within_one_node_reads_its_inputs_in_place_as_the_local_launcher_does(
        tmp_path, cluster):
    on_ray, local = _run_both(tmp_path, split("n1:0", "n1:0"), split(0, 0), cluster)
    for result in (on_ray, local):  # CUDA IPC on one GPU: nothing copied, nothing pulled
        assert all(row["decoder.handoff_s"] == 0 for row in result.rows)


@pytest.mark.gpu2
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_a_split_across_two_nodes_pulls_its_inputs_by_nccl_and_gives_the_same_outputs(
        tmp_path, cluster):
    on_ray, local = _run_both(tmp_path, split("n1:0", "n2:1"), split(0, 1), cluster)
    for result in (on_ray, local):  # a pull on Ray, a peer copy locally: each timed
        assert all(row["decoder.handoff_s"] > 0 for row in result.rows)
