"""Timing on GPUs, end to end: a request is complete when its last GPU work completes (stamped by
that runner, per GPU, in completion order), and its per-step columns add up to its latency."""
from __future__ import annotations

import os

import pytest
import torch

from pipeline.analysis.requests_csv import read_rows
from pipeline.config import config_from_dict
from pipeline.serving.orchestrator import RunOptions, run

BACKEND = os.environ.get("FLAVR_DECODE_BACKEND", "auto")  # pyav where DALI is not installed


def gpu_config(steps, videos, resolution=None, name="timing"):
    return config_from_dict({
        "name": name, "device": "cuda", "videos": videos, "frames_per_request": 4,
        "model": {"factor": 2, "precision": "bf16", "resolution": resolution,
                  "channels_last": True},
        "pipeline": steps})


def options(tmp_path, **over):
    base = dict(mean_interval_ms=0, videos=12, warmup=2, queue_size=64, mps="off",
                logs_root=str(tmp_path / "logs"), progress=False, start_timeout_s=300,
                stall_timeout_s=120, video_cache=str(tmp_path / "videos"),
                decode_backend=BACKEND)
    base.update(over)
    return RunOptions(**base)


def clips(tmp_path, sizes):
    from pipeline.media.synthetic import write_clip

    return [str(write_clip(tmp_path / "v" / f"c{k}-{w}x{h}.webm", width=w, height=h, frames=4,
                           fps=24, seed=k)) for k, (w, h) in enumerate(sizes)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_columns_add_up_to_the_latency_on_a_gpu_split(tmp_path):
    steps = [{"name": "decode", "kind": "decode", "gpus": [0]},
             {"name": "encoder", "kind": "model", "stages": ["stem", "layer4"], "gpus": [0]},
             {"name": "decoder", "kind": "model", "stages": ["dec0", "head"], "gpus": [0]}]
    cfg = gpu_config(steps, {"synthetic": {"count": 2, "width": 256, "height": 256, "frames": 4,
                                           "fps": 24, "codec": "vp9", "seed": 0}}, [256, 256])
    result = run(cfg, options(tmp_path, videos=24))
    assert result.error is None, result.error
    ok = [r for r in read_rows(result.run_dir / "requests.csv") if r.status == "ok" and not r.warmup]
    assert len(ok) == 24
    mean = sum(r.latency_s for r in ok) / len(ok)
    assert all(abs(r.latency_s - r.accounted_s()) < 0.01 * mean for r in ok)
    # All due at once: batches queue on the runners' streams behind earlier ones, and that wait
    # is the step's own, not the next step's or the sink's.
    assert max(r.steps["encoder"].stream_wait_s for r in ok) > 0
    assert not [n for n in result.notices if n.startswith("had to terminate")], result.notices


@pytest.mark.gpu2
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_a_small_request_on_one_gpu_is_not_stamped_behind_a_large_one_on_the_other(tmp_path):
    # 720p clips and 176x144 clips on two replicas (per-GPU queues from two decode workers):
    # small requests finished on one GPU must not wait for 720p work on the other.
    steps = [{"name": "decode", "kind": "decode", "gpus": [0, 1], "queue": "per_gpu"},
             {"name": "flavr", "kind": "model", "stages": ["stem", "head"], "gpus": [0, 1]}]
    paths = clips(tmp_path, [(1280, 720)] + [(176, 144)] * 5)
    result = run(gpu_config(steps, {"paths": paths}), options(tmp_path, videos=60,
                                                              mean_interval_ms=50))
    assert result.error is None, result.error
    rows = [r for r in read_rows(result.run_dir / "requests.csv") if not r.warmup]
    assert all(r.status == "ok" for r in rows)
    big = [r for r in rows if "1280x720" in r.video]
    small = [r for r in rows if "176x144" in r.video]
    mean = lambda values: sum(values) / len(values)
    big_compute = mean([b.steps["flavr"].compute_s for b in big])
    assert mean([s.steps["flavr"].compute_s for s in small]) < big_compute / 5
    # A small request waits on its own GPU at most (now and then behind a 720p batch there);
    # stamped in one FIFO with the other GPU's 720p work, it waited ~66 ms on two H200s.
    assert mean([s.latency_s for s in small]) < big_compute / 2, (
        [round(s.latency_s * 1e3, 1) for s in small], big_compute)
    assert all(abs(r.latency_s - r.accounted_s()) < 0.01 * mean([x.latency_s for x in rows])
               for r in rows)
