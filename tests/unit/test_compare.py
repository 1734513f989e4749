"""Comparison reports from log folders: run folders written with the pipeline's own log writer from
hand-built records (known numbers, seconds to write), compared without re-running anything."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.image
import pytest

from pipeline.analysis.compare import (
    SWEEP_FILE,
    capacity_from_probes,
    compare_dirs,
    judge_probe,
    main,
    repeat_warnings,
    write_comparison,
)
from pipeline.analysis.records import RecordTable
from pipeline.analysis.report import MIN_FOR_P99, format_report, summarize
from pipeline.serving.runlog import write_run

STEPS = ["decode", "flavr"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_rows(latencies, gap=0.05, lag=0.0002, statuses=None):
    """Requests every `gap` s with the given latencies; statuses: {index: status} for failures."""
    rows = []
    for i, lat in enumerate(latencies):
        r = {"request_id": i, "video": "clip.webm", "frames": 8, "output_frames": 15, "warmup": 0,
             "status": "ok", "error": "", "scheduled_s": gap * (i + 1),
             "issued_s": gap * (i + 1) + lag, "done_s": gap * (i + 1) + lat, "latency_s": lat}
        if (statuses or {}).get(i, "ok") != "ok":
            r.update({"status": statuses[i], "error": "queue full", "done_s": None, "latency_s": None})
            rows.append(r)
            continue
        for step, compute in (("decode", 0.002), ("flavr", lat * 0.6)):
            r.update({f"{step}.device": "cuda:0", f"{step}.replica": 0,
                      f"{step}.queue_wait_s": lat * 0.2, f"{step}.compute_s": compute,
                      f"{step}.handoff_s": 0.0005, f"{step}.publish_s": 0.0003, f"{step}.batch": 1})
        r.update({"sink.queue_wait_s": 0.001, "sink.handoff_s": 0.0})
        rows.append(r)
    return rows


def run_info(config, mi, batch=1, baseline=None, device="cpu", size=(16, 16)):
    return {"config": config, "t0": 1000.0, "steps": STEPS, "device_kind": device,
            "frame_sizes": [list(size)], "factor": 2, "precision": "fp32", "mean_interval_ms": mi,
            "batch": batch, "warmup": 0, "requests": 0, "error": None, "stop_reason": None,
            "notices": [], "nvml_baseline": baseline}


def write_crafted_run(root: Path, name: str, *, config="cfg", mi=50.0, latencies=None, gap=0.05,
                      lag=0.0002, batch=1, seed=0, samples=None, baseline=None,
                      size=(16, 16)) -> Path:
    """A run folder as the orchestrator writes it, from records whose numbers are known."""
    latencies = latencies if latencies is not None else [0.1 + 0.001 * i for i in range(120)]
    rows = make_rows(latencies, gap, lag)
    info = run_info(config, mi, batch, baseline, "cuda" if samples else "cpu", size)
    summary = summarize(rows, STEPS, info, samples)
    run_dir = root / name
    write_run(run_dir, config_dict={"name": config}, args_dict={"seed": seed, "per_gpu": False,
                                                                 "queue_size": 64},
              env={}, rows=rows, columns=RecordTable(STEPS).columns(), nvml_samples=samples or [],
              summary=summary, report_text=format_report(summary), run_info=info)
    return run_dir


def gpu_samples(n=40, util=80):
    return [{"t_s": 0.05 * i, "gpu": g, "util_pct": util - 10 * g, "mem_used_mib": 2000.0,
             "mem_total_mib": 81559.0} for i in range(n) for g in (0, 1)]


# --- repeat disagreement (the one cross-run check) ---------------------------------------------

def test_repeats_that_disagree_by_more_than_ten_percent_are_flagged():
    base = summarize(make_rows([0.100] * 120), STEPS, run_info("a", 50))
    slower = summarize(make_rows([0.100] * 120, gap=0.06), STEPS, run_info("a", 50))  # -17% req/s
    worse_tail = summarize(make_rows([0.100] * 110 + [0.115] * 10), STEPS, run_info("a", 50))
    close = summarize(make_rows([0.100] * 110 + [0.104] * 10), STEPS, run_info("a", 50))

    assert repeat_warnings([base]) == []
    assert repeat_warnings([base, close]) == []
    [w] = repeat_warnings([base, slower])
    assert w.startswith("repeats disagree: throughput") and "over 2 runs" in w
    [w] = repeat_warnings([base, worse_tail, close])
    assert w.startswith("repeats disagree: p99 100.00 to 115.00 ms over 3 runs (15% apart")


def test_comparison_reports_disagreeing_repeats_per_point(tmp_path):
    a = [write_crafted_run(tmp_path, "a0", config="a", latencies=[0.1] * 120, seed=0),
         write_crafted_run(tmp_path, "a1", config="a", latencies=[0.1] * 110 + [0.2] * 10, seed=1)]
    b = [write_crafted_run(tmp_path, "b0", config="b", latencies=[0.1] * 120, seed=0),
         write_crafted_run(tmp_path, "b1", config="b", latencies=[0.1] * 119 + [0.101], seed=1)]
    cmp = compare_dirs(a + b)
    ga, gb = cmp.groups
    assert (ga.label, len(ga.runs), gb.label, len(gb.runs)) == ("a", 2, "b", 2)
    assert [w for w in ga.warnings if w.startswith("repeats disagree")] == [
        "repeats disagree: p99 100.00 to 200.00 ms over 2 runs (100% apart; more than 10%): "
        "read differences between configs at this load with care"]
    assert not [w for w in gb.warnings if w.startswith("repeats disagree")]
    assert ga.stats["p99_ms"] == pytest.approx({"n": 2, "mean": 150.0, "min": 100.0, "max": 200.0,
                                                "std": 70.71067811865476})


# --- numbers and per-run warnings from the logs ------------------------------------------------

def test_comparison_numbers_are_each_runs_report_numbers(tmp_path):
    dirs = [write_crafted_run(tmp_path, f"r{i}", config=c, mi=mi, latencies=[0.05 * k + 0.001 * j
                                                                              for j in range(120)])
            for i, (c, mi, k) in enumerate([("a", 100.0, 1), ("a", 50.0, 2), ("b", 100.0, 3)])]
    out = tmp_path / "out"
    cmp = write_comparison(dirs, out)
    rows = {Path(r["run_dir"]).name: r for r in csv.DictReader(open(out / "runs.csv"))}
    groups = list(csv.DictReader(open(out / "compare.csv")))
    assert [(g["config"], float(g["mean_interval_ms"])) for g in groups] == [
        ("a", 100.0), ("a", 50.0), ("b", 100.0)]  # by config, then by rising load
    for d in dirs:
        live = json.loads((d / "report.json").read_text())
        row = rows[d.name]
        assert float(row["achieved_rps"]) == pytest.approx(live["throughput"]["requests_per_s"], rel=1e-9)
        assert float(row["output_fps"]) == pytest.approx(live["throughput"]["output_frames_per_s"], rel=1e-9)
        for p in ("p50", "p90", "p99", "max", "mean"):
            assert float(row[f"{p}_ms"]) == pytest.approx(live["latency_s"][p] * 1e3, abs=1e-9)
        group = next(g for g in groups if g["config"] == live["run"]["config"]
                     and float(g["mean_interval_ms"]) == live["run"]["mean_interval_ms"])
        assert float(group["p99_ms_mean"]) == pytest.approx(live["latency_s"]["p99"] * 1e3, abs=1e-9)
        assert float(group["p99_ms_std"]) == 0.0
    assert cmp.warnings == [] and all(g.warnings == [] for g in cmp.groups)
    assert "None." in (out / "compare.md").read_text()


def test_each_runs_validity_warnings_appear_once_in_the_report(tmp_path):
    busy = {"gpus": [{"gpu": 1, "util_pct": 60, "mem_used_mib": 9000.0,
                      "processes": [{"pid": 4242}]}]}
    dirs = [write_crafted_run(tmp_path, "lagging", config="lag", lag=0.030),
            write_crafted_run(tmp_path, "short", config="short", latencies=[0.1] * 20),
            write_crafted_run(tmp_path, "busy", config="busy", samples=gpu_samples(), baseline=busy)]
    cmp = write_comparison(dirs, tmp_path / "out")
    text = (tmp_path / "out" / "compare.md").read_text()
    for run, phrase in (("lagging", "the client fell behind its schedule"),
                        ("short", "p99 from 20 requests is not meaningful"),
                        ("busy", "GPU 1 was already busy before the run")):
        assert text.count(f"- {run}: {phrase}") == 1, (run, text)
    short = next(g for g in cmp.groups if g.label == "short")
    assert short.short == {"p99": True, "p90": False}
    assert "†" in next(line for line in text.splitlines() if line.startswith("| short |"))
    assert "no GPU samples" not in text


def test_a_run_whose_report_json_disagrees_with_its_logs_is_flagged(tmp_path):
    run = write_crafted_run(tmp_path, "edited")
    live = json.loads((run / "report.json").read_text())
    live["latency_s"]["p99"] *= 0.5
    (run / "report.json").write_text(json.dumps(live))
    [group] = compare_dirs([run]).groups
    assert any("differ from the run's own report.json" in w for w in group.warnings)


def test_labels_add_only_the_settings_that_differ(tmp_path):
    dirs = [write_crafted_run(tmp_path, "b1", config="cfg", batch=1),
            write_crafted_run(tmp_path, "b4", config="cfg", batch=4),
            write_crafted_run(tmp_path, "other", config="other")]
    assert [g.label for g in compare_dirs(dirs).groups] == ["cfg b1", "cfg b4", "other"]


def test_runs_at_different_frame_sizes_are_labelled_by_size(tmp_path):
    # run.json holds the run's frame sizes as the orchestrator writes them ("frame_sizes").
    dirs = [write_crafted_run(tmp_path, "small", size=(16, 16)),
            write_crafted_run(tmp_path, "large", size=(720, 1280))]
    labels = sorted(g.label for g in compare_dirs(dirs).groups)
    assert labels == ["cfg res=16x16", "cfg res=720x1280"]


# --- meeting an SLO: the capacity search's verdict, applied again to the logs -------------------

def summary_of(rows):
    return summarize(rows, STEPS, run_info("c", 50.0))


def test_probe_meets_the_slo_when_p99_is_within_it():
    s = summary_of(make_rows([0.1] * 99 + [0.3]))  # nearest-rank p99 of 100 is the 99th value
    v = judge_probe(s, 0.1)
    assert v.passed and v.reasons == [] and v.notices == []
    s = summary_of(make_rows([0.1] * 98 + [0.3, 0.3]))
    v = judge_probe(s, 0.2)
    assert not v.passed and v.reasons == ["p99 300.0 ms > SLO 200 ms"]


def test_probe_with_dropped_requests_fails_and_says_why():
    v = judge_probe(summary_of(make_rows([0.1] * 100, statuses={50: "dropped"})), 1.0)
    assert not v.passed and "did not finish ok (dropped 1)" in v.reasons[0]


def test_probe_whose_client_fell_behind_fails_and_says_why():
    v = judge_probe(summary_of(make_rows([0.1] * 100, lag=0.02)), 1.0)
    assert not v.passed and "client fell behind" in v.reasons[0]


def test_short_probe_is_flagged_not_hidden():
    v = judge_probe(summary_of(make_rows([0.1] * 30)), 1.0)
    assert v.passed and v.notices == [f"too short: p99 from 30 requests (need >= {MIN_FOR_P99})"]


def test_capacity_from_noisy_probes_is_below_the_lowest_failure():
    # a pass above a failure (noise) does not count
    assert capacity_from_probes([(10, True), (40, False), (20, False), (30, True), (15, True)]) == (15, 20)
    assert capacity_from_probes([(10, False)]) == (None, 10)


# --- capacity results ---------------------------------------------------------------------------

def test_capacity_is_judged_again_from_the_probe_logs(tmp_path):
    logs = tmp_path / "logs"
    p99s = {10.0: 0.1, 40.0: 0.9, 20.0: 0.2, 28.3: 0.6, 23.8: 0.3}  # search order, SLO 500 ms
    probes = []
    for rate, lat in p99s.items():
        d = write_crafted_run(logs, f"probe-{rate}", config="c", mi=round(1000 / rate, 3),
                              latencies=[lat] * 100)
        probes.append({"rate_rps": rate, "mean_interval_ms": round(1000 / rate, 3),
                       "run_dir": f"../{d.name}", "passed": lat <= 0.5})
    sweep = logs / "capacity-261121_000000-c"
    sweep.mkdir()
    record = {"kind": "capacity", "status": "complete", "command": "python -m pipeline.analysis.sweep capacity",
              "capacity": [{"config": "c", "slo_p99_ms": 500.0, "capacity_rps": 23.8,
                            "first_failing_rps": 28.3, "stop": "done", "probes": probes}]}
    (sweep / SWEEP_FILE).write_text(json.dumps(record))
    cmp = write_comparison([sweep])
    [cap] = cmp.capacity
    assert (cap["capacity_rps"], cap["first_failing_rps"]) == (23.8, 28.3)
    assert cap["first_failing"]["reasons"] == ["p99 600.0 ms > SLO 500 ms"]
    assert cmp.warnings == []
    assert all(g.capacity is cap for g in cmp.groups)
    text = (sweep / "compare.md").read_text()
    assert "| c | 500 | 23.8 |" in text and "meets p99 ≤ 500 ms" in text
    assert (sweep / "capacity.csv").exists()

    record["capacity"][0]["capacity_rps"] = 28.3  # a record that disagrees with its logs
    (sweep / SWEEP_FILE).write_text(json.dumps(record))
    assert any("recomputed from the logs is 23.8" in w for w in compare_dirs([sweep]).warnings)


# --- plots and the command ----------------------------------------------------------------------

def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 150 and image.shape[1] > 300, (path, image.shape)
    assert image.std() > 0.01, path  # not a blank canvas


def test_plots_are_written_as_readable_pngs(tmp_path):
    dirs = [write_crafted_run(tmp_path, f"{c}{mi}", config=c, mi=mi, samples=gpu_samples(),
                              latencies=[0.02 * k + 0.0005 * j for j in range(120)])
            for k, (c, mi) in enumerate([("a", 100.0), ("a", 50.0), ("b", 100.0), ("b", 50.0)], 1)]
    cmp = write_comparison(dirs, tmp_path / "out")
    for name in ("latency_vs_throughput", "latency_cdf", "stage_breakdown", "gpu_util"):
        assert_png(tmp_path / "out" / "plots" / f"{name}.png")
        assert f"(plots/{name}.png)" in cmp.markdown


def test_cpu_runs_say_no_gpu_samples(tmp_path):
    cmp = write_comparison([write_crafted_run(tmp_path, "cpu")], tmp_path / "out")
    assert "no GPU samples" in cmp.markdown
    assert_png(tmp_path / "out" / "plots" / "gpu_util.png")


def test_command_renders_folders_into_out(tmp_path, capsys):
    dirs = [write_crafted_run(tmp_path, "x"), write_crafted_run(tmp_path, "y", config="other")]
    assert main([str(d) for d in dirs] + ["--out", str(tmp_path / "cmp"), "--slo-p99-ms", "150"]) == 0
    printed = capsys.readouterr().out
    assert "| cfg |" in printed and "| other |" in printed and "meets p99 ≤ 150 ms" in printed
    for name in ("compare.md", "compare.csv", "runs.csv", "compare.json"):
        assert (tmp_path / "cmp" / name).exists()
    assert main([str(tmp_path / "nothing-here"), "--out", str(tmp_path / "cmp2")]) == 1
