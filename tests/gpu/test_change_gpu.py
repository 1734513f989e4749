"""Change-based inference through the pipeline on CUDA: the change state (whole windows, tile batch,
centre frames, each with its own row count) handed between split steps through CUDA IPC slots on
one GPU (read in place) and across two (peer copies), against the whole model on the same clip."""
import pytest
import torch

from pipeline.config import config_from_dict
from pipeline.media.synthetic import write_moving_fraction_clip
from pipeline.serving.orchestrator import RunOptions, run

SIZE = 128


def config(clip, steps, name):
    return config_from_dict({
        "name": name, "device": "cuda", "videos": {"paths": [str(clip)]},
        "frames_per_request": 6,
        "model": {"factor": 2, "precision": "fp32", "checkpoint": "random",
                  "change_based": {"tile": 32, "halo": 16, "fallback": 4.0}},
        "pipeline": steps})


def outputs(clip, steps, name, tmp_path):
    result = run(config(clip, steps, name), RunOptions(
        mean_interval_ms=0, videos=3, warmup=1, logs_root=str(tmp_path / name), progress=False,
        save_outputs=True, save_tensors=True))
    assert result.error is None, result.error
    assert all(r["status"] == "ok" for r in result.rows), result.rows
    saved = [torch.load(p) for p in sorted((result.run_dir / "outputs").glob("*.pt"))]
    return saved, [r["computed_fraction"] for r in result.rows]


def placements(encoder_gpu, decoder_gpu):
    whole = [{"name": "decode", "kind": "decode", "gpus": [0], "queue": "per_gpu"},
             {"name": "flavr", "kind": "model", "stages": ["stem", "head"], "gpus": [0]}]
    split = [{"name": "decode", "kind": "decode", "gpus": [0], "queue": "per_gpu"},
             {"name": "encoder", "kind": "model", "stages": ["stem", "layer4"],
              "gpus": [encoder_gpu]},
             {"name": "decoder", "kind": "model", "stages": ["dec0", "head"],
              "gpus": [decoder_gpu]}]
    return whole, split


def check_split_against_whole(tmp_path, decoder_gpu):
    clip = write_moving_fraction_clip(tmp_path / "patch.mp4", SIZE, SIZE, 12, 24, "h264", 2, 0.05)
    whole, split = placements(0, decoder_gpu)
    w_out, w_frac = outputs(clip, whole, "whole", tmp_path)
    s_out, s_frac = outputs(clip, split, "split", tmp_path)
    assert w_frac == s_frac and all(0 < f < 1 for f in w_frac), w_frac
    for a, b in zip(w_out, s_out):
        # Separate processes may pick different cuDNN algorithms (TF32): close, not equal.
        torch.testing.assert_close(a, b, rtol=0, atol=2e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_split_on_one_gpu_reads_the_change_state_in_place_and_agrees_with_whole(tmp_path):
    check_split_against_whole(tmp_path, decoder_gpu=0)


@pytest.mark.gpu2
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_a_split_over_two_gpus_copies_the_change_state_and_agrees_with_whole(tmp_path):
    check_split_against_whole(tmp_path, decoder_gpu=1)
