"""The comparison's plots (PNG, matplotlib's Agg backend: no display needed).

    latency_vs_throughput.png  p50 and p99 against achieved throughput per config: a curve through
                               the loads it kept up with, separate points for overloaded and bulk
                               runs, each point labelled with its offered load
    latency_cdf.png            end-to-end latency CDF per config, one line per load
    stage_breakdown.png        stacked per-step means: waits (queue, slot, stream), compute,
                               hand-off and publish
    gpu_util.png               NVML utilisation over time per GPU ("no GPU samples" on CPU runs)

Everything drawn comes from a `compare.Comparison`, itself computed from the runs' logs; the CDFs
read the ok measured requests of each run's requests.csv, the same requests its percentiles use.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

from pipeline.analysis.runs import dedupe  # noqa: E402
from pipeline.serving.gpu_monitor import read_samples_csv  # noqa: E402

DPI = 110
PART_COLOURS = {"waits": "Oranges", "compute": "Blues", "hand-off, publish": "Greens"}  # runs.STAGE_PARTS


def _colours(labels: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {label: cmap(i % 10) for i, label in enumerate(labels)}


def _config_order(cmp) -> list[str]:
    return dedupe([g.label for g in cmp.groups])


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


@dataclass
class Series:
    """Points of one config on the latency-vs-throughput plot that may be drawn as one line."""

    config: str
    regime: str  # within (joined), overloaded or bulk (drawn as separate points)
    metric: str  # p50_ms | p99_ms
    xs: list[float]  # achieved throughput, mean over repeats
    ys: list[float]  # latency percentile of the pooled requests
    loads: list[str]  # each point's offered load, as its label says it

    @property
    def joined(self) -> bool:
        return self.regime == "within"


def throughput_series(cmp) -> list[Series]:
    """What the latency-vs-throughput plot draws. Only points where the pipeline kept up with
    its load are joined into a curve: a bulk run (everything at once) and an overloaded one
    (queues growing all run: its latency depends on the run's length) are points of their own."""
    out = []
    for label in _config_order(cmp):
        groups = [g for g in cmp.groups if g.label == label and g.stats["achieved_rps"]["n"]]
        for regime in ("within", "overloaded", "bulk"):
            members = sorted((g for g in groups if g.regime == regime),
                             key=lambda g: g.stats["achieved_rps"]["mean"])
            for metric in ("p50_ms", "p99_ms"):
                pts = [g for g in members if g.pooled[metric] is not None]
                if pts:
                    out.append(Series(label, regime, metric,
                                      [g.stats["achieved_rps"]["mean"] for g in pts],
                                      [g.pooled[metric] for g in pts],
                                      [g.load_label for g in pts]))
    return out


def capacity_marks(cmp) -> list[tuple[str, float, str]]:
    """(config, x, text) per config with a capacity: the marker stands at the throughput the
    capacity probe achieved (the plot's x axis is achieved throughput, not offered load)."""
    out = []
    for label in _config_order(cmp):
        cap = next((g.capacity for g in cmp.groups if g.label == label and g.capacity), None)
        at = (cap or {}).get("at_capacity") or {}
        if at.get("achieved_rps") is not None:
            out.append((label, at["achieved_rps"],
                        f"{label} capacity: {cap['capacity_rps']:.3g} req/s offered, "
                        f"{at['achieved_rps']:.3g} achieved"))
    return out


_MARKERS = {("within", "p50_ms"): ("o", "-"), ("within", "p99_ms"): ("s", "--"),
            ("overloaded", "p50_ms"): ("o", "none"), ("overloaded", "p99_ms"): ("s", "none"),
            ("bulk", "p50_ms"): ("D", "none"), ("bulk", "p99_ms"): ("*", "none")}


def latency_vs_throughput(cmp, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8.0, 5.0))
    colours = _colours(_config_order(cmp))
    series = throughput_series(cmp)
    for s in series:
        marker, line = _MARKERS[(s.regime, s.metric)]
        hollow = s.regime != "within"
        ax.plot(s.xs, s.ys, marker=marker, linestyle=line, color=colours[s.config],
                markerfacecolor="none" if hollow else colours[s.config], markersize=6,
                label=f"{s.config} {s.metric[:3]}" + ("" if s.joined else f" ({s.regime})"))
        for x, y, load in zip(s.xs, s.ys, s.loads):
            ax.annotate(load, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=6,
                        color=colours[s.config])
    for label, x, text in capacity_marks(cmp):
        ax.axvline(x, color=colours[label], linestyle=":", linewidth=1.2, label=text)
    if cmp.slo_p99_ms is not None:
        ax.axhline(cmp.slo_p99_ms, color="black", linestyle=":", linewidth=1,
                   label=f"SLO p99 {cmp.slo_p99_ms:g} ms")
    if not series:
        ax.text(0.5, 0.5, "no measured request finished ok", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("achieved throughput (req/s, mean over repeats)")
    ax.set_ylabel("end-to-end latency (ms, from scheduled time)")
    ax.set_title("Latency vs throughput (requests of repeats pooled; each point labelled with its "
                 "offered load)\njoined: kept up with the load; hollow: overloaded or bulk",
                 fontsize=9)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def latency_cdf(cmp, path: Path) -> Path:
    labels = _config_order(cmp)
    cols = min(3, max(1, len(labels)))
    rows = (len(labels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, label in zip(axes.flat, labels):
        groups = [g for g in cmp.groups if g.label == label]
        for i, g in enumerate(groups):
            values = sorted(v * 1e3 for r in g.runs for v in r.latencies_s())
            if not values:
                continue
            n = len(values)
            ax.step(values, [(k + 1) / n for k in range(n)], where="post",
                    color=cmap(i / max(1, len(groups) - 1) * 0.9),
                    label=f"{g.load_label} (n={n})")
        if cmp.slo_p99_ms is not None:
            ax.axvline(cmp.slo_p99_ms, color="black", linestyle=":", linewidth=1)
        ax.axhline(0.99, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(labels):]:
        ax.axis("off")
    fig.suptitle("End-to-end latency CDF per config (repeats pooled; dashed: 0.99)")
    fig.tight_layout()
    return _save(fig, path)


def stage_breakdown(cmp, path: Path) -> Path:
    groups = list(cmp.groups)
    steps = dedupe([step for g in groups for step, _ in g.stages])
    shades = {part: [plt.get_cmap(cmap)(0.35 + 0.55 * i / max(1, len(steps) - 1))
                     for i in range(len(steps))] for part, cmap in PART_COLOURS.items()}
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) + 3.5), 5.0))
    x = list(range(len(groups)))
    bottoms = [0.0] * len(groups)
    for si, step in enumerate(steps):
        for part in PART_COLOURS:
            heights = []
            for g in groups:
                parts = dict(g.stages).get(step) or {}
                heights.append(parts.get(part) or 0.0)
            if not any(heights):
                continue
            ax.bar(x, heights, bottom=bottoms, color=shades[part][si], edgecolor="white",
                   linewidth=0.5, label=f"{step}: {part}")
            bottoms = [b + h for b, h in zip(bottoms, heights)]
    e2e = [g.pooled["mean_ms"] for g in groups]
    if any(v is not None for v in e2e):
        ax.scatter([xi for xi, v in zip(x, e2e) if v is not None], [v for v in e2e if v is not None],
                   marker="_", s=400, color="black", zorder=3, label="end-to-end mean")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{g.label}\n{g.load_label}" for g in groups],
                       fontsize=8, rotation=30 if len(groups) > 6 else 0, ha="center")
    ax.set_ylabel("mean time per request (ms)")
    ax.set_title("Where a request's time goes, per step (means over ok measured requests)")
    ax.grid(True, axis="y", alpha=0.3)
    if not groups or not ax.patches:
        ax.text(0.5, 0.5, "no per-step timings", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def gpu_util(cmp, path: Path) -> Path:
    """One panel per config and load (its first run), one line per GPU; the shaded span is the
    measurement window."""
    groups = [g for g in cmp.groups]
    sampled = [g for g in groups if any(r.summary["gpus"]["sampled"] for r in g.runs)]
    if not sampled:
        fig, ax = plt.subplots(figsize=(6, 2.5))
        ax.text(0.5, 0.5, "no GPU samples\n(CPU runs, or NVML was unavailable)", ha="center",
                va="center", fontsize=12, transform=ax.transAxes)
        ax.axis("off")
        return _save(fig, path)
    cols = min(3, len(sampled))
    rows = (len(sampled) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.0 * rows), squeeze=False)
    for ax, g in zip(axes.flat, sampled):
        run = next(r for r in g.runs if r.summary["gpus"]["sampled"])
        nvml = run.run_dir / "nvml.csv"
        samples = read_samples_csv(nvml) if nvml.exists() else []
        for gpu in sorted({s["gpu"] for s in samples}):
            mine = sorted((s for s in samples if s["gpu"] == gpu), key=lambda s: s["t_s"])
            ax.plot([s["t_s"] for s in mine], [float(s["util_pct"]) for s in mine],
                    linewidth=1, label=f"GPU {gpu}")
        w = run.summary["window"]
        if w["start_s"] is not None and w["end_s"] is not None:
            ax.axvspan(w["start_s"], w["end_s"], color="grey", alpha=0.12)
        ax.set_title(f"{g.label} at {g.load_label}"
                     + f"\n{run.run_dir.name}", fontsize=8)
        ax.set_ylim(0, 105)
        ax.set_xlabel("time since start (s)")
        ax.set_ylabel("GPU utilisation (%)")
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no GPU samples", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(sampled):]:
        ax.axis("off")
    fig.suptitle("GPU utilisation over time (NVML; shaded: measurement window)")
    fig.tight_layout()
    return _save(fig, path)


PLOTS = {
    "latency_vs_throughput": latency_vs_throughput,
    "latency_cdf": latency_cdf,
    "stage_breakdown": stage_breakdown,
    "gpu_util": gpu_util,
}


def write_plots(cmp, out_dir) -> dict[str, Path]:
    """Every plot as out_dir/<name>.png; returns name -> path."""
    out_dir = Path(out_dir)
    return {name: fn(cmp, out_dir / f"{name}.png") for name, fn in PLOTS.items()}
