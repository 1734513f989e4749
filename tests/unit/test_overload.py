"""The warning before a run whose offered load is far beyond what the machine can serve."""
import pytest
import yaml

from models.r2plus1d.served import R2Plus1DServed
from models.registry import served_model
from pipeline.analysis.overload import OVERLOAD_FACTOR, duration_text, estimate, overload_notice
from pipeline.cli.benchmark import main
from pipeline.config import RunSettings, config_from_dict
from pipeline.serving.plan import plan_run


def sleep_config(sleep_ms: float, gpus=(0,), **model) -> dict:
    """decode + the TEST sleep step: a service time known exactly."""
    return {"name": "sleepy", "device": "cpu",
            "videos": {"synthetic": {"count": 1, "width": 16, "height": 16, "frames": 4,
                                     "fps": 24, "codec": "vp9", "seed": 0}},
            "frames_per_request": 4,
            "model": {"factor": 2, "precision": "fp32", "resolution": [16, 16], **model},
            "pipeline": [{"name": "decode", "kind": "decode", "gpus": [0]},
                         {"name": "work", "kind": "sleep", "sleep_ms": sleep_ms,
                          "gpus": list(gpus)}]}


def plan_of(d: dict):
    cfg = config_from_dict(d)
    return cfg, plan_run(cfg, RunSettings(device="cpu", per_gpu=False, mps="off"))


def test_the_capacity_of_a_known_service_time_is_estimated_from_it():
    cfg, p = plan_of(sleep_config(100))
    assert estimate(cfg, p.topo, "cpu").capacity_rps == pytest.approx(10.0)


def test_a_load_far_beyond_the_capacity_is_warned_about_with_the_estimate():
    cfg, p = plan_of(sleep_config(100))
    text = overload_notice(cfg, p.topo, "cpu", mean_interval_ms=10, requests=40)
    assert text.startswith("offered 100 requests/s is about 10x what this machine can serve by "
                           "an estimate, about 10 requests/s")
    assert "40 requests would take about 4 seconds" in text and "optimistic" in text


def test_a_run_under_a_couple_of_minutes_is_said_in_seconds():
    cfg, p = plan_of(sleep_config(100))
    text = overload_notice(cfg, p.topo, "cpu", mean_interval_ms=10, requests=270)
    assert "270 requests would take about 27 seconds" in text
    text = overload_notice(cfg, p.topo, "cpu", mean_interval_ms=10, requests=1)
    assert "1 request would take about 0.1 seconds" in text


@pytest.mark.parametrize("seconds, text", [(0.04, "0.04 seconds"), (1.0, "1 second"),
                                           (2.5, "2.5 seconds"), (27.2, "27 seconds"),
                                           (119.0, "119 seconds"), (120.0, "2 minutes"),
                                           (1020.0, "17 minutes")])
def test_durations_read_in_seconds_below_two_minutes_and_in_minutes_above(seconds, text):
    assert duration_text(seconds) == text


def test_a_load_the_machine_can_serve_is_not_warned_about():
    cfg, p = plan_of(sleep_config(100))
    assert overload_notice(cfg, p.topo, "cpu", mean_interval_ms=1000 / (OVERLOAD_FACTOR * 10) + 1,
                           requests=40) is None


def test_a_very_long_run_is_warned_about_even_at_a_load_it_keeps_up_with():
    cfg, p = plan_of(sleep_config(100))
    text = overload_notice(cfg, p.topo, "cpu", mean_interval_ms=0, requests=10_000)
    assert text.startswith("10000 requests would take about 17 minutes: by an estimate this "
                           "machine serves about 10 requests/s")


def test_flavr_work_is_counted_from_its_multiply_adds():
    d = sleep_config(0)
    d["pipeline"][1] = {"name": "flavr", "kind": "model", "stages": ["stem", "head"], "gpus": [0]}
    d["model"]["resolution"] = [256, 256]
    cfg, p = plan_of(d)
    est = estimate(cfg, p.topo, "cpu")
    assert est.work_text.startswith("1.6 TFLOP per request (FLAVR at 256x256, 3 windows)")
    assert "measured here on the CPU" in est.rate_text
    # A load no CPU serves: 1000 requests/s of 1.6 TFLOP each.
    assert overload_notice(cfg, p.topo, "cpu", mean_interval_ms=1, requests=22).startswith(
        "offered 1e+03 requests/s is about")


def flavr_config(**videos) -> dict:
    d = sleep_config(0)
    d["pipeline"][1] = {"name": "flavr", "kind": "model", "stages": ["stem", "head"], "gpus": [0]}
    d["model"]["resolution"] = [64, 64]
    d["videos"].update(videos)
    return d


def test_a_stream_request_counts_the_windows_of_a_running_segment():
    # 4 new frames of a stream are 4 windows (they run across the segment's boundaries), where
    # a clip of 4 frames is 3: the same model, a third more work per request.
    clip_cfg, clip_plan = plan_of(flavr_config())
    stream_cfg, stream_plan = plan_of(flavr_config(streams={"count": 2}))
    rows = served_model(stream_cfg.model).rows_per_segment(stream_cfg.frames_per_request)
    assert rows == 4
    clip = estimate(clip_cfg, clip_plan.topo, "cpu")
    stream = estimate(stream_cfg, stream_plan.topo, "cpu")
    assert "(FLAVR at 64x64, 3 windows)" in clip.work_text
    assert "(FLAVR at 64x64, 4 windows)" in stream.work_text
    clip_flop, stream_flop = (float(e.work_text.split(" TFLOP")[0]) for e in (clip, stream))
    assert stream_flop == pytest.approx(clip_flop * 4 / 3, rel=1e-2)


def test_dry_run_says_so_before_anything_starts(tmp_path, capsys):
    path = tmp_path / "sleepy.yaml"
    path.write_text(yaml.safe_dump(sleep_config(100)))
    assert main(["-c", str(path), "-mi", "10", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "notice: offered 100 requests/s is about 10x what this machine can serve" in out


def test_any_registered_model_is_counted_from_the_model_interface():
    # R(2+1)D-18 at its own input size (no resolution set): one 16-frame clip per request.
    d = sleep_config(0, name="r2plus1d")
    d["frames_per_request"] = 16
    d["videos"]["synthetic"]["frames"] = 16
    del d["model"]["factor"]
    d["model"]["resolution"] = None
    d["pipeline"][1] = {"name": "front", "kind": "model", "stages": ["stem", "layer1"],
                        "gpus": [0]}
    d["pipeline"].append({"name": "back", "kind": "model", "stages": ["layer2", "head"],
                          "gpus": [1]})
    cfg, p = plan_of(d)
    est = estimate(cfg, p.topo, "cpu")
    served = R2Plus1DServed()
    flop = 2 * served.row_macs(112, 112)  # both steps together: the whole network, once
    assert est.work_text.startswith(f"{flop / 1e12:.3g} TFLOP per request (R(2+1)D-18 at "
                                    "112x112, 1 clip)")


def test_the_warning_waits_until_the_clips_are_found_usable(tmp_path, capsys):
    # A run refused for its clips says that alone: no estimate of a run that never starts.
    d = sleep_config(100)
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("not a video\n")
    d["videos"] = {"paths": [str(not_a_video)]}
    path = tmp_path / "sleepy.yaml"
    path.write_text(yaml.safe_dump(d))
    assert main(["-c", str(path), "-mi", "10", "--logs", str(tmp_path / "logs")]) == 2
    err = capsys.readouterr().err
    assert "no usable clip" in err and str(not_a_video) in err
    assert "warning:" not in err and "requests/s" not in err
