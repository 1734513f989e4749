"""Quality against ground truth in a run's summary and report: means over the measured ok
requests that have truth, the model next to the baselines; nothing for a run without truth."""
from __future__ import annotations

import json

from record_helpers import request_cells

from pipeline.analysis.report import format_report, summarize

SCORES = ("truth_frames", "truth_psnr_db", "truth_ssim", "avg_psnr_db", "avg_ssim",
          "nearest_psnr_db", "nearest_ssim")


def cells(rid, scores=None, **kw) -> dict:
    c = request_cells(rid, 0.1 * rid, 0.05, rest=("flavr", "compute_s"), **kw)
    c.update(dict(zip(SCORES, scores or ())))
    return c


def summary_of(rows, **run_info) -> dict:
    return summarize(rows, ["decode", "flavr"], {"t0": 0.0, "mean_interval_ms": 100, **run_info})


def test_the_means_over_requests_and_the_model_against_averaging():
    rows = [cells(0, (7, 50.0, 0.5, 50.0, 0.5, 50.0, 0.5), warmup=True),  # not counted
            cells(1, (7, 30.0, 0.90, 29.0, 0.88, 27.0, 0.80)),
            cells(2, (7, 28.0, 0.86, 28.5, 0.87, 26.0, 0.78)),
            cells(3),  # a clip without truth
            cells(4, (7, 40.0, 0.9, 40.0, 0.9, 40.0, 0.9), status="error", error="decode: x")]
    truth = summary_of(rows)["truth"]
    assert (truth["requests"], truth["frames"]) == (2, 14)
    assert truth["methods"]["model"] == {"psnr_db": 29.0, "ssim": 0.88}
    assert truth["methods"]["averaging"]["psnr_db"] == 28.75
    assert truth["methods"]["nearest"]["ssim"] == 0.79
    assert truth["model_vs_averaging_db"] == 0.25 and truth["model_ahead_requests"] == 1
    text = format_report(summary_of(rows))
    assert "against ground truth (means over 2 requests, 14 new frames" in text
    assert "  model        29.00  0.8800" in text
    assert "model vs averaging: +0.25 dB (the model ahead in 1 of 2 requests)" in text
    assert "checking costs the sink time" in text


def test_change_based_outputs_are_named_as_such():
    rows = [cells(1, (7, 30.0, 0.9, 29.0, 0.88, 27.0, 0.8))]
    text = format_report(summary_of(rows, change_based={"threshold": 0.04}))
    assert "  model (change-based)    30.00  0.9000" in text


def test_a_run_without_truth_reports_nothing_of_it():
    summary = summary_of([cells(1), cells(2)])
    assert summary["truth"] is None
    assert "ground truth" not in format_report(summary)
    assert json.loads(json.dumps(summary))["truth"] is None
