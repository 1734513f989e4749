"""Comparison reports from log folders: run folders written with the pipeline's own log writer from
hand-built records (known numbers, seconds to write), compared without re-running anything."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.image
import pytest
from record_helpers import STEPS, request_cells

from pipeline.analysis.capacity import capacity_from_probes, judge_probe
from pipeline.analysis.compare import compare_dirs, main, write_comparison
from pipeline.analysis.records import columns
from pipeline.analysis.report import MIN_FOR_P99, format_report, summarize
from pipeline.analysis.runs import repeat_warnings
from pipeline.analysis.sweep_folder import SWEEP_FILE
from pipeline.serving.runlog import write_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_rows(latencies, gap=0.05, lag=0.0002, statuses=None):
    """Requests every `gap` s with the given latencies; statuses: {index: status} for failures."""
    rows = []
    for i, lat in enumerate(latencies):
        status = (statuses or {}).get(i, "ok")
        if status != "ok":
            rows.append(request_cells(i, gap * (i + 1), None, lag=lag, status=status,
                                      error="queue full"))
            continue
        times = {"decode": {"queue_wait_s": lat * 0.2, "compute_s": 0.002, "publish_s": 0.0003},
                 "flavr": {"queue_wait_s": lat * 0.2, "publish_s": 0.0003, "handoff_s": 0.0005}}
        rows.append(request_cells(i, gap * (i + 1), lat, lag=lag, times=times,
                                  rest=("flavr", "compute_s")))
    return rows


def run_info(config, mi, batch=1, baseline=None, device="cpu", size=(16, 16), unit="frames"):
    return {"config": config, "t0": 1000.0, "steps": STEPS, "device_kind": device,
            "output_unit": unit, "frame_sizes": [list(size)], "factor": 2, "precision": "fp32",
            "mean_interval_ms": mi, "batch": batch, "warmup": 0, "requests": 0, "error": None,
            "stop_reason": None, "notices": [], "nvml_baseline": baseline}


def write_crafted_run(root: Path, name: str, *, config="cfg", mi=50.0, latencies=None, gap=0.05,
                      lag=0.0002, batch=1, seed=0, samples=None, baseline=None,
                      size=(16, 16), rows=None, args=None, unit="frames", launcher=None,
                      config_dict=None) -> Path:
    """A run folder as the orchestrator writes it, from records whose numbers are known.
    `args`: settings besides the seed, as args.json holds them; `unit`: what the model counts
    its outputs in (FLAVR frames, R(2+1)D clips)."""
    latencies = latencies if latencies is not None else [0.1 + 0.001 * i for i in range(120)]
    rows = rows if rows is not None else make_rows(latencies, gap, lag)
    info = run_info(config, mi, batch, baseline, "cuda" if samples else "cpu", size, unit)
    if launcher is not None:  # as run.json has it since the Ray launcher
        info["launcher"] = launcher
    summary = summarize(rows, STEPS, info, samples)
    run_dir = root / name
    write_run(run_dir, config_dict={"name": config, **(config_dict or {})},
              args_dict={"seed": seed, "per_gpu": False, "queue_size": 64, **(args or {})},
              env={}, rows=rows, columns=columns(STEPS), nvml_samples=samples or [],
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
                              latencies=[lat] * 100, gap=1 / rate)
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
    # The bracket is on the nominal rates the search set; the capacity is reported as the rate
    # the passing probe's schedule realised (here its requests came exactly every 1/rate s).
    assert (cap["capacity_nominal_rps"], cap["first_failing_nominal_rps"]) == (23.8, 28.3)
    assert cap["capacity_rps"] == pytest.approx(23.8) and cap["first_failing_rps"] == pytest.approx(28.3)
    assert cap["first_failing"]["reasons"] == ["p99 600.0 ms > SLO 500 ms"]
    assert cmp.warnings == []
    assert all(g.capacity is cap for g in cmp.groups)
    text = (sweep / "compare.md").read_text()
    assert "| c | 500 | 23.8 |" in text and "meets p99 ≤ 500 ms" in text
    assert (sweep / "capacity.csv").exists()

    record["capacity"][0]["capacity_rps"] = 28.3  # a record that disagrees with its logs
    (sweep / SWEEP_FILE).write_text(json.dumps(record))
    assert any("recomputed from the logs is 23.8 req/s nominal" in w
               for w in compare_dirs([sweep]).warnings)


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
    assert main([str(tmp_path / "nothing-here"), "--out", str(tmp_path / "cmp2")]) == 2
    assert not (tmp_path / "cmp2").exists()


# --- inputs that cannot be compared -------------------------------------------------------------

def test_inputs_that_are_neither_run_nor_sweep_folders_stop_the_command_writing_nothing(
        tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not a run")
    inputs = [tmp_path / "missing", tmp_path / "empty", tmp_path / "notes.txt"]
    before = sorted(tmp_path.rglob("*"))
    for argv in ([str(inputs[0])], [str(p) for p in inputs]):  # no --out: the default folder
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: nothing to compare: no input is a run folder")
        assert f"{inputs[0]}: does not exist" in err
    assert f"{inputs[1]}: is an empty folder" in err
    assert f"{inputs[2]}: is a file, not a folder" in err
    assert sorted(tmp_path.rglob("*")) == before


def test_inputs_that_are_not_run_folders_are_skipped_by_name_beside_ones_that_are(tmp_path, capsys):
    run = write_crafted_run(tmp_path / "logs", "run")
    missing = tmp_path / "elsewhere" / "missing"
    assert main([str(missing), str(run), "--no-plots"]) == 1  # done, but not all that was asked
    captured = capsys.readouterr()
    assert (f"warning: {missing}: does not exist: neither a run folder nor a sweep folder; "
            "skipped") in captured.err
    # Written next to the first input that is a run folder, not next to the missing one.
    [out] = (tmp_path / "logs").glob("compare-*")
    assert not (tmp_path / "elsewhere").exists()
    text = (out / "compare.md").read_text()
    assert f"- {missing}: does not exist: neither a run folder (run.json)" in text
    assert "| cfg |" in text and f"written: {out}" in captured.out


def test_a_damaged_run_json_is_named_with_its_line(tmp_path, capsys):
    run = write_crafted_run(tmp_path, "run")
    (run / "run.json").write_text('{"config": "cfg",\n  oops}')
    assert main([str(run), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"error: {run / 'run.json'}: not valid JSON at line 2, "
                                       "column 3: Expecting property name enclosed in double "
                                       "quotes\n")
    assert not (tmp_path / "out").exists()


def test_a_damaged_sweep_json_is_named_with_its_line(tmp_path, capsys):
    sweep = tmp_path / "sweep-261121_000000-c"
    sweep.mkdir()
    (sweep / SWEEP_FILE).write_text('{"kind": "sweep", "runs": [')
    assert main([str(sweep)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {sweep / SWEEP_FILE}: not valid JSON at line 1, column 28")
    assert sorted(p.name for p in sweep.iterdir()) == [SWEEP_FILE]


def test_a_run_folder_without_requests_csv_says_which_file_is_missing(tmp_path, capsys):
    run = write_crafted_run(tmp_path, "run")
    (run / "requests.csv").unlink()
    assert main([str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run / 'requests.csv'}: not found: the run folder has its "
                          "run.json but not its per-request records")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cut, says", [
    (lambda text: "", "damaged: empty, not even its header"),
    (lambda text: text[:len(text) // 2], "damaged: its last line is cut off"),
    (lambda text: "".join(text.splitlines(keepends=True)[:40]), "damaged: 39 rows for the 120 "
                                                                 "requests its run.json counts"),
])
def test_a_cut_or_empty_requests_csv_is_named_not_read_as_no_requests(tmp_path, capsys, cut,
                                                                       says):
    run = write_crafted_run(tmp_path, "run")
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "requests": 120}))  # as a run counts them
    assert main([str(run), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    capsys.readouterr()
    requests = run / "requests.csv"
    requests.write_text(cut(requests.read_text()))
    assert main([str(run), "--out", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {requests}: {says}") and err.count("\n") == 1, err
    assert not (tmp_path / "out2").exists()


def test_a_damaged_report_json_is_a_warning_not_an_error(tmp_path):
    # report.json only serves to check the recomputed numbers: the run is still compared.
    run = write_crafted_run(tmp_path, "run")
    (run / "report.json").write_text("{")
    [group] = compare_dirs([run]).groups
    assert any(w.startswith(f"run: {run / 'report.json'}: not valid JSON at line 1")
               for w in group.warnings)


# --- output units: FLAVR counts frames, R(2+1)D clips ---------------------------------------------

def test_each_model_s_output_rate_is_shown_in_its_own_unit(tmp_path):
    frames = write_crafted_run(tmp_path, "flavr", config="flavr")
    clips = write_crafted_run(tmp_path, "r21", config="r21", unit="clips",
                              latencies=[0.2] * 120)
    out = tmp_path / "out"
    cmp = write_comparison([frames, clips], out, plots=False)
    table = {cells[0]: cells for cells in (
        [c.strip() for c in line.strip("|").split("|")] for line in cmp.markdown.splitlines()
        if line.startswith(("| config |", "| flavr |", "| r21 |")))}
    header = table["config"]
    assert header[4:7] == ["throughput req/s", "output frames/s", "output clips/s"]
    frames_column, clips_column = 5, 6
    assert table["flavr"][clips_column] == "-" and table["r21"][frames_column] == "-"
    assert table["flavr"][frames_column] != "-" and table["r21"][clips_column] != "-"

    runs = {Path(r["run_dir"]).name: r for r in csv.DictReader(open(out / "runs.csv"))}
    groups = {g["config"]: g for g in csv.DictReader(open(out / "compare.csv"))}
    for name, own, other in (("flavr", "output_fps", "output_clips_per_s"),
                             ("r21", "output_clips_per_s", "output_fps")):
        live = json.loads((tmp_path / name / "report.json").read_text())["throughput"]
        assert float(runs[name][own]) == pytest.approx(live["output_frames_per_s"], rel=1e-9)
        assert runs[name][other] == ""
        assert float(groups[name][f"{own}_mean"]) == pytest.approx(live["output_frames_per_s"],
                                                                   rel=1e-9)
        assert groups[name][f"{other}_mean"] == ""


def test_a_comparison_of_frame_counting_runs_keeps_its_one_output_column(tmp_path):
    cmp = write_comparison([write_crafted_run(tmp_path, "flavr")], tmp_path / "out", plots=False)
    header = next(line for line in cmp.markdown.splitlines() if line.startswith("| config |"))
    assert "output frames/s" in header and "clips" not in header


def test_capacity_of_a_clip_counting_model_is_shown_in_clips(tmp_path):
    logs = tmp_path / "logs"
    d = write_crafted_run(logs, "probe", config="c", mi=100.0, gap=0.1, latencies=[0.1] * 100,
                          unit="clips")
    sweep = logs / "capacity-261121_000000-c"
    sweep.mkdir()
    (sweep / SWEEP_FILE).write_text(json.dumps({"kind": "capacity", "status": "complete",
        "capacity": [{"config": "c", "slo_p99_ms": 500.0, "stop": "done", "capacity_rps": 10.0,
                      "probes": [{"rate_rps": 10.0, "mean_interval_ms": 100.0,
                                  "run_dir": f"../{d.name}", "passed": True}]}]}))
    cmp = write_comparison([sweep], plots=False)
    clips_per_s = json.loads((d / "report.json").read_text())["throughput"]["output_frames_per_s"]
    lines = cmp.markdown.splitlines()
    start = lines.index("## Capacity under the SLO")
    header = next(line for line in lines[start:] if line.startswith("| config |"))
    assert "| achieved req/s | output clips/s | p99 ms |" in header
    row = next(line for line in lines[start:] if line.startswith("| c |"))
    assert f"| {clips_per_s:.1f} |" in row


# --- repeats, and only repeats, are pooled ----------------------------------------------------

def test_runs_identical_but_for_the_seed_are_repeats_of_one_point(tmp_path):
    dirs = [write_crafted_run(tmp_path, f"s{seed}", seed=seed) for seed in range(3)]
    [group] = compare_dirs(dirs).groups
    assert group.label == "cfg" and len(group.runs) == 3


@pytest.mark.parametrize("setting, values, labels", [
    ("warmup", (2, 10), ["cfg warmup=2", "cfg warmup=10"]),
    ("videos", (20, 100), ["cfg v20", "cfg v100"]),
    ("on_full", ("stop", "block"), ["cfg on_full=stop", "cfg on_full=block"]),
])
def test_runs_that_differ_in_more_than_the_seed_are_separate_rows(tmp_path, setting, values, labels):
    dirs = [write_crafted_run(tmp_path, f"{setting}{k}", seed=k, args={setting: value})
            for k, value in enumerate(values)]
    groups = compare_dirs(dirs).groups
    assert [g.label for g in groups] == labels
    assert all(len(g.runs) == 1 for g in groups)


def test_local_and_ray_runs_are_separate_points_labelled_by_launcher(tmp_path):
    # As the orchestrator writes them now: run.json and config.yaml both say the launcher.
    dirs = [write_crafted_run(tmp_path, "local", seed=1, launcher="local",
                              config_dict={"launcher": "local", "ray": {"address": None}}),
            write_crafted_run(tmp_path, "ray", seed=2, launcher="ray", args={"launcher": "ray"},
                              config_dict={"launcher": "ray", "ray": {"address": None}}),
            write_crafted_run(tmp_path, "cluster", seed=3, launcher="ray",
                              args={"launcher": "ray", "ray_address": "head:6379"},
                              config_dict={"launcher": "ray", "ray": {"address": "head:6379"}})]
    groups = compare_dirs(dirs).groups
    assert [g.label for g in groups] == ["cfg launcher=local",
                                         "cfg launcher=ray cluster=own",
                                         "cfg launcher=ray cluster=head:6379"]
    assert all(len(g.runs) == 1 for g in groups)
    assert not any("repeats disagree" in w for g in groups for w in g.warnings)


def test_a_ray_run_logged_before_config_yaml_said_its_launcher_is_still_told_apart(tmp_path):
    # Older Ray runs: config.yaml said launcher local; run.json said ray.
    dirs = [write_crafted_run(tmp_path, "local", seed=1, launcher="local",
                              config_dict={"launcher": "local"}),
            write_crafted_run(tmp_path, "ray", seed=2, launcher="ray", args={"launcher": "ray"},
                              config_dict={"launcher": "local"})]
    assert [g.label for g in compare_dirs(dirs).groups] == ["cfg launcher=local",
                                                             "cfg launcher=ray cluster=own"]


def test_percentiles_pool_the_requests_of_the_repeats(tmp_path):
    # Two repeats of 100 requests: one all at 100 ms, one with 10 at 300 ms. Their p99s are 100
    # and 300 ms (mean 200); of the 200 requests pooled, the 99th percentile is 300 ms.
    dirs = [write_crafted_run(tmp_path, "r0", latencies=[0.1] * 100, seed=0),
            write_crafted_run(tmp_path, "r1", latencies=[0.1] * 90 + [0.3] * 10, seed=1)]
    cmp = write_comparison(dirs, tmp_path / "out", plots=False)
    [g] = cmp.groups
    assert g.stats["p99_ms"]["mean"] == pytest.approx(200.0)  # the runs' own p99s, for reference
    assert g.pooled["count"] == 200 and g.pooled["p99_ms"] == pytest.approx(300.0)
    assert g.pooled["p50_ms"] == pytest.approx(100.0) and not g.short["p99"]
    row = next(line for line in cmp.markdown.splitlines() if line.startswith("| cfg |"))
    assert "| 300.0 (runs 100.0–300.0) |" in row
    group = next(csv.DictReader(open(tmp_path / "out" / "compare.csv")))
    assert float(group["p99_ms_pooled"]) == pytest.approx(300.0)


def test_offered_load_is_shown_as_realised(tmp_path):
    # Nominal 20 req/s (mean interval 50 ms), but requests came every 80 ms: 12.5 req/s offered.
    d = write_crafted_run(tmp_path, "slow", mi=50.0, gap=0.08)
    cmp = write_comparison([d], tmp_path / "out", plots=False)
    [g] = cmp.groups
    assert g.nominal_rps == pytest.approx(20.0) and g.offered_rps == pytest.approx(12.5)
    assert "| cfg | 12.50 |" in cmp.markdown


# --- the capacity rule ----------------------------------------------------------------------------

def test_an_overloaded_short_probe_fails_although_its_p99_is_within_the_slo():
    from record_helpers import served_by_one_server

    from pipeline.serving.loadgen import poisson_offsets

    # 40 ms of service at 40 requests/s for 30 requests: the queue grows all along, yet by the
    # last request it is under a second long, well within a 5 s SLO.
    rows = served_by_one_server(poisson_offsets(30, 25.0, seed=0), 0.040)
    v = judge_probe(summary_of(rows), 5.0)
    assert not v.passed
    [reason] = [r for r in v.reasons if r.startswith("overloaded")]
    assert reason.startswith("overloaded: delivered 24.57 req/s, 74% of the 33.28 req/s offered")
    assert not any(r.startswith("p99") for r in v.reasons)
    # The same pattern at a load it serves passes.
    rows = served_by_one_server(poisson_offsets(30, 100.0, seed=0), 0.040)
    assert judge_probe(summary_of(rows), 5.0).passed


def test_probe_whose_client_lagged_within_the_scaled_limit_passes():
    # 60 ms of lag at a request every 500 ms is on schedule (the limit is a quarter of it).
    v = judge_probe(summary_of(make_rows([0.1] * 100, gap=0.5, lag=0.06)), 1.0)
    assert v.passed, v.reasons


# --- the latency-vs-throughput plot ---------------------------------------------------------------

def test_latency_throughput_curves_join_only_the_loads_that_were_kept_up(tmp_path):
    from record_helpers import served_by_one_server

    from pipeline.analysis.plots import capacity_marks, throughput_series

    dirs = [write_crafted_run(tmp_path, "low", mi=200.0, gap=0.2),
            write_crafted_run(tmp_path, "mid", mi=100.0, gap=0.1),
            write_crafted_run(tmp_path, "over", mi=20.0, rows=served_by_one_server(
                [0.02 * (i + 1) for i in range(120)], 0.04)),
            write_crafted_run(tmp_path, "bulk", mi=0.0, gap=0.0)]
    cmp = compare_dirs(dirs)
    series = {(s.regime, s.metric): s for s in throughput_series(cmp)}
    assert set(series) == {(r, m) for r in ("within", "overloaded", "bulk")
                           for m in ("p50_ms", "p99_ms")}
    within = series[("within", "p99_ms")]
    assert within.joined and within.loads == ["5.00 req/s", "10.00 req/s"]
    assert within.xs == sorted(within.xs)
    assert not series[("overloaded", "p99_ms")].joined
    assert series[("overloaded", "p99_ms")].loads == ["50.00 req/s"]
    assert not series[("bulk", "p50_ms")].joined and series[("bulk", "p50_ms")].loads == ["bulk"]
    assert capacity_marks(cmp) == []


def test_the_capacity_marker_stands_at_the_throughput_its_probe_achieved(tmp_path):
    from pipeline.analysis.plots import capacity_marks

    logs = tmp_path / "logs"
    d = write_crafted_run(logs, "probe", config="c", mi=100.0, gap=0.1, latencies=[0.1] * 100)
    sweep = logs / "capacity-261121_000000-c"
    sweep.mkdir()
    (sweep / SWEEP_FILE).write_text(json.dumps({"kind": "capacity", "status": "complete",
        "capacity": [{"config": "c", "slo_p99_ms": 500.0, "stop": "done", "probes": [
            {"rate_rps": 10.0, "mean_interval_ms": 100.0, "run_dir": f"../{d.name}",
             "passed": True}]}]}))
    cmp = compare_dirs([sweep])
    [(label, x, text)] = capacity_marks(cmp)
    achieved = cmp.groups[0].stats["achieved_rps"]["mean"]
    assert label == "c" and x == pytest.approx(achieved)
    assert text.startswith("c capacity: 10 req/s offered")


def test_a_point_of_single_requests_at_interval_zero_is_not_called_bulk(tmp_path):
    """-mi 0 with one measured request per run scheduled nothing at once: the comparison says
    "one request", as each run's own report does, and keeps "bulk" for real bulk loads."""
    from pipeline.analysis.tables import render_markdown

    dirs = [write_crafted_run(tmp_path, f"one{i}", config="one", mi=0.0, gap=0.0, latencies=[0.1],
                              seed=i) for i in range(2)]
    dirs.append(write_crafted_run(tmp_path, "many", config="many", mi=0.0, gap=0.0))
    cmp = compare_dirs(dirs)
    groups = {g.label: g for g in cmp.groups}
    assert groups["one"].load_text == "one request" and groups["one"].load_label == "one request"
    assert groups["many"].load_text == "bulk"
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip()
            for line in render_markdown(cmp).splitlines() if line.startswith("| one") or
            line.startswith("| many")}
    assert rows == {"one": "one request", "many": "bulk"}
