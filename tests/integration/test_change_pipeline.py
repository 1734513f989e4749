"""Change-based inference through the real pipeline on the CPU: static-camera clips decoded by the
decode worker, tiles planned by the step that runs the stem, the change state handed between the
steps of a split through slot pools, frames composed at the head, and the per-request columns
(computed_fraction, windows_whole, psnr_vs_full_db, and against ground truth) in requests.csv.

48x48 frames, 16-pixel tiles with an 8-pixel halo: a 3x3 grid of tiles, each run on a 32x32 crop
(fallback 4: tiles even where their crops cover more than the frame, so a small frame still has
some). The moving clip changes 4 of the 9 tiles in its first two windows and none in its third."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.flavr.served import FLAVRServed
from models.flavr.tiles import TileGrid, block_change, pad_frames, tiles_to_compute
from pipeline.analysis.quality import psnr, quantize
from pipeline.config import config_from_dict
from pipeline.media.decode import FrameDecoder
from pipeline.media.synthetic import write_moving_fraction_clip
from pipeline.media.truth import truth_path
from pipeline.serving.orchestrator import RunOptions, run

SIZE, TILE, HALO, THRESHOLD = 48, 16, 8, 0.04
FRAMES = 4  # per request: 3 windows of a clip, 4 of a stream's segment
GRID = TileGrid(SIZE, SIZE, TILE, HALO)
N_TILES = GRID.shape[0] * GRID.shape[1]
WHOLE = [{"name": "decode", "kind": "decode", "gpus": [0], "queue": "per_gpu"},
         {"name": "flavr", "kind": "model", "stages": ["stem", "head"], "gpus": [0]}]
SPLIT = [{"name": "decode", "kind": "decode", "gpus": [0], "queue": "per_gpu"},
         {"name": "encoder", "kind": "model", "stages": ["stem", "layer3"], "gpus": [0],
          "pool_slots": 2},
         {"name": "decoder", "kind": "model", "stages": ["layer4", "head"], "gpus": [1],
          "pool_slots": 2}]


def config(clips, steps, name, streams=None, check=True):
    videos = {"paths": [str(c) for c in clips]}
    if streams:
        videos["streams"] = {"count": streams}
    return config_from_dict({
        "name": name, "device": "cpu", "videos": videos, "frames_per_request": FRAMES,
        "model": {"factor": 2, "precision": "fp32", "checkpoint": "random",
                  "change_based": {"threshold": THRESHOLD, "tile": TILE, "halo": HALO,
                                   "fallback": 4.0, "check": check}},
        "pipeline": steps})


def options(tmp_path, n, check_outputs=False):
    return RunOptions(mean_interval_ms=0, videos=n, warmup=0, logs_root=str(tmp_path / "logs"),
                      progress=False, cpu_threads=1, start_timeout_s=300, stall_timeout_s=300,
                      save_outputs=True, save_tensors=True, check_outputs=check_outputs)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A still clip (not a pixel moves) and one where a 11x11 patch moves (3% of the frame), each
    with its ground truth at 2x beside it."""
    folder = tmp_path_factory.mktemp("change-clips")
    return [write_moving_fraction_clip(folder / f"{name}.webm", SIZE, SIZE, 12, 24, "vp9", 5, f,
                                       truth_factor=2)
            for name, f in (("a-still", 0.0), ("b-patch", 0.03))]


@pytest.fixture(scope="module")
def runs(clips, tmp_path_factory):
    """The two clips as two requests, through the whole model and through a split (a fidelity
    run: the full model's reference too, and the outputs checked against the truth)."""
    out = {}
    for name, steps in (("whole", WHOLE), ("split", SPLIT)):
        tmp = tmp_path_factory.mktemp(f"change-{name}")
        result = run(config(clips, steps, f"change-{name}", check=name == "split"),
                     options(tmp, 2, check_outputs=name == "split"))
        assert result.error is None, result.error
        assert [r["status"] for r in result.rows] == ["ok", "ok"], result.rows
        saved = [torch.load(result.run_dir / "outputs" / f"request{i:06d}.pt") for i in range(2)]
        out[name] = (result, saved)
    return out


def windows_of(clip):
    frames = FrameDecoder("cpu").decode(str(clip), FRAMES)
    return FLAVRServed().make_rows(frames)


def test_a_still_clip_computes_no_tile_and_returns_its_centre_frames(clips, runs):
    result, saved = runs["whole"]
    row = result.rows[0]
    assert row["computed_fraction"] == 0 and row["windows_whole"] == 0
    windows = windows_of(clips[0])
    centre = 0.5 * (windows[:, :, 1] + windows[:, :, 2])  # the one new frame between 2nd and 3rd
    assert saved[0].shape == (3, 1, 3, SIZE, SIZE)
    assert torch.allclose(saved[0][:, 0], centre, atol=1e-6, rtol=0)


def test_a_moving_patch_computes_the_tiles_within_the_halo_of_it(clips, runs):
    windows = windows_of(clips[1])
    counts = tiles_to_compute(block_change(pad_frames(windows)), GRID, THRESHOLD).flatten(1).sum(1)
    # A clip request is a stream of its own: its first window with tiles runs whole (its gates
    # are what the later windows' tiles use), the others compute their tiles.
    expected, whole = 0, 0
    for count in counts.tolist():
        if count and not whole:
            expected, whole = expected + N_TILES, 1
        else:
            expected += count
    assert 0 < expected < len(windows) * N_TILES  # some tiles, not all
    for name in ("whole", "split"):
        row = runs[name][0].rows[1]
        assert row["computed_fraction"] == pytest.approx(expected / (len(windows) * N_TILES),
                                                         abs=1e-6), name
        assert row["windows_whole"] == whole, name


def test_a_split_placement_agrees_with_the_whole_model(runs):
    # Same windows, plan and weights; only the hand-off through slots differs.
    for whole, split in zip(runs["whole"][1], runs["split"][1]):
        assert torch.allclose(whole, split, atol=1e-5, rtol=0)
    assert [r["computed_fraction"] for r in runs["whole"][0].rows] == \
           [r["computed_fraction"] for r in runs["split"][0].rows]


def test_the_fidelity_column_is_the_psnr_against_the_full_model_on_the_same_windows(clips, runs):
    net = FLAVRServed().build("cpu", checkpoint=None, seed=0)  # the runners' random weights
    result, saved = runs["split"]
    for i, clip in enumerate(clips):
        with torch.inference_mode():
            full = net(windows_of(clip))
        mse = (saved[i].clamp(0, 1) - full.clamp(0, 1)).square().mean().item()
        psnr = min(100.0, -10 * math.log10(mse)) if mse > 0 else 100.0
        assert result.rows[i]["psnr_vs_full_db"] == pytest.approx(psnr, abs=0.01)
    change = result.summary["change"]
    assert change["fidelity_run"] and change["psnr_requests"] == 2
    assert "PSNR against the full model" in result.report


def test_a_fidelity_run_scores_the_change_based_outputs_against_the_truth_too(clips, runs):
    result, saved = runs["split"]
    for i, clip in enumerate(clips):
        truth = torch.from_numpy(np.load(truth_path(clip))["frames"][1:2 * FRAMES - 1:2])
        truth = truth.permute(0, 3, 1, 2).double() / 255.0
        expected = psnr(quantize(saved[i][:, 0]), truth).clamp(max=100.0).mean().item()
        row = result.rows[i]
        assert row["truth_frames"] == FRAMES - 1 and row["psnr_vs_full_db"] is not None
        assert round(row["truth_psnr_db"], 6) == round(expected, 6)
    assert "model (change-based)" in result.report


def test_a_streams_later_segments_use_the_gates_of_its_earlier_whole_window(clips, tmp_path):
    # One stream playing the moving clip, three segments, through a split: only the first
    # segment runs a window whole; the later ones find the stream's plan and gate attention
    # on both steps (a step without them refuses the tiles).
    result = run(config(clips[1:], SPLIT, "change-stream", streams=1, check=False),
                 options(tmp_path, 3))
    assert result.error is None, result.error
    rows = sorted(result.rows, key=lambda r: r["segment"])
    assert [r["status"] for r in rows] == ["ok"] * 3, rows
    assert rows[0]["windows_whole"] == 1
    assert [r["windows_whole"] for r in rows[1:]] == [0, 0]
    assert all(0 < r["computed_fraction"] < 1 for r in rows[1:])
