"""The report says where decode stood next to the model: a run whose decode workers could not
feed a fast step is called decode-limited, a run limited by its step is not (real CPU runs:
real decoding of generated clips, a sleep step standing in for a model of known speed)."""
from __future__ import annotations

from run_helpers import make_config, options

from pipeline.analysis.report import format_report

LIMITED = "decode, not the model, limited this run"


def videos(size: int) -> dict:
    return {"synthetic": {"count": 2, "width": size, "height": size, "frames": 8, "fps": 24,
                          "codec": "h264", "seed": 5}}


def steps(sleep_ms: float) -> list[dict]:
    return [{"name": "decode", "kind": "decode", "gpus": [0]},
            {"name": "sleep", "kind": "sleep", "sleep_ms": sleep_ms, "gpus": [0]}]


def run_bulk(tmp_path, size: int, sleep_ms: float):
    from pipeline.serving.orchestrator import run

    cfg = make_config(videos(size), steps(sleep_ms), name="placement")
    cfg.model.resolution = None  # decode at the clips' own size
    result = run(cfg, options(tmp_path, mean_interval_ms=0, videos=24, warmup=1, queue_size=64))
    return result.summary


def test_a_step_starved_by_slow_decode_is_reported_as_decode_limited(tmp_path):
    summary = run_bulk(tmp_path, size=320, sleep_ms=0.5)
    d = summary["decode"]
    assert d["decode_busy"] > 0.8 and d["model"][0]["busy"] < 0.5, d
    assert any(w.startswith(LIMITED) for w in summary["warnings"])
    assert "busy over the window: decode" in format_report(summary)


def test_a_run_limited_by_its_step_is_not_called_decode_limited(tmp_path):
    summary = run_bulk(tmp_path, size=16, sleep_ms=60)
    assert summary["decode"]["model"][0]["busy"] > 0.8
    assert not any(w.startswith(LIMITED) for w in summary["warnings"])
