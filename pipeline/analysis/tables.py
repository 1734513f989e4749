"""A comparison written out: compare.md (tables, capacity, validity warnings, plots), compare.csv
(one row per config and load), runs.csv (one row per run), capacity.csv (one row per probe) and
compare.json (all of it as data)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from pipeline.analysis.capacity import judge_probe
from pipeline.analysis.formatting import fmt, md_table
from pipeline.analysis.runs import LATENCY_METRICS, METRICS, OUTPUT_RATE_METRICS
from pipeline.analysis.statistics import MIN_FOR_P90, MIN_FOR_P99, PERCENTILE_METHOD


def _cell(stats: dict, spec: str, mark: str = "") -> str:
    """Mean over the runs, (min–max) when there are several."""
    if stats["n"] == 0:
        return "-"
    text = format(stats["mean"], spec) + mark
    if stats["n"] > 1:
        text += f" ({format(stats['min'], spec)}–{format(stats['max'], spec)})"
    return text


def _pooled_cell(group, name: str, spec: str, mark: str = "") -> str:
    """A latency percentile of the pooled requests; the runs' own values (min–max) alongside."""
    value = group.pooled[name]
    if value is None:
        return "-"
    text = format(value, spec) + mark
    runs = group.stats[name]
    if runs["n"] > 1:
        text += f" (runs {format(runs['min'], spec)}–{format(runs['max'], spec)})"
    return text


def _meets(group, slo_p99_ms: float) -> str:
    """Whether the point meets the SLO as a capacity probe would be judged (p99 within the
    bound, every request ok, keeping up with the load, the client on schedule): "no (k of n
    runs)" when some runs do not."""
    failed = sum(not judge_probe(r.summary, slo_p99_ms / 1000.0).passed for r in group.runs)
    if not failed:
        return "yes"
    return "no" if len(group.runs) == 1 else f"no ({failed} of {len(group.runs)} runs)"


def _output_rate_columns(rates: list[dict]) -> list[tuple[str, str]]:
    """(metric, header) of each output unit the compared runs count in: frames/s for FLAVR,
    clips/s for R(2+1)D, side by side when both are compared. Frames/s when no run says."""
    labels = {name: label for name, label, *_ in METRICS}
    present = [name for name in OUTPUT_RATE_METRICS.values()
               if any(r.get(name) is not None for r in rates)]
    return [(name, labels[name]) for name in present or [OUTPUT_RATE_METRICS["frames"]]]


def render_markdown(cmp, plot_files: dict | None = None) -> str:
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
    lines += _points(cmp)
    if cmp.capacity:
        lines += _capacity(cmp)
    lines += _warnings(cmp)
    if plot_files:
        lines += ["## Plots", ""]
        for name, path in plot_files.items():
            lines.append(f"![{name}]({path})")
        lines.append("")
    if not any(r.summary["gpus"]["sampled"] for r in cmp.runs):
        lines += ["GPU utilisation: no GPU samples (CPU runs, or NVML unavailable).", ""]
    return "\n".join(lines)


def _points(cmp) -> list[str]:
    lines = ["## Throughput and latency per config and load", ""]
    rates = _output_rate_columns([r.metrics for r in cmp.runs])
    header = ["config", "offered req/s", "runs", "ok req/run", "throughput req/s",
              *(label for _, label in rates), "p50 ms", "p90 ms", "p99 ms", "warnings"]
    if cmp.slo_p99_ms is not None:
        header.insert(-1, f"meets p99 ≤ {cmp.slo_p99_ms:g} ms")
    rows = []
    for g in cmp.groups:
        s = g.stats
        row = [g.label, g.load_text if g.bulk else _cell(s["offered_rps"], ".2f"), str(len(g.runs)),
               _cell(s["ok"], ".0f"), _cell(s["achieved_rps"], ".2f"),
               *(_cell(s[name], ".1f") for name, _ in rates), _pooled_cell(g, "p50_ms", ".1f"),
               _pooled_cell(g, "p90_ms", ".1f", "†" if g.short["p90"] else ""),
               _pooled_cell(g, "p99_ms", ".1f", "†" if g.short["p99"] else ""),
               str(len(g.warnings)) if g.warnings else ""]
        if cmp.slo_p99_ms is not None:
            row.insert(-1, _meets(g, cmp.slo_p99_ms))
        rows.append(row)
    lines += md_table(header, rows)
    lines += ["", "Rows: one per config, settings and load; runs in a row are repeats, identical "
                  "but for their arrival seed. Offered: the realised rate of the schedule each "
                  "run sent (mean over runs; compare.csv has the nominal one). Throughput: mean "
                  "over the runs, (min–max) when there are several; compare.csv also has the "
                  "standard deviation. Latency percentiles: of the requests of all runs pooled, "
                  "the runs' own values alongside. "
                  f"†: fewer than {MIN_FOR_P99} (p99) or {MIN_FOR_P90} (p90) requests pooled: "
                  "that percentile is not meaningful."
              + ("" if cmp.slo_p99_ms is None else
                 " Meets: p99 within the bound, every request ok, the pipeline keeping up with "
                 "the load and the client on schedule, in every run (the capacity search's rule)."),
              ""]
    return lines


def _capacity(cmp) -> list[str]:
    lines = ["## Capacity under the SLO", "",
             "The highest realised offered rate whose probe met p99 ≤ SLO with every request ok, "
             "the pipeline keeping up and the client on schedule, below the lowest rate that did "
             "not (the search sets nominal rates; both are in capacity.csv).", ""]
    rates = _output_rate_columns([p for c in cmp.capacity for p in c["probes"]])
    rows = []
    for c in cmp.capacity:
        at, bad = c["at_capacity"] or {}, c["first_failing"] or {}
        rows.append([c["config"], f"{c['slo_p99_ms']:g}", fmt(c["capacity_rps"], ".3g"),
                     fmt(at.get("achieved_rps"), ".2f"),
                     *(fmt(at.get(name), ".1f") for name, _ in rates),
                     fmt(at.get("p99_ms"), ".1f"), fmt(c["first_failing_rps"], ".3g"),
                     "; ".join(bad.get("reasons") or []) or "-", str(len(c["probes"])),
                     "; ".join([c.get("stop") or ""] + c["notices"]).strip("; ")])
    header = ["config", "SLO p99 ms", "capacity req/s", "achieved req/s",
              *(label for _, label in rates), "p99 ms", "lowest failing req/s", "why it failed",
              "probes", "notes"]
    lines += md_table(header, rows, text_columns=tuple(
        header.index(name) for name in ("config", "why it failed", "notes")))
    for c in cmp.capacity:
        lines += ["", f"Probes of {c['config']}, in search order:", ""]
        lines += md_table(
            ["nominal req/s", "offered req/s", "SLO", "p99 ms", "achieved req/s",
             "delivered req/s", "ok", "reasons and notices"],
            [[f"{p['rate_rps']:g}", fmt(p.get("offered_rps"), ".2f"),
              "met" if p["passed"] else "failed", fmt(p.get("p99_ms"), ".1f"),
              fmt(p.get("achieved_rps"), ".2f"), fmt(p.get("delivered_rps"), ".2f"),
              fmt(p.get("ok"), "d"),
              "; ".join((p.get("reasons") or []) + (p.get("notices") or [])) or "-"]
             for p in c["probes"]], text_columns=(2, 7))
    return lines + [""]


def _warnings(cmp) -> list[str]:
    lines = ["## Validity warnings", ""]
    any_warning = False
    if cmp.warnings:
        any_warning = True
        lines += [f"- {w}" for w in cmp.warnings] + [""]
    for g in cmp.groups:
        if g.warnings:
            any_warning = True
            lines += [f"**{g.label} at {g.load_label}**", ""]
            lines += [f"- {w}" for w in g.warnings] + [""]
    if not any_warning:
        lines += ["None.", ""]
    return lines


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


def write_tables(cmp, out_dir: Path) -> dict:
    files = {}
    names = [name for name, *_ in METRICS]
    header = ["config", "mean_interval_ms", "nominal_rps", "regime", "runs", "ok_min",
              "requests_pooled"]
    for n in names:
        header += [f"{n}_mean", f"{n}_min", f"{n}_max", f"{n}_std"]
    header += [f"{n}_pooled" for n in LATENCY_METRICS]
    header += ["p99_too_few_requests", "p90_too_few_requests", "slo_p99_ms", "capacity_rps",
               "warnings"]
    rows = []
    for g in cmp.groups:
        row = [g.label, g.mean_interval_ms, g.nominal_rps, g.regime, len(g.runs),
               g.stats["ok"]["min"], g.pooled["count"]]
        for n in names:
            st = g.stats[n]
            row += [st["mean"], st["min"], st["max"], st["std"]]
        row += [g.pooled[n] for n in LATENCY_METRICS]
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
        header = ["config", "slo_p99_ms", "probe", "rate_rps", "offered_rps", "mean_interval_ms",
                  "passed", "p99_ms", "achieved_rps", "delivered_rps", "ok", "reasons", "notices",
                  "run_dir", "capacity_rps", "capacity_nominal_rps"]
        rows = []
        for c in cmp.capacity:
            for i, p in enumerate(c["probes"]):
                rows.append([c["config"], c["slo_p99_ms"], i, p["rate_rps"], p.get("offered_rps"),
                             p["mean_interval_ms"], int(bool(p["passed"])), p.get("p99_ms"),
                             p.get("achieved_rps"), p.get("delivered_rps"), p.get("ok"),
                             " | ".join(p.get("reasons") or []),
                             " | ".join(p.get("notices") or []), p.get("run_dir"),
                             c["capacity_rps"], c.get("capacity_nominal_rps")])
        _write_csv(out_dir / "capacity.csv", header, rows)
        files["capacity.csv"] = out_dir / "capacity.csv"

    data = {
        "inputs": cmp.inputs,
        "warnings": cmp.warnings,
        "slo_p99_ms": cmp.slo_p99_ms,
        "groups": [{"config": g.label, "mean_interval_ms": g.mean_interval_ms,
                    "nominal_rps": g.nominal_rps, "offered_rps": g.offered_rps,
                    "regime": g.regime, "runs": [str(r.run_dir) for r in g.runs],
                    "stats": g.stats, "pooled": g.pooled, "too_few_requests": g.short,
                    "stages_ms": dict(g.stages), "warnings": g.warnings,
                    "capacity_rps": (g.capacity or {}).get("capacity_rps")} for g in cmp.groups],
        "runs": [{"run_dir": str(r.run_dir), "config": r.label, "mean_interval_ms": r.mean_interval_ms,
                  "repeat": r.repeat, "seed": r.seed, "origin": r.origin, "metrics": r.metrics,
                  "warnings": (r.summary.get("warnings") or []) + r.warnings} for r in cmp.runs],
        "capacity": cmp.capacity,
    }
    (out_dir / "compare.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    files["compare.json"] = out_dir / "compare.json"
    return files
