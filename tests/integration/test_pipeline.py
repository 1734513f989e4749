"""The serving pipeline end to end on the CPU: real child processes, real DALI/PyAV decode of
generated clips, real FLAVR ranges, shared-memory slot pools. Small clips keep it quick."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from run_helpers import saved_outputs
from video_helpers import truth_frames

from pipeline.analysis.quality import psnr, quantize
from pipeline.analysis.report import summary_from_run_dir
from pipeline.analysis.requests_csv import read_csv, read_rows
from pipeline.config import config_from_dict, config_to_dict
from pipeline.media.decode import FrameDecoder
from pipeline.serving.orchestrator import RunOptions, run

SIZE = 16  # frames are 16x16: the model's full graph (its deepest maps 2x2), quick on 2 cores


def make_config(tmp_path: Path, steps: list[dict], name: str = "t", size: int = SIZE,
                truth_factor: int | None = None, **over) -> object:
    cfg = {
        "name": name,
        "device": "cpu",
        "videos": {"synthetic": {"count": 2, "width": size, "height": size, "frames": 6,
                                 "fps": 24, "codec": "vp9", "seed": 1,
                                 "truth_factor": truth_factor}},
        "frames_per_request": 4,
        "model": {"factor": 2, "precision": "fp32", "resolution": [size, size]},
        "pipeline": steps,
    }
    cfg.update(over)
    return config_from_dict(cfg)


WHOLE = [{"name": "decode", "kind": "decode", "gpus": [0]},
         {"name": "flavr", "kind": "model", "stages": ["stem", "head"], "gpus": [0]}]
SPLIT = [{"name": "decode", "kind": "decode", "gpus": [0], "queue": "per_gpu"},
         {"name": "encoder", "kind": "model", "stages": ["stem", "layer4"], "gpus": [0]},
         {"name": "decoder", "kind": "model", "stages": ["dec0", "head"], "gpus": [1]}]
REPLICATED = [{"name": "decode", "kind": "decode", "gpus": [0, 1], "queue": "per_gpu"},
              {"name": "flavr", "kind": "model", "stages": ["stem", "head"], "gpus": [0, 1]}]


def options(tmp_path: Path, **over) -> RunOptions:
    base = dict(mean_interval_ms=20, videos=4, warmup=1, queue_size=16, logs_root=str(tmp_path / "logs"),
                progress=False, cpu_threads=1, start_timeout_s=240, stall_timeout_s=120,
                video_cache=str(tmp_path / "videos"))
    base.update(over)
    return RunOptions(**base)


# One run of each placement, shared by the tests below that only read its results and logs (a run
# costs seconds of child start-up on two cores): 8 measured requests and a warm-up, Poisson
# arrivals every 30 ms on average, the outputs saved as tensors and checked against the clips'
# ground truth.
PLACEMENTS = {"whole": WHOLE, "split": SPLIT, "replicated": REPLICATED}
SHARED_VIDEOS = 8


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    runs = {}

    def get(name: str):
        if name not in runs:
            tmp = tmp_path_factory.mktemp(f"shared-{name}")
            runs[name] = run(make_config(tmp, PLACEMENTS[name], name=name, truth_factor=2),
                             options(tmp, videos=SHARED_VIDEOS, mean_interval_ms=30,
                                     save_outputs=True, save_tensors=True, check_outputs=True))
        return runs[name]

    return get


@pytest.mark.parametrize("name", list(PLACEMENTS))
def test_every_request_completes_and_is_accounted_for(shared_run, name):
    result = shared_run(name)
    n = SHARED_VIDEOS + 1  # and the warm-up
    assert result.error is None, result.error
    assert [r["status"] for r in result.rows] == ["ok"] * n
    assert [r["request_id"] for r in result.rows] == list(range(n))
    for row in result.rows:
        assert row["latency_s"] > 0
        assert row["output_frames"] == (4 - 1) * 2 + 1
        for step in [s["name"] for s in PLACEMENTS[name]]:
            assert row[f"{step}.compute_s"] > 0, step
            assert row[f"{step}.queue_wait_s"] >= 0, step


def test_replicas_share_the_load_and_report_their_device(shared_run):
    result = shared_run("replicated")
    assert result.error is None, result.error
    devices = {r["flavr.device"] for r in result.rows}
    assert devices <= {"cpu:0", "cpu:1"}
    # Per-GPU queues: a request decoded on device g is interpolated on device g.
    assert all(r["decode.device"] == r["flavr.device"] for r in result.rows)


def test_split_output_equals_whole_output_exactly(shared_run):
    outs = {}
    for name in ("whole", "split"):
        result = shared_run(name)
        assert result.error is None, result.error
        outs[name] = saved_outputs(result)
    assert outs["whole"].keys() == outs["split"].keys()
    assert len(outs["whole"]) == SHARED_VIDEOS + 1
    for key in outs["whole"]:
        assert torch.equal(outs["whole"][key], outs["split"][key]), key


@pytest.mark.parametrize("name", ["whole", "split"])
def test_outputs_are_scored_against_ground_truth_as_computed_from_the_files(shared_run, name):
    # Each request holds the clip's first 4 frames: gap r lies between frames r and r+1, and its
    # truth is the truth file's frame 2r+1. The sink's scores equal the direct computation from
    # the decoded clip, the truth file and the saved outputs (to the CSV's 6 decimals).
    result = shared_run(name)
    rows = read_rows(result.run_dir / "requests.csv")
    assert rows and all(r.truth_frames == 3 for r in rows)
    for r in rows:
        frames = FrameDecoder("cpu").decode(r.video, 4)
        truth = truth_frames(Path(r.video))[0][1:7:2] / 255.0
        out = torch.load(result.run_dir / "outputs" / f"request{r.request_id:06d}.pt")[:, 0]
        for guess, column in (((frames[:-1] + frames[1:]) / 2, r.avg_psnr_db),
                              (frames[:-1], r.nearest_psnr_db), (out, r.truth_psnr_db)):
            assert column == round(psnr(quantize(guess), truth).mean().item(), 6)
    summary = json.loads((result.run_dir / "report.json").read_text())["truth"]
    assert summary["requests"] == SHARED_VIDEOS and summary["frames"] == 3 * SHARED_VIDEOS
    assert "against ground truth (means over 8 requests, 24 new frames" in result.report


def test_batching_groups_queued_requests_into_one_model_call(tmp_path):
    # 32x32: the model is slower than decode, so requests queue and batches form.
    result = run(make_config(tmp_path, WHOLE, size=32),
                 options(tmp_path, batch=4, videos=8, mean_interval_ms=0))
    assert result.error is None, result.error
    assert all(r["status"] == "ok" for r in result.rows)
    assert max(r["flavr.batch"] for r in result.rows) > 1


def test_report_recomputed_from_the_logs_equals_the_live_report(shared_run):
    run_dir = shared_run("split").run_dir
    for f in ("requests.csv", "report.json", "report.txt", "config.yaml", "args.json", "env.json"):
        assert (run_dir / f).exists(), f
    again = summary_from_run_dir(run_dir)
    assert json.loads(json.dumps(again)) == json.loads((run_dir / "report.json").read_text())
    rows = read_csv(run_dir / "requests.csv")
    assert len(rows) == SHARED_VIDEOS + 1


def test_a_bad_clip_fails_alone(tmp_path):
    good = tmp_path / "good"
    from pipeline.media.synthetic import write_clip

    clip = write_clip(good / "a.webm", width=SIZE, height=SIZE, frames=6, fps=24,
                                codec="vp9", seed=0)
    bad = tmp_path / "bad.mp4"
    bad.write_text("this is not a video")
    cfg = make_config(tmp_path, WHOLE, videos={"paths": [str(clip), str(bad)]})
    result = run(cfg, options(tmp_path, videos=4, warmup=0))
    assert result.error is None, result.error
    by_video = {}
    for r in result.rows:
        by_video.setdefault(Path(r["video"]).name, set()).add(r["status"])
    assert by_video == {"a.webm": {"ok"}, "bad.mp4": {"error"}}
    errors = [r["error"] for r in result.rows if r["status"] == "error"]
    assert all("bad.mp4" in e for e in errors)
    assert result.summary["counts"]["error"] == 2


def test_clips_of_different_sizes_run_at_their_own_size(tmp_path):
    from pipeline.media.synthetic import write_clip

    small = write_clip(tmp_path / "v" / "small.webm", width=32, height=32, frames=5, fps=24, seed=0)
    wide = write_clip(tmp_path / "v" / "wide.webm", width=48, height=24, frames=5, fps=24, seed=1)
    cfg = make_config(tmp_path, WHOLE, videos={"paths": [str(small), str(wide)]},
                      model={"factor": 2, "precision": "fp32", "resolution": None})
    result = run(cfg, options(tmp_path, videos=4, warmup=0, batch=2, mean_interval_ms=0,
                              save_outputs=True, save_tensors=True))
    assert result.error is None, result.error
    assert [r["status"] for r in result.rows] == ["ok"] * 4
    shapes = {tuple(torch.load(p).shape) for p in (result.run_dir / "outputs").glob("*.pt")}
    assert shapes == {(3, 1, 3, 32, 32), (3, 1, 3, 24, 48)}


def test_a_checkpoint_next_to_the_config_is_found_by_every_runner(tmp_path, monkeypatch):
    # Relative paths are looked up next to the config file first; the runners must load the file
    # that validation found, whatever the working directory.
    from models.flavr.checkpoint import build_model, save_checkpoint

    folder = tmp_path / "configs"
    folder.mkdir()
    save_checkpoint(build_model(factor=2, seed=3), folder / "weights.pth")
    cfg = make_config(tmp_path, SPLIT, name="ckpt")
    d = config_to_dict(cfg)
    d["model"]["checkpoint"] = "weights.pth"
    cfg = config_from_dict(d, source=str(folder / "ckpt.yaml"))
    monkeypatch.chdir(tmp_path)
    result = run(cfg, options(tmp_path, videos=2))
    assert result.error is None, result.error
    assert [r["status"] for r in result.rows] == ["ok"] * 3


def test_check_outputs_fails_requests_whose_frames_hold_nan(tmp_path):
    # Weights with a NaN make every output NaN; with --check-outputs each request of a batch
    # fails with the reason, the run itself goes on to the end.
    from models.flavr.checkpoint import build_model, save_checkpoint

    model = build_model(factor=2, seed=0)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    ckpt = save_checkpoint(model, tmp_path / "nan.pth")
    # 32x32: the model is slower than decode, so requests queue and batches of 2 form.
    cfg = make_config(tmp_path, WHOLE, name="nan", size=32)
    d = config_to_dict(cfg)
    d["model"]["checkpoint"] = str(ckpt)
    result = run(config_from_dict(d), options(tmp_path, videos=4, batch=2, mean_interval_ms=0,
                                              check_outputs=True))
    assert result.error is None, result.error
    assert [r["status"] for r in result.rows] == ["error"] * 5
    assert {r["error"] for r in result.rows} == {"output holds NaN or Inf values"}
    assert max(r["flavr.batch"] for r in result.rows) == 2  # parts of one item checked together


# --- what the numbers mean ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["split", "replicated"])
def test_per_step_columns_add_up_to_each_requests_latency(shared_run, name):
    result = shared_run(name)
    assert result.error is None, result.error
    rows = read_rows(result.run_dir / "requests.csv")
    ok = [r for r in rows if r.status == "ok" and not r.warmup]
    assert len(ok) == SHARED_VIDEOS
    mean = sum(r.latency_s for r in ok) / len(ok)
    for r in ok:
        assert abs(r.latency_s - r.accounted_s()) < 0.01 * mean, r
    b = result.summary["breakdown"]
    assert b["requests"] == SHARED_VIDEOS and abs(b["residual_share"]) < 0.01
    assert "residual" in result.report


def test_a_fast_request_is_not_stamped_behind_a_slow_one_on_another_replica(tmp_path):
    # One big clip, then small ones, all due at once, on two replicas (per-GPU queues from two
    # decode workers): while one replica works on the big clip, the other serves small ones.
    # Each request is complete when its own replica finishes it, not in any queue's order.
    from pipeline.media.synthetic import write_clip

    # 64x64 against 16x16: 16 times the work per request, and a fraction of 96x96's warm-up in
    # every runner (each warms up at every clip size before the start).
    clips = [write_clip(tmp_path / "v" / "big.webm", width=64, height=64, frames=4, fps=24, seed=0)]
    clips += [write_clip(tmp_path / "v" / f"small{k}.webm", width=16, height=16, frames=4, fps=24,
                         seed=k) for k in range(1, 6)]
    cfg = make_config(tmp_path, REPLICATED, videos={"paths": [str(c) for c in clips]},
                      model={"factor": 2, "precision": "fp32", "resolution": None})
    result = run(cfg, options(tmp_path, videos=6, warmup=0, mean_interval_ms=0))
    assert result.error is None, result.error
    rows = read_rows(result.run_dir / "requests.csv")
    slow = rows[0]  # the big clip
    fast = [r for r in rows[1:] if r.steps["flavr"].replica != slow.steps["flavr"].replica]
    assert fast, [(r.video, r.steps["flavr"].replica) for r in rows]
    # (Only the order is asserted: how long the fast ones take on two loaded cores varies.)
    for r in fast:
        assert r.done_s < slow.done_s, (r, slow)


def test_warm_ups_finish_before_the_measured_schedule_starts(tmp_path):
    # Bulk: ten warm-ups and ten measured requests, all due at once within their phase.
    result = run(make_config(tmp_path, WHOLE), options(tmp_path, videos=10, warmup=10,
                                                      mean_interval_ms=0))
    assert result.error is None, result.error
    rows = read_rows(result.run_dir / "requests.csv")
    warm = [r for r in rows if r.warmup]
    measured = [r for r in rows if not r.warmup]
    assert len(warm) == 10 and all(r.status == "ok" for r in rows)
    start = min(r.scheduled_s for r in measured)
    assert max(r.done_s for r in warm) <= start
    # So the throughput counts only measured work: every measured request was served inside
    # the window, none of the warm-ups.
    assert result.summary["window"]["start_s"] == pytest.approx(start)
    assert result.summary["throughput"]["requests"] == 10


def test_a_normal_run_ends_with_every_child_leaving_by_itself(shared_run):
    result = shared_run("split")
    assert result.error is None, result.error
    assert not [n for n in result.notices if n.startswith("had to terminate")], result.notices
    assert "had to terminate" not in result.report


def test_the_report_says_how_long_the_processes_took_to_start(shared_run):
    result = shared_run("split")
    start_up = result.summary["run"]["start_up_s"]
    assert start_up > 0
    assert f"start-up    {start_up:.2f} s, from starting the first process" in result.report


def test_one_producer_feeds_several_replicas_through_a_global_queue(tmp_path):
    # One decode worker, two replicas of the next step behind one global queue: both consumers
    # open the decode worker's slot pool (on the CPU, shared memory each must map for itself),
    # and both serve. A sleep step holds each request long enough for the other replica to
    # take the next one.
    steps = [{"name": "decode", "kind": "decode", "gpus": [0]},
             {"name": "work", "kind": "sleep", "sleep_ms": 200, "gpus": [0, 1]}]
    result = run(make_config(tmp_path, steps), options(tmp_path, videos=6, mean_interval_ms=0))
    assert result.error is None, result.error
    assert [r["status"] for r in result.rows] == ["ok"] * 7
    assert {r["work.replica"] for r in result.rows} == {0, 1}
