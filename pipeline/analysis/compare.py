"""Compare runs from their logs folders: tables (markdown and CSV) and plots, never re-running.

    python -m pipeline.analysis.compare logs/sweep-261121_120000-flavr-whole+flavr-split
    python -m pipeline.analysis.compare logs/<run> logs/<run> logs/capacity-... --out cmp/

Inputs are run folders and sweep/capacity folders (their sweep.json says which runs belong to which
config, load and repeat). Every run's numbers are recomputed from its requests.csv and nvml.csv with
`report.summary_from_run_dir`, the function behind the run's own report, so a comparison rendered
a month later shows the numbers each run printed (and says so where they differ).

Runs are grouped by config and offered load (the nominal mean interval); a group's cells are the
mean over its runs with the min-max spread, and the CSV adds the standard deviation. Each run's
validity warnings come from its report summary (client behind schedule, too few requests for a
percentile, failures, a GPU busy before the start, ...); the only check made here is the one that
needs several runs: repeats of one point that disagree by more than 10% in throughput or p99.

Whether a run meets a p99 SLO (`judge_probe`) and which capacity a set of judged probes gives
(`capacity_from_probes`) are defined here too: the capacity search (pipeline/sweep.py) applies them
to each probe as it runs, and a comparison applies them again to the logs, so both agree.

Outputs (in --out; by default the sweep folder when one is given):
    compare.md     the tables, capacity results, validity warnings and links to the plots
    compare.csv    one row per config and load: mean/min/max/std of every metric, capacity
    runs.csv       one row per run: its numbers exactly as its report has them
    capacity.csv   one row per capacity probe (when a capacity search is among the inputs)
    compare.json   all of the above as data
    plots/*.png    latency vs throughput, latency CDFs, per-stage breakdown, GPU utilisation
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.analysis.report import (
    MIN_FOR_P90,
    MIN_FOR_P99,
    PERCENTILE_METHOD,
    _fmt,
    client_fell_behind,
    summary_from_run_dir,
)

# The file a sweep or capacity folder (pipeline/sweep.py) keeps its record in.
SWEEP_FILE = "sweep.json"

# Repeats of one config and load whose throughput or p99 differ by more than this fraction of the
# smaller value disagree: the difference between configs is then not to be read off one run.
REPEAT_SPREAD_LIMIT = 0.10

# name, label, unit, where in the summary, scale
METRICS = (
    ("achieved_rps", "throughput", "req/s", ("throughput", "requests_per_s"), 1.0),
    ("output_fps", "output frames/s", "frames/s", ("throughput", "output_frames_per_s"), 1.0),
    ("offered_rps", "offered (schedule)", "req/s", ("load", "offered_rps"), 1.0),
    ("mean_ms", "mean", "ms", ("latency_s", "mean"), 1e3),
    ("p50_ms", "p50", "ms", ("latency_s", "p50"), 1e3),
    ("p90_ms", "p90", "ms", ("latency_s", "p90"), 1e3),
    ("p99_ms", "p99", "ms", ("latency_s", "p99"), 1e3),
    ("max_ms", "max", "ms", ("latency_s", "max"), 1e3),
)
STAGE_PARTS = (("queue wait", ("queue_wait_s",)), ("compute", ("compute_s",)),
               ("hand-off", ("handoff_s", "publish_s")))


def run_metrics(summary: dict) -> dict:
    """A run's headline numbers as the comparison shows them (latencies in ms)."""
    out = {}
    for name, _, _, (section, key), scale in METRICS:
        value = (summary.get(section) or {}).get(key)
        out[name] = None if value is None else value * scale
    out["ok"] = summary["counts"]["ok"]
    out["latency_n"] = summary["latency_s"]["count"]
    return out


def spread_stats(values) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0, "mean": None, "min": None, "max": None, "std": None}
    mean = math.fsum(values) / len(values)
    std = (math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
           if len(values) > 1 else 0.0)
    return {"n": len(values), "mean": mean, "min": min(values), "max": max(values), "std": std}


def repeat_warnings(summaries: list[dict], limit: float = REPEAT_SPREAD_LIMIT) -> list[str]:
    """Warnings for repeats of one point whose throughput or p99 differ by more than `limit`
    (max - min over min). The one validity check that needs several runs."""
    if len(summaries) < 2:
        return []
    out = []
    for what, (section, key), scale, unit in (
            ("throughput", ("throughput", "requests_per_s"), 1.0, "req/s"),
            ("p99", ("latency_s", "p99"), 1e3, "ms")):
        values = [s[section][key] for s in summaries if s[section].get(key) is not None]
        if len(values) < 2:
            continue
        lo, hi = min(values), max(values)
        if lo > 0 and (hi - lo) / lo > limit:
            out.append(f"repeats disagree: {what} {lo * scale:.2f} to {hi * scale:.2f} {unit} over "
                       f"{len(values)} runs ({(hi - lo) / lo:.0%} apart; more than {limit:.0%}): "
                       "read differences between configs at this load with care")
    return out


# --------------------------------------------------------------------------------------------
# Meeting an SLO: the rule the capacity search applies to each probe, applied again here to
# the logs so a re-rendered comparison reaches the same verdicts and the same capacity
# --------------------------------------------------------------------------------------------

@dataclass
class Verdict:
    passed: bool
    reasons: list[str]  # why it failed (empty when it passed)
    notices: list[str]  # what limits the probe's meaning without failing it (too short)


def judge_probe(summary: dict, slo_p99_s: float) -> Verdict:
    """Whether one run meets the SLO: p99 within the bound, every request ok, client on schedule."""
    reasons, notices = [], []
    error = summary["run"].get("error")
    if error:
        reasons.append(f"the run ended early: {error}")
    c = summary["counts"]
    not_ok = {k: c[k] for k in ("error", "dropped", "unfinished") if c.get(k)}
    if c.get("warmup_not_ok"):
        not_ok["warm-up not ok"] = c["warmup_not_ok"]
    if not_ok:
        parts = ", ".join(f"{k} {v}" for k, v in not_ok.items())
        reasons.append(f"{sum(not_ok.values())} request(s) did not finish ok ({parts})")
    lag = summary["issue_lag_s"]
    if client_fell_behind(summary):
        reasons.append(f"the client fell behind its schedule (issue lag p99 {lag['p99'] * 1e3:.1f} ms, "
                       f"max {lag['max'] * 1e3:.1f} ms): the offered load was not delivered")
    lat = summary["latency_s"]
    p99 = lat.get("p99")
    if p99 is None:
        reasons.append("no measured request finished: no p99")
    elif p99 > slo_p99_s:
        reasons.append(f"p99 {p99 * 1e3:.1f} ms > SLO {slo_p99_s * 1e3:g} ms")
    n = lat.get("count") or 0
    if 0 < n < MIN_FOR_P99:
        notices.append(f"too short: p99 from {n} requests (need >= {MIN_FOR_P99})")
    return Verdict(not reasons, reasons, notices)


def rate_of(mean_interval_ms: float) -> float | None:
    """Requests/s of a Poisson load with this mean interval; None for bulk (0)."""
    return 1000.0 / mean_interval_ms if mean_interval_ms > 0 else None


def capacity_from_probes(probes: list[tuple[float, bool]]) -> tuple[float | None, float | None]:
    """(capacity, lowest failing rate) from judged probes: the highest passing rate below the
    lowest failing one. The same rule the search's final bracket follows, so a comparison
    re-rendered from the logs finds the same capacity."""
    failing = [r for r, ok in probes if not ok]
    bad = min(failing) if failing else None
    passing = [r for r, ok in probes if ok and (bad is None or r < bad)]
    return (max(passing) if passing else None), bad


def capacity_notices(probes: list[dict]) -> list[str]:
    """What limits a capacity's meaning: probes too short for their p99."""
    short = [p for p in probes if any(n.startswith("too short") for n in p.get("notices") or [])]
    if not short:
        return []
    return [f"{len(short)} of {len(probes)} probe(s) measured fewer than {MIN_FOR_P99} requests, "
            "too few for a meaningful p99: the capacity is indicative only (raise --min-requests)"]


def resolve_run_dir(sweep_dir, text: str) -> Path:
    path = Path(text)
    return path if path.is_absolute() else (Path(sweep_dir) / path).resolve()



# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

@dataclass
class RunPoint:
    run_dir: Path
    summary: dict
    base_label: str
    mean_interval_ms: float
    repeat: int | None = None
    seed: int | None = None
    origin: str = "run"
    attrs: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # found here: live report differs
    label: str = ""

    @property
    def metrics(self) -> dict:
        return run_metrics(self.summary)


@dataclass
class Group:
    label: str
    mean_interval_ms: float
    runs: list[RunPoint]
    stats: dict
    warnings: list[str]
    short: dict  # percentile -> True when some run had too few requests for it
    stages: list[tuple[str, dict]]  # per step: part -> mean ms (means over runs)
    capacity: dict | None = None

    @property
    def rate(self) -> float | None:
        return rate_of(self.mean_interval_ms)

    @property
    def load_text(self) -> str:
        return "bulk" if self.rate is None else f"{self.rate:.2f}"


@dataclass
class Comparison:
    inputs: list[str]
    sweeps: list[dict]
    runs: list[RunPoint]
    groups: list[Group]
    capacity: list[dict]
    warnings: list[str]
    slo_p99_ms: float | None = None
    markdown: str = ""
    out_dir: Path | None = None
    files: dict = field(default_factory=dict)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _load_run(run_dir: Path, base_label: str | None, origin: str, repeat=None, seed=None) -> RunPoint:
    summary = summary_from_run_dir(run_dir)
    run = summary["run"]
    args = _read_json(run_dir / "args.json") if (run_dir / "args.json").exists() else {}
    per_gpu = args.get("per_gpu", args.get("per_gpu_queue"))
    sizes = "+".join("x".join(map(str, s)) for s in run.get("frame_sizes") or [])
    attrs = {"b": run.get("batch"), "p": None if per_gpu is None else int(bool(per_gpu)),
             "qs": args.get("queue_size"), "res": sizes or None,
             "prec": run.get("precision"), "device": run.get("device_kind"),
             "decode": args.get("decode_backend"),
             "mps": run["mps"].split(" ")[0].rstrip(":") if run.get("mps") else None}
    warnings = []
    live_path = run_dir / "report.json"
    if live_path.exists():
        live = _read_json(live_path)
        if json.loads(json.dumps(summary)) != live:
            warnings.append("the numbers recomputed from requests.csv differ from the run's own "
                            "report.json (was the report code changed since the run?); this "
                            "comparison shows the recomputed ones")
    else:
        warnings.append("no report.json: the run may not have finished writing its logs")
    if seed is None:
        seed = args.get("seed")
    return RunPoint(run_dir, summary, base_label or args.get("config_label") or run.get("config")
                    or run_dir.name, float(run.get("mean_interval_ms") or 0.0), repeat, seed,
                    origin, attrs, warnings)


def load_inputs(paths) -> tuple[list[RunPoint], list[dict], list[dict], list[str]]:
    """Runs, capacity results and sweep records from run and sweep folders; plus warnings about
    anything missing. A run reachable twice (a sweep and its run folder) counts once."""
    runs: dict[Path, RunPoint] = {}
    capacity, sweeps, warnings = [], [], []

    def add(run_dir: Path, label, origin, repeat=None, seed=None):
        key = run_dir.resolve()
        if key in runs:
            return runs[key]
        if not (run_dir / "run.json").exists():
            warnings.append(f"{run_dir}: not a run folder (no run.json); skipped")
            return None
        runs[key] = _load_run(run_dir, label, origin, repeat, seed)
        return runs[key]

    for text in paths:
        path = Path(text)
        if (path / SWEEP_FILE).exists():
            record = _read_json(path / SWEEP_FILE)
            record["folder"] = str(path)
            sweeps.append(record)
            origin = f"{record.get('kind', 'sweep')} {path.name}"
            if record.get("status") != "complete":
                warnings.append(f"{path.name}: the sweep is {record.get('status', 'incomplete')}: "
                                "not every planned run is there")
            for r in record.get("runs", []):
                if not r.get("run_dir"):
                    warnings.append(f"{path.name}: {r['config']} at mean interval "
                                    f"{r['mean_interval_ms']:g} ms, repeat {r['repeat']}: no logs "
                                    f"folder ({r.get('error') or 'unknown reason'})")
                    continue
                add(resolve_run_dir(path, r["run_dir"]), r["config"], origin, r.get("repeat"),
                    r.get("seed"))
            for entry in record.get("capacity", []):
                capacity.append(_capacity_entry(entry, path, record, add, warnings))
        elif (path / "run.json").exists():
            add(path, None, "run")
        else:
            warnings.append(f"{path}: neither a run folder (run.json) nor a sweep folder "
                            f"({SWEEP_FILE}); skipped")
    return list(runs.values()), capacity, sweeps, warnings


def _capacity_entry(entry: dict, sweep_dir: Path, record: dict, add, warnings) -> dict:
    """A capacity result with every probe judged again from its logs (same rule as the search)."""
    slo = entry["slo_p99_ms"]
    probes = []
    for p in entry.get("probes", []):
        probe = dict(p)
        point = None
        if p.get("run_dir"):
            point = add(resolve_run_dir(sweep_dir, p["run_dir"]), entry["config"],
                        f"capacity {sweep_dir.name}")
        if point is not None:
            verdict = judge_probe(point.summary, slo / 1000.0)
            m = point.metrics
            probe.update(passed=verdict.passed, reasons=verdict.reasons, notices=verdict.notices,
                         p99_ms=m["p99_ms"], achieved_rps=m["achieved_rps"],
                         output_fps=m["output_fps"], ok=m["ok"], run_dir=str(point.run_dir))
            if verdict.passed != p.get("passed"):
                warnings.append(f"{sweep_dir.name}: probe at {p['rate_rps']:g} req/s of "
                                f"{entry['config']} was judged {'pass' if p.get('passed') else 'fail'} "
                                f"during the search but {'pass' if verdict.passed else 'fail'} from its "
                                "logs now")
        probes.append(probe)
    capacity, first_bad = capacity_from_probes([(p["rate_rps"], p["passed"]) for p in probes])
    if capacity != entry.get("capacity_rps") and entry.get("stop") != "running":
        warnings.append(f"{sweep_dir.name}: capacity of {entry['config']} recomputed from the logs "
                        f"is {capacity} req/s, the search reported {entry.get('capacity_rps')}")
    at = next((p for p in probes if p["rate_rps"] == capacity and p["passed"]), None)
    failing = next((p for p in probes if p["rate_rps"] == first_bad and not p["passed"]), None)
    return {"config": entry["config"], "slo_p99_ms": slo, "capacity_rps": capacity,
            "first_failing_rps": first_bad, "at_capacity": at, "first_failing": failing,
            "probes": probes, "stop": entry.get("stop"), "folder": str(sweep_dir),
            "notices": capacity_notices(probes), "command": record.get("command")}


# --------------------------------------------------------------------------------------------
# Grouping
# --------------------------------------------------------------------------------------------

_NAMED = ("res", "decode", "mps")  # values that read badly glued to the key: key=value


def _labels(runs: list[RunPoint]) -> None:
    """Label = config label, plus whatever run setting differs between runs of that label
    (batch, per-GPU queues, queue size, frame size, precision, device, decode backend, MPS)."""
    by_base: dict[str, list[RunPoint]] = {}
    for r in runs:
        by_base.setdefault(r.base_label, []).append(r)
    for base, members in by_base.items():
        varying = [k for k in members[0].attrs
                   if len({json.dumps(m.attrs.get(k)) for m in members}) > 1]
        for m in members:
            extra = " ".join(f"{k}={m.attrs.get(k)}" if k in _NAMED else f"{k}{m.attrs.get(k)}"
                             for k in varying)
            m.label = f"{base} {extra}" if extra else base


def _stage_means(runs: list[RunPoint]) -> list[tuple[str, dict]]:
    steps = _dedupe([entry["step"] for r in runs for entry in r.summary["stages"]])
    out = []
    for step in steps:
        parts = {}
        for part, fields in STAGE_PARTS:
            per_run = []
            for r in runs:
                entry = next((e for e in r.summary["stages"] if e["step"] == step), None)
                if entry is None:
                    continue
                values = [entry[f]["mean"] for f in fields if f in entry and entry[f]["mean"] is not None]
                if values:
                    per_run.append(math.fsum(values) * 1e3)
            parts[part] = spread_stats(per_run)["mean"]
        out.append((step, parts))
    return out


def group_runs(runs: list[RunPoint]) -> list[Group]:
    _labels(runs)
    order = _dedupe([r.label for r in runs])
    keyed: dict[tuple[str, float], list[RunPoint]] = {}
    for r in runs:
        keyed.setdefault((r.label, r.mean_interval_ms), []).append(r)
    groups = []
    for (label, mi), members in keyed.items():
        members.sort(key=lambda r: (r.repeat if r.repeat is not None else 1 << 30, r.run_dir.name))
        metrics = [m.metrics for m in members]
        stats = {name: spread_stats([x[name] for x in metrics]) for name, *_ in METRICS}
        stats["ok"] = spread_stats([x["ok"] for x in metrics])
        counts = [x["latency_n"] for x in metrics]
        short = {"p99": any(0 < n < MIN_FOR_P99 for n in counts),
                 "p90": any(0 < n < MIN_FOR_P90 for n in counts)}
        warnings = repeat_warnings([m.summary for m in members])
        for m in members:
            warnings += [f"{m.run_dir.name}: {w}" for w in m.summary.get("warnings") or []]
            warnings += [f"{m.run_dir.name}: {w}" for w in m.warnings]
        groups.append(Group(label, mi, members, stats, _dedupe(warnings), short,
                            _stage_means(members)))
    groups.sort(key=lambda g: (order.index(g.label), g.rate if g.rate is not None else math.inf))
    return groups


def _dedupe(items: list[str]) -> list[str]:
    """The items in first-seen order, each once."""
    return list(dict.fromkeys(items))


def compare_dirs(paths, slo_p99_ms: float | None = None) -> Comparison:
    runs, capacity, sweeps, warnings = load_inputs(paths)
    groups = group_runs(runs)
    by_label = {}
    for r in runs:
        by_label.setdefault(r.base_label, set()).add(r.label)
    for cap in capacity:
        for g in groups:
            if g.label == cap["config"] or g.label in by_label.get(cap["config"], ()):
                g.capacity = cap
    if slo_p99_ms is None:
        slos = {c["slo_p99_ms"] for c in capacity}
        slo_p99_ms = slos.pop() if len(slos) == 1 else None
    return Comparison([str(p) for p in paths], sweeps, runs, groups, capacity, warnings, slo_p99_ms)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

def _cell(stats: dict, spec: str, mark: str = "") -> str:
    if stats["n"] == 0:
        return "-"
    text = format(stats["mean"], spec) + mark
    if stats["n"] > 1:
        text += f" ({format(stats['min'], spec)}–{format(stats['max'], spec)})"
    return text


def _md_table(header: list[str], rows: list[list[str]], text_columns=(0,)) -> list[str]:
    """A markdown table; columns in text_columns are left-aligned, the others (numbers) right."""
    def esc(cell) -> str:
        return str(cell).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i in text_columns else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return lines


def _meets(group: Group, slo_p99_ms: float) -> str:
    """Whether the point meets the SLO as a capacity probe would be judged: p99 within the bound,
    every request ok, the client on schedule; "no (k of n runs)" when some runs do not."""
    failed = sum(not judge_probe(r.summary, slo_p99_ms / 1000.0).passed for r in group.runs)
    if not failed:
        return "yes"
    return "no" if len(group.runs) == 1 else f"no ({failed} of {len(group.runs)} runs)"


def render_markdown(cmp: Comparison, plot_files: dict | None = None) -> str:
    lines = ["# Comparison", ""]
    for s in cmp.sweeps:
        what = "capacity search" if s.get("kind") == "capacity" else "load sweep"
        lines.append(f"- {what} `{Path(s['folder']).name}` ({s.get('status')}): "
                     f"`{s.get('command') or 'command not recorded'}`")
    loose = [r for r in cmp.runs if r.origin == "run"]
    if loose:
        lines.append(f"- {len(loose)} run folder(s) given directly")
    lines += ["", f"{len(cmp.runs)} runs. Every number is recomputed from the run's own logs "
                  "(requests.csv, nvml.csv) by the function behind its report, so it matches "
                  "the report the run printed. Latency counts from each request's scheduled "
                  f"time; percentiles are {PERCENTILE_METHOD.split(':')[0]}.", ""]

    lines += ["## Throughput and latency per config and load", ""]
    header = ["config", "offered req/s", "runs", "ok req/run", "throughput req/s",
              "output frames/s", "p50 ms", "p90 ms", "p99 ms", "warnings"]
    if cmp.slo_p99_ms is not None:
        header.insert(-1, f"meets p99 ≤ {cmp.slo_p99_ms:g} ms")
    rows = []
    for g in cmp.groups:
        s = g.stats
        row = [g.label, g.load_text, str(len(g.runs)), _cell(s["ok"], ".0f"),
               _cell(s["achieved_rps"], ".2f"), _cell(s["output_fps"], ".1f"),
               _cell(s["p50_ms"], ".1f"), _cell(s["p90_ms"], ".1f", "†" if g.short["p90"] else ""),
               _cell(s["p99_ms"], ".1f", "†" if g.short["p99"] else ""),
               str(len(g.warnings)) if g.warnings else ""]
        if cmp.slo_p99_ms is not None:
            row.insert(-1, _meets(g, cmp.slo_p99_ms))
        rows.append(row)
    lines += _md_table(header, rows)
    lines += ["", "Cells: mean over the runs, (min–max) when there are several; compare.csv also "
                  "has the standard deviation. Offered: the nominal Poisson rate. "
                  f"†: at least one run had fewer than {MIN_FOR_P99} (p99) or {MIN_FOR_P90} (p90) "
                  "measured requests: that percentile is not meaningful."
              + ("" if cmp.slo_p99_ms is None else
                 " Meets: p99 within the bound, every request ok and the client on schedule, in "
                 "every run (the capacity search's rule)."), ""]

    if cmp.capacity:
        lines += ["## Capacity under the SLO", "",
                  "The highest Poisson rate whose probe met p99 ≤ SLO with every request ok and "
                  "the client on schedule, below the lowest rate that did not.", ""]
        rows = []
        for c in cmp.capacity:
            at, bad = c["at_capacity"] or {}, c["first_failing"] or {}
            rows.append([c["config"], f"{c['slo_p99_ms']:g}", _fmt(c["capacity_rps"], "g"),
                         _fmt(at.get("achieved_rps"), ".2f"), _fmt(at.get("output_fps"), ".1f"),
                         _fmt(at.get("p99_ms"), ".1f"), _fmt(c["first_failing_rps"], "g"),
                         "; ".join(bad.get("reasons") or []) or "-", str(len(c["probes"])),
                         "; ".join([c.get("stop") or ""] + c["notices"]).strip("; ")])
        lines += _md_table(["config", "SLO p99 ms", "capacity req/s", "achieved req/s",
                            "output frames/s", "p99 ms", "lowest failing req/s", "why it failed",
                            "probes", "notes"], rows, text_columns=(0, 7, 9))
        for c in cmp.capacity:
            lines += ["", f"Probes of {c['config']}, in search order:", ""]
            lines += _md_table(
                ["rate req/s", "SLO", "p99 ms", "achieved req/s", "ok", "reasons and notices"],
                [[f"{p['rate_rps']:g}", "met" if p["passed"] else "failed", _fmt(p.get("p99_ms"), ".1f"),
                  _fmt(p.get("achieved_rps"), ".2f"), _fmt(p.get("ok"), "d"),
                  "; ".join((p.get("reasons") or []) + (p.get("notices") or [])) or "-"]
                 for p in c["probes"]], text_columns=(1, 5))
        lines.append("")

    lines += ["## Validity warnings", ""]
    any_warning = False
    if cmp.warnings:
        any_warning = True
        lines += [f"- {w}" for w in cmp.warnings] + [""]
    for g in cmp.groups:
        if g.warnings:
            any_warning = True
            lines += [f"**{g.label} at {g.load_text}" + ("" if g.rate is None else " req/s") + "**", ""]
            lines += [f"- {w}" for w in g.warnings] + [""]
    if not any_warning:
        lines += ["None.", ""]

    if plot_files:
        lines += ["## Plots", ""]
        for name, path in plot_files.items():
            lines.append(f"![{name}]({path})")
        lines.append("")
    if not any(r.summary["gpus"]["sampled"] for r in cmp.runs):
        lines += ["GPU utilisation: no GPU samples (CPU runs, or NVML unavailable).", ""]
    return "\n".join(lines)


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, float):
        # 9 decimals: exact for the logs' microsecond times in ms, and no 44.919000000000004
        return repr(round(value, 9))
    return value


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for row in rows:
            w.writerow([_csv_value(v) for v in row])


def write_tables(cmp: Comparison, out_dir: Path) -> dict:
    files = {}
    names = [name for name, *_ in METRICS]
    header = ["config", "mean_interval_ms", "offered_rps_nominal", "runs", "ok_min"]
    for n in names:
        header += [f"{n}_mean", f"{n}_min", f"{n}_max", f"{n}_std"]
    header += ["p99_too_few_requests", "p90_too_few_requests", "slo_p99_ms", "capacity_rps",
               "warnings"]
    rows = []
    for g in cmp.groups:
        row = [g.label, g.mean_interval_ms, g.rate, len(g.runs), g.stats["ok"]["min"]]
        for n in names:
            st = g.stats[n]
            row += [st["mean"], st["min"], st["max"], st["std"]]
        cap = g.capacity or {}
        row += [int(g.short["p99"]), int(g.short["p90"]), cap.get("slo_p99_ms"),
                cap.get("capacity_rps"), " | ".join(g.warnings)]
        rows.append(row)
    _write_csv(out_dir / "compare.csv", header, rows)
    files["compare.csv"] = out_dir / "compare.csv"

    header = ["run_dir", "config", "mean_interval_ms", "repeat", "seed", "origin", "ok",
              "latency_n"] + names + ["warnings"]
    rows = []
    for g in cmp.groups:
        for r in g.runs:
            m = r.metrics
            rows.append([str(r.run_dir), r.label, r.mean_interval_ms, r.repeat, r.seed, r.origin,
                         m["ok"], m["latency_n"]] + [m[n] for n in names]
                        + [" | ".join((r.summary.get("warnings") or []) + r.warnings)])
    _write_csv(out_dir / "runs.csv", header, rows)
    files["runs.csv"] = out_dir / "runs.csv"

    if cmp.capacity:
        header = ["config", "slo_p99_ms", "probe", "rate_rps", "mean_interval_ms", "passed",
                  "p99_ms", "achieved_rps", "ok", "reasons", "notices", "run_dir", "capacity_rps"]
        rows = []
        for c in cmp.capacity:
            for i, p in enumerate(c["probes"]):
                rows.append([c["config"], c["slo_p99_ms"], i, p["rate_rps"], p["mean_interval_ms"],
                             int(bool(p["passed"])), p.get("p99_ms"), p.get("achieved_rps"),
                             p.get("ok"), " | ".join(p.get("reasons") or []),
                             " | ".join(p.get("notices") or []), p.get("run_dir"),
                             c["capacity_rps"]])
        _write_csv(out_dir / "capacity.csv", header, rows)
        files["capacity.csv"] = out_dir / "capacity.csv"

    data = {
        "inputs": cmp.inputs,
        "warnings": cmp.warnings,
        "slo_p99_ms": cmp.slo_p99_ms,
        "groups": [{"config": g.label, "mean_interval_ms": g.mean_interval_ms, "rate_rps": g.rate,
                    "runs": [str(r.run_dir) for r in g.runs], "stats": g.stats,
                    "too_few_requests": g.short, "stages_ms": dict(g.stages),
                    "warnings": g.warnings,
                    "capacity_rps": (g.capacity or {}).get("capacity_rps")} for g in cmp.groups],
        "runs": [{"run_dir": str(r.run_dir), "config": r.label, "mean_interval_ms": r.mean_interval_ms,
                  "repeat": r.repeat, "seed": r.seed, "origin": r.origin, "metrics": r.metrics,
                  "warnings": (r.summary.get("warnings") or []) + r.warnings} for r in cmp.runs],
        "capacity": cmp.capacity,
    }
    (out_dir / "compare.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    files["compare.json"] = out_dir / "compare.json"
    return files


def default_out_dir(paths) -> Path:
    sweeps = [Path(p) for p in paths if (Path(p) / SWEEP_FILE).exists()]
    if len(paths) == 1 and sweeps:
        return sweeps[0]
    first = Path(paths[0]).resolve()
    return first.parent / f"compare-{_dt.datetime.now():%y%m%d_%H%M%S}"


def write_comparison(paths, out_dir=None, slo_p99_ms: float | None = None,
                     plots: bool = True) -> Comparison:
    """Compare the given run/sweep folders and write every output into out_dir."""
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("nothing to compare: give run folders or sweep folders")
    cmp = compare_dirs(paths, slo_p99_ms)
    out = Path(out_dir) if out_dir is not None else default_out_dir(paths)
    out.mkdir(parents=True, exist_ok=True)
    cmp.out_dir = out
    cmp.files = write_tables(cmp, out)
    plot_files = {}
    if plots and cmp.runs:
        from pipeline.analysis.plots import write_plots

        written = write_plots(cmp, out / "plots")
        cmp.files.update(written)
        plot_files = {name: str(path.relative_to(out)) for name, path in written.items()}
    cmp.markdown = render_markdown(cmp, plot_files)
    (out / "compare.md").write_text(cmp.markdown)
    cmp.files["compare.md"] = out / "compare.md"
    return cmp


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.analysis.compare",
        description="Compare runs from their logs folders (run folders and sweep/capacity "
                    "folders): tables, validity warnings and plots, without re-running anything.")
    p.add_argument("paths", nargs="+", metavar="RUN_DIR_OR_SWEEP_DIR")
    p.add_argument("--out", default=None,
                   help="output folder (default: the sweep folder when one is given, else "
                        "compare-<time> next to the first input)")
    p.add_argument("--slo-p99-ms", type=float, default=None,
                   help="mark which points meet this p99 bound (default: the capacity search's)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    args = p.parse_args(argv)
    try:
        cmp = write_comparison(args.paths, args.out, args.slo_p99_ms, plots=not args.no_plots)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(cmp.markdown)
    print(f"written: {cmp.out_dir}")
    return 0 if cmp.runs else 1


if __name__ == "__main__":
    sys.exit(main())
