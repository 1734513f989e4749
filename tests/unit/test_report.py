"""Run statistics: hand-built records with known answers, and the same numbers back from the logs."""
import json

import numpy as np
import pytest
from record_helpers import STEPS, request_cells

from pipeline.analysis.records import (
    PATH_TIMES,
    Admission,
    Outcome,
    RecordTable,
    StepStamps,
)
from pipeline.analysis.report import (
    PERCENTILE_METHOD,
    format_report,
    percentile,
    summarize,
    summary_from_run_dir,
)
from pipeline.serving.runlog import write_run


def row(rid, scheduled, latency, *, warmup=False, status="ok", error="", issued_lag=0.001,
        frames=8, output_frames=15, qwait=0.0, compute=0.0, device="cuda:0"):
    """Both steps wait `qwait` in their queue and compute for `compute`; the flavr step's
    publish takes the rest, so the columns add up to the latency."""
    times = {s: {"queue_wait_s": qwait, "compute_s": compute} for s in STEPS}
    return request_cells(rid, scheduled, latency, warmup=warmup, status=status, error=error,
                         lag=issued_lag, frames=frames, output_frames=output_frames,
                         device=device, times=times, rest=("flavr", "publish_s"))


def ten_measured(warmups=2):
    """Warm-up requests first (slow, must be ignored), then ten measured every 0.5 s whose
    latencies are 0.1, 0.2, ..., 1.0 s."""
    rows = [row(i, 0.2 * i, 5.0, warmup=True) for i in range(warmups)]
    for i in range(10):
        rows.append(row(warmups + i, 1.0 + 0.5 * i, 0.1 * (i + 1), qwait=0.001 * (i + 1),
                        compute=0.010 * (i + 1)))
    return rows


def summary_of(rows, run_info=None, samples=None):
    return summarize(rows, STEPS, {"t0": 100.0, **(run_info or {})}, samples)


# --- percentiles ----------------------------------------------------------------------------

def test_nearest_rank_percentiles():
    ten = [float(v) for v in range(1, 11)]
    assert percentile(ten, 50) == 5 and percentile(ten, 90) == 9 and percentile(ten, 99) == 10
    hundred = [float(v) for v in range(1, 101)]
    assert percentile(hundred, 50) == 50 and percentile(hundred, 99) == 99 and percentile(hundred, 100) == 100
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None
    assert percentile(ten, 0) == 1


def test_percentiles_are_always_observed_values():
    values = sorted(np.random.default_rng(0).exponential(1.0, 37).tolist())
    for p in (50, 90, 99, 99.9):
        assert percentile(values, p) in values


def test_summary_names_its_percentile_method():
    s = summary_of(ten_measured())
    assert s["percentile_method"] == PERCENTILE_METHOD and "nearest-rank" in PERCENTILE_METHOD
    assert "nearest-rank" in format_report(s)


# --- known answers --------------------------------------------------------------------------

def test_latency_from_scheduled_time_excludes_warmup():
    lat = summary_of(ten_measured())["latency_s"]
    assert lat["count"] == 10
    assert lat["mean"] == pytest.approx(0.55)
    assert lat["p50"] == pytest.approx(0.5)
    assert lat["p90"] == pytest.approx(0.9)
    assert lat["p99"] == pytest.approx(1.0) and lat["max"] == pytest.approx(1.0)


def test_counts():
    c = summary_of(ten_measured())["counts"]
    assert c == {"total": 12, "warmup": 2, "measured": 10, "ok": 10, "error": 0, "dropped": 0,
                 "unfinished": 0, "warmup_not_ok": 0}


def test_window_runs_from_first_measured_schedule_to_last_measured_completion():
    w = summary_of(ten_measured())["window"]
    assert w["start_s"] == pytest.approx(1.0)  # not the warm-up's 0.0
    assert w["end_s"] == pytest.approx(6.5)  # 1.0 + 4.5 + 1.0
    assert w["duration_s"] == pytest.approx(5.5)


def test_throughput_counts_measured_ok_requests_over_the_window():
    t = summary_of(ten_measured())["throughput"]
    assert t["requests"] == 10
    assert t["requests_per_s"] == pytest.approx(10 / 5.5)
    assert t["output_frames_per_s"] == pytest.approx(150 / 5.5)
    assert t["input_frames_per_s"] == pytest.approx(80 / 5.5)


def test_offered_rate_from_the_schedule_and_achieved_rate():
    load = summary_of(ten_measured(), {"mean_interval_ms": 500})["load"]
    assert load["offered_rps"] == pytest.approx(9 / 4.5)
    assert load["nominal_rps"] == pytest.approx(2.0)
    assert load["achieved_rps"] == pytest.approx(10 / 5.5)
    assert load["bulk"] is False


def test_bulk_schedule():
    rows = [row(i, 0.0, 0.1 * (i + 1)) for i in range(5)]
    load = summary_of(rows, {"mean_interval_ms": 0})["load"]
    assert load["bulk"] is True and load["offered_rps"] is None and load["nominal_rps"] is None
    assert "bulk" in format_report(summary_of(rows))


def test_a_single_request_is_not_called_bulk():
    # -mi 500 -v 1: one scheduled time, but nothing was due at once with it.
    summary = summary_of([row(0, 0.0, 0.3)], {"mean_interval_ms": 500})
    load = summary["load"]
    assert load["bulk"] is False and load["sent"] == 1 and load["offered_rps"] is None
    text = format_report(summary)
    assert "bulk" not in text
    assert ("load        one measured request (no offered rate; nominal 2.00 at mean interval "
            "500 ms)") in text


def test_a_single_request_at_mean_interval_zero_is_not_called_bulk():
    summary = summary_of([row(0, 0.0, 0.3)], {"mean_interval_ms": 0})
    assert summary["load"]["bulk"] is False
    assert "load        one measured request (no offered rate)," in format_report(summary)


def test_the_start_up_gets_a_line_of_its_own_and_older_logs_none():
    text = format_report(summary_of(ten_measured(), {"start_up_s": 4.257}))
    assert ("start-up    4.26 s, from starting the first process to every process built and "
            "warmed up (before any request)") in text
    assert "start_up_s=" not in text  # not repeated among the run's settings
    assert "start-up" not in format_report(summary_of(ten_measured()))


def test_per_stage_statistics():
    stages = {s["step"]: s for s in summary_of(ten_measured())["stages"]}
    assert list(stages) == ["decode", "flavr"]
    q = stages["flavr"]["queue_wait_s"]
    assert q["count"] == 10 and q["mean"] == pytest.approx(0.0055) and q["p50"] == pytest.approx(0.005)
    assert q["p99"] == pytest.approx(0.010)
    assert stages["flavr"]["compute_s"]["p50"] == pytest.approx(0.050)
    assert stages["flavr"]["handoff_s"]["mean"] == 0.0
    assert stages["decode"]["devices"] == {"cuda:0": 10}
    assert stages["decode"]["batch_mean"] == 1.0


def test_failures_are_counted_grouped_and_kept_out_of_the_statistics():
    rows = ten_measured()
    n = len(rows)
    rows += [row(n, 2.0, 30.0, status="error", error="CUDA out of memory"),  # late: must not stretch the window
             row(n + 1, 2.1, 0.5, status="error", error="CUDA out of memory"),
             row(n + 2, 2.2, None, status="dropped", error="queue full"),
             row(n + 3, 2.3, None, status="unfinished"),
             row(n + 4, 0.1, None, warmup=True, status="error", error="decode failed")]
    s = summary_of(rows)
    assert s["counts"] == {"total": 17, "warmup": 3, "measured": 14, "ok": 10, "error": 2, "dropped": 1,
                           "unfinished": 1, "warmup_not_ok": 1}
    assert s["failures"][0] == {"status": "error", "reason": "CUDA out of memory", "warmup": False, "count": 2}
    assert {(f["status"], f["reason"], f["warmup"]) for f in s["failures"][1:]} == {
        ("dropped", "queue full", False), ("unfinished", "", False), ("error", "decode failed", True)}
    assert s["latency_s"]["count"] == 10 and s["window"]["end_s"] == pytest.approx(6.5)
    assert any("5 request(s) did not finish ok" in w and "1 of them warm-up" in w for w in s["warnings"])
    text = format_report(s)
    assert "CUDA out of memory" in text and "queue full" in text


def test_row_order_does_not_matter():
    rows = ten_measured()
    assert summary_of(rows[::-1]) == summary_of(rows)


# --- warnings -------------------------------------------------------------------------------

def test_too_few_requests_for_p99_and_p90():
    s = summary_of(ten_measured())
    assert "p99 from 10 requests is not meaningful; need >= 100" in s["warnings"]
    assert not any(w.startswith("p90") for w in s["warnings"])
    s = summary_of(ten_measured()[:7])  # 2 warm-up + 5 measured
    assert "p90 from 5 requests is not meaningful; need >= 10" in s["warnings"]


def test_enough_requests_give_no_percentile_warning():
    rows = [row(i, 0.01 * i, 0.05) for i in range(100)]
    assert not any("not meaningful" in w for w in summary_of(rows)["warnings"])


def test_client_behind_schedule_is_reported_with_the_lag():
    rows = [row(i, 0.01 * i, 0.05) for i in range(100)]
    rows[50]["client.lag_s"] = 0.080
    s = summary_of(rows)
    assert s["issue_lag_s"]["max"] == pytest.approx(0.080)
    warning = next(w for w in s["warnings"] if "fell behind" in w)
    assert "max 80.0 ms" in warning


def test_p99_issue_lag_beyond_a_quarter_of_the_mean_interval_is_reported():
    rows = [row(i, 0.05 * i, 0.05, issued_lag=0.015 if i % 10 == 0 else 0.0) for i in range(100)]
    s = summary_of(rows)  # requests every 50 ms: the p99 limit is 12.5 ms
    assert any("fell behind" in w and "p99 15.0 ms" in w and "limits 12.5 / 100 ms" in w
               for w in s["warnings"])


def test_the_lag_limit_scales_with_the_mean_interval():
    # The same 30 ms p99 lag: behind schedule at 20 requests/s (limit 12.5 ms), on schedule at
    # 2 requests/s (limit 125 ms).
    def lagging(gap):
        return [row(i, gap * i, 0.05, issued_lag=0.030 if i % 10 == 0 else 0.0) for i in range(100)]

    fast, slow = summary_of(lagging(0.05)), summary_of(lagging(0.5))
    assert fast["validity"]["client_behind"] and any("fell behind" in w for w in fast["warnings"])
    assert not slow["validity"]["client_behind"]
    assert not any("fell behind" in w for w in slow["warnings"])


def test_bulk_mode_lag_is_no_schedule_to_fall_behind():
    # -mi 0: all due at once; enqueueing 100 requests takes a few ms and warns of nothing.
    rows = [row(i, 0.0, 0.05 * (i + 1), issued_lag=0.0001 * i) for i in range(100)]
    s = summary_of(rows)
    assert s["load"]["bulk"] and s["issue_lag_s"]["max"] > 0.005
    assert not any("fell behind" in w for w in s["warnings"])


def test_on_time_client_gives_no_lag_warning():
    rows = [row(i, 0.01 * i, 0.05, issued_lag=0.0002) for i in range(100)]
    assert summary_of(rows)["warnings"] == []


def test_no_measured_ok_request():
    rows = [row(0, 0.0, 0.1, warmup=True), row(1, 1.0, None, status="error", error="boom")]
    s = summary_of(rows)
    assert s["latency_s"]["count"] == 0 and s["latency_s"]["p99"] is None
    assert s["throughput"]["requests_per_s"] is None
    assert any("no measured request finished ok" in w for w in s["warnings"])
    format_report(s)
    assert any("no measured requests" in w for w in summary_of([])["warnings"])


# --- GPUs -----------------------------------------------------------------------------------

def samples_at(t0, times, gpu, util, mem):
    return [{"t": t0 + t, "gpu": gpu, "util_pct": u, "mem_used_mib": m, "mem_total_mib": 81559.0}
            for t, u, m in zip(times, util, mem)]


def test_gpu_statistics_use_samples_inside_the_window_only():
    t0 = 100.0
    samples = (samples_at(t0, [0.5, 1.5, 3.0, 6.0, 9.0], 0, [99, 40, 60, 80, 99], [900, 5000, 6000, 7000, 9000])
               + samples_at(t0, [2.0, 4.0], 1, [10, 20], [3000.0, 3500.0]))
    gpus = summary_of(ten_measured(), samples=samples)["gpus"]
    g0, g1 = gpus["per_gpu"]
    assert g0["gpu"] == 0 and g0["samples"] == 3  # 1.5, 3.0, 6.0 are inside [1.0, 6.5]
    assert g0["util_mean_pct"] == pytest.approx(60.0) and g0["util_max_pct"] == 80
    assert g0["mem_max_mib"] == 7000 and g0["mem_total_mib"] == 81559.0
    assert g1["samples"] == 2 and g1["util_max_pct"] == 20
    assert gpus["in_window"] == 5


def test_gpu_busy_before_the_run_from_the_baseline():
    baseline = {"available": True, "gpus": [
        {"gpu": 0, "util_pct": 0, "mem_used_mib": 400.0, "processes": []},
        {"gpu": 1, "util_pct": 55, "mem_used_mib": 2048.0, "processes": [{"pid": 4242, "used_mib": 2000.0}]}]}
    s = summary_of(ten_measured(), {"nvml_baseline": baseline})
    busy = [w for w in s["warnings"] if "already busy" in w]
    assert len(busy) == 1 and busy[0].startswith("GPU 1") and "4242" in busy[0] and "55%" in busy[0]


def test_gpu_busy_before_the_run_from_the_first_sample():
    samples = samples_at(100.0, [0.0, 2.0], 0, [0, 90], [1500.0, 8000.0])
    s = summary_of(ten_measured(), samples=samples)
    assert any(w.startswith("GPU 0 was already busy") and "1500 MiB" in w for w in s["warnings"])


def test_no_samples_on_a_cpu_run():
    s = summary_of(ten_measured(), {"nvml_reason": "NVML is not available"})
    assert s["gpus"] == {"sampled": False, "in_window": 0, "per_gpu": []}
    assert "no NVML samples (NVML is not available)" in format_report(s)


# --- the report -----------------------------------------------------------------------------

def test_a_run_stopped_among_its_warm_ups_does_not_say_they_finished():
    rows = ten_measured()
    rows[1] = row(1, 0.2, 5.0, warmup=True, status="unfinished")
    text = format_report(summary_of(rows))
    assert "2 warm-up (excluded, 1 of them not ok: see failures)" in text
    assert "finished before the measured schedule" not in text


def test_report_shows_the_summary_numbers():
    s = summary_of(ten_measured(), {"config_name": "flavr-split", "mean_interval_ms": 500})
    text = format_report(s)
    assert "flavr-split" in text
    assert "10 ok" in text and "2 warm-up (excluded, finished before the measured schedule)" in text
    assert "1.82 requests/s" in text and "27.3 output frames/s" in text
    latency_line = text.splitlines()[text.splitlines().index(
        next(l for l in text.splitlines() if l.startswith("end-to-end latency"))) + 2]
    assert latency_line.split() == ["550.00", "500.00", "900.00", "1000.00", "1000.00"]
    assert "p99 from 10 requests is not meaningful" in text


def test_report_tables_are_aligned():
    text = format_report(summary_of(ten_measured()))
    lines = text.splitlines()
    start = lines.index(next(l for l in lines if l.startswith("per step")))
    table = []
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        table.append(line)
    # Every path column of both steps; the copy time only where something was copied (nothing).
    assert len(table) == 1 + len(PATH_TIMES) * 2
    assert len({len(l) for l in table}) == 1  # right-aligned numbers end in one column


def test_summary_is_json():
    s = summary_of(ten_measured(), samples=samples_at(100.0, [2.0], 0, [50], [100.0]))
    assert json.loads(json.dumps(s, allow_nan=False)) == s


# --- from the logs --------------------------------------------------------------------------

def live_run(t0=53211.123456789, n=150, seed=0):
    """A run as the orchestration produces it: typed reports with absolute clock times merged
    by a RecordTable."""
    rng = np.random.default_rng(seed)
    requests = [(i, f"/videos/c{i % 3}.webm", 8, i < 10) for i in range(n)]
    table = RecordTable(STEPS, requests)
    scheduled = t0 + np.cumsum(rng.exponential(0.02, n))
    for i in range(n):
        s = float(scheduled[i])
        sent = s + float(rng.exponential(0.0003))
        table.update(i, Admission(s, sent, sent + float(rng.exponential(0.0001))))
        t = sent
        for step in STEPS:
            taken = t + float(rng.exponential(0.003))
            compute = float(rng.normal(0.012, 0.001))
            finished = taken + 0.0002 + compute + 0.0001
            table.update(i, StepStamps(step, f"cuda:{i % 2}", i % 2, 1, taken=taken,
                                       gathered=taken + 0.0001, slot_held=taken + 0.0002,
                                       finished=finished, compute_s=compute, publish_s=0.0001,
                                       handed_on=finished + 0.00005,
                                       handoff_s=float(rng.exponential(0.0001))))
            t = finished + 0.00005
        if i == 77:
            table.update(i, Outcome("error", "decoder: CUDA error"))
        elif i != 140:  # request 140 never finishes
            table.update(i, Outcome("ok", frames=8, output_frames=15))
    samples = [{"t": t0 + k * 0.1 + float(rng.uniform(0, 0.01)), "gpu": g, "util_pct": int(rng.integers(0, 100)),
                "mem_used_mib": float(rng.uniform(1000, 9000)), "mem_total_mib": 81559.0}
               for k in range(-5, 40) for g in (0, 1)]
    run_info = {"t0": t0, "config_name": "flavr-replicated", "mean_interval_ms": 20.0, "batch": 1,
                "nvml_baseline": {"available": True, "gpus": [
                    {"gpu": 0, "util_pct": 0, "mem_used_mib": 500.0, "processes": []},
                    {"gpu": 1, "util_pct": 0, "mem_used_mib": 480.5, "processes": []}]}}
    return table, table.finish(t0), samples, run_info


def test_summary_from_run_dir_equals_the_live_summary(tmp_path):
    table, rows, samples, run_info = live_run()
    live = summarize(rows, STEPS, run_info, samples)
    text = format_report(live)
    run_dir = write_run(tmp_path / "run", config_dict={"name": "flavr-replicated"}, args_dict={"mi": 20},
                        env={}, rows=rows, columns=table.columns(), nvml_samples=samples,
                        summary=live, report_text=text)
    again = summary_from_run_dir(run_dir)
    assert again == live
    assert live["failures"][0]["reason"] == "decoder: CUDA error"
    assert format_report(again) == text
    assert json.loads((run_dir / "report.json").read_text()) == live
    assert (run_dir / "report.txt").read_text() == text


def test_times_survive_the_csv_to_the_microsecond(tmp_path):
    # The live summary rounds times as requests.csv stores them, so both give the same numbers.
    table, rows, samples, run_info = live_run(t0=987654.321987654, seed=3)
    live = summarize(rows, STEPS, run_info, samples)
    run_dir = write_run(tmp_path / "r", config_dict={}, args_dict={}, env={}, rows=rows,
                        columns=table.columns(), nvml_samples=samples, summary=live, report_text="")
    assert summary_from_run_dir(run_dir) == live


def test_run_error_and_notices_become_warnings():
    s = summary_of(ten_measured(), {"config": "flavr-whole", "error": "child flavr[0] died",
                                    "notices": ["no GPU found: running on the CPU"]})
    assert s["warnings"][:2] == ["the run ended early: child flavr[0] died", "no GPU found: running on the CPU"]
    assert format_report(s).startswith("FLAVR serving benchmark: flavr-whole")


def test_samples_with_relative_times_are_taken_as_relative():
    samples = [{"t_s": 2.0, "t": 99999.0, "gpu": 0, "util_pct": 70, "mem_used_mib": 10.0, "mem_total_mib": 20.0}]
    assert summary_of(ten_measured(), samples=samples)["gpus"]["per_gpu"][0]["samples"] == 1


# --- what the numbers are worth -------------------------------------------------------------

def test_a_run_with_drops_says_in_its_headline_that_its_latency_is_not_valid():
    rows = ten_measured() + [row(12 + i, 6.0 + 0.1 * i, None, status="dropped",
                                 error="queue 'decode.in' is full") for i in range(5)]
    s = summary_of(rows)
    assert s["validity"]["latency_valid_for_load"] is False
    assert format_report(s).splitlines()[1] == (
        "!! latency NOT VALID for the offered load: 5 of 15 measured requests were dropped; "
        "the percentiles are of the 10 that finished ok")


def test_a_run_that_ended_early_says_so_in_its_headline():
    rows = ten_measured() + [row(12 + i, 6.0 + 0.1 * i, None, status="dropped",
                                 error="never admitted: interrupted") for i in range(5)]
    s = summary_of(rows, {"error": "interrupted (Ctrl-C / SIGTERM)"})
    assert format_report(s).splitlines()[1] == (
        "!! latency NOT VALID for the offered load: the run ended early, and 5 of 15 measured "
        "requests were never admitted or dropped; the percentiles are of the 10 that finished ok")


def test_a_run_without_drops_has_no_validity_headline():
    s = summary_of(ten_measured())
    assert s["validity"]["latency_valid_for_load"] is True
    assert "NOT VALID" not in format_report(s)


def test_the_breakdown_adds_up_to_the_mean_latency():
    b = summary_of(ten_measured())["breakdown"]
    assert b["requests"] == 10
    assert b["accounted_mean_s"] == pytest.approx(b["latency_mean_s"]) == pytest.approx(0.55)
    assert abs(b["residual_mean_s"]) < 1e-9
    parts = {(p["part"], p["column"]): p["mean_s"] for p in b["parts"]}
    assert parts[("client", "lag_s")] == pytest.approx(0.001)
    assert parts[("flavr", "queue_wait_s")] == pytest.approx(0.0055)


def test_the_report_shows_what_the_columns_leave_unaccounted():
    rows = ten_measured()
    for r in rows:
        if r.get("latency_s"):
            r["flavr.publish_s"] -= 0.1 * r["latency_s"]  # a tenth of every latency unaccounted
    s = summary_of(rows)
    assert s["breakdown"]["residual_share"] == pytest.approx(0.1)
    residual = next(line for line in format_report(s).splitlines() if line.strip().startswith("residual"))
    assert residual.split() == ["residual", "55.00", "10.000%"]


def test_a_pipeline_that_does_not_keep_up_with_its_load_is_reported():
    from record_helpers import served_by_one_server

    # 40 ms of service for a request every 20 ms: half the offered rate is delivered.
    s = summary_of(served_by_one_server([0.02 * (i + 1) for i in range(60)], 0.040),
                   {"mean_interval_ms": 20})
    assert s["load"]["offered_rps"] == pytest.approx(50.0)
    assert s["load"]["delivered_rps"] == pytest.approx(25.0)
    assert s["validity"]["kept_up"] is False
    assert any(w.startswith("the pipeline did not keep up with the offered load: it delivered "
                            "25.00 req/s while 50.00 req/s were offered (50%") for w in s["warnings"])
    # Service within the gap: it keeps up, and says nothing.
    s = summary_of(served_by_one_server([0.02 * (i + 1) for i in range(60)], 0.015))
    assert s["validity"]["kept_up"] is True
    assert not any("keep up" in w for w in s["warnings"])


def test_offered_load_is_the_rate_of_the_schedule_sent_not_the_nominal_one():
    from pipeline.serving.loadgen import poisson_offsets

    offsets = poisson_offsets(100, 100.0, seed=0)  # nominal 10 requests/s
    rows = [row(i, float(t), 0.05) for i, t in enumerate(offsets)]
    load = summary_of(rows, {"mean_interval_ms": 100.0})["load"]
    assert load["nominal_rps"] == pytest.approx(10.0)
    assert load["offered_rps"] == pytest.approx(99 / (offsets[-1] - offsets[0]))
    assert abs(load["offered_rps"] / load["nominal_rps"] - 1) > 0.05  # what this seed realises
