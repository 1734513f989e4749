"""Runs read back from their logs folders, and grouped into points of a comparison.

Every run's numbers are recomputed from its requests.csv and nvml.csv by `summary_from_run_dir`,
the function behind its own report. A group holds the *repeats* of one point: runs identical but
for their arrival seed (same config, same settings: batch, queues, warm-up, request count, ...;
`run_settings`). Runs that differ in anything else are separate groups, labelled by what differs.

A group's throughput is the mean over its repeats (with their min-max); its latency percentiles
pool the requests of all its repeats (a p99 of 3 x 100 requests is the 297th of the 300, never the
mean of three p99s).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.analysis.requests_csv import damage, read_rows
from pipeline.analysis.statistics import MIN_FOR_P90, MIN_FOR_P99, describe
from pipeline.analysis.summary import summary_from_run_dir
from pipeline.analysis.sweep_folder import rate_of

# Repeats of one point whose throughput or p99 differ by more than this fraction of the smaller
# value disagree: the difference between configs is then not to be read off one run.
REPEAT_SPREAD_LIMIT = 0.10

# name, label, unit, where in the summary, scale: a run's headline numbers (per run; a group
# shows their mean and spread)
METRICS = (
    ("achieved_rps", "throughput", "req/s", ("throughput", "requests_per_s"), 1.0),
    # The summary counts outputs in the model's own unit under one key; each unit has its own
    # metric so a FLAVR row's frames/s and an R(2+1)D row's clips/s never share a column.
    ("output_fps", "output frames/s", "frames/s", ("throughput", "output_frames_per_s"), 1.0),
    ("output_clips_per_s", "output clips/s", "clips/s", ("throughput", "output_frames_per_s"), 1.0),
    ("offered_rps", "offered (realised)", "req/s", ("load", "offered_rps"), 1.0),
    ("delivered_rps", "delivered", "req/s", ("load", "delivered_rps"), 1.0),
    ("mean_ms", "mean", "ms", ("latency_s", "mean"), 1e3),
    ("p50_ms", "p50", "ms", ("latency_s", "p50"), 1e3),
    ("p90_ms", "p90", "ms", ("latency_s", "p90"), 1e3),
    ("p99_ms", "p99", "ms", ("latency_s", "p99"), 1e3),
    ("max_ms", "max", "ms", ("latency_s", "max"), 1e3),
)
LATENCY_METRICS = ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms")
# output unit (run.json's output_unit, models' served.output_unit) -> the metric its rate goes in
OUTPUT_RATE_METRICS = {"frames": "output_fps", "clips": "output_clips_per_s"}
STAGE_PARTS = (("waits", ("queue_wait_s", "slot_wait_s", "stream_wait_s")),
               ("compute", ("compute_s",)),
               ("hand-off, publish", ("handoff_exposed_s", "publish_s")))

# A run's settings besides its config and load: identity key -> names in args.json (benchmark.py
# and the sweep call some differently). The seed is not among them: it is what repeats vary.
_ARG_SETTINGS = {"b": ("batch", "batch_size"), "p": ("per_gpu", "per_gpu_queue"),
                 "qs": ("queue_size",), "warmup": ("warmup",), "v": ("videos",),
                 "on_full": ("on_full",), "decode": ("decode_backend",),
                 "check": ("check_outputs",), "save": ("save_outputs",),
                 "threads": ("cpu_threads",)}
_NAMED = ("res", "decode", "mps", "warmup", "on_full", "config", "check", "save", "threads",
          "launcher", "cluster")
_UNSAID_WHEN_NONE = ("cluster",)  # a local run has none: its launcher says so already
# Config fields the settings above key on their own (as the run went, flags included): left out
# of the config's hash, so a run differing in them is labelled by them, not by a hash.
_KEYED_FIELDS = ("name", "launcher", "ray")


def output_unit(summary: dict) -> str:
    """What the run's model counts its outputs in."""
    return summary["run"].get("output_unit", "frames")  # older logs are all FLAVR's


def run_metrics(summary: dict) -> dict:
    """A run's headline numbers as the comparison shows them (latencies in ms); the output rate
    only under its own unit's metric, None under the others."""
    own_rate = OUTPUT_RATE_METRICS.get(output_unit(summary))
    out = {}
    for name, _, _, (section, key), scale in METRICS:
        value = (summary.get(section) or {}).get(key)
        if name in OUTPUT_RATE_METRICS.values() and name != own_rate:
            value = None
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


def dedupe(items: list[str]) -> list[str]:
    """The items in first-seen order, each once."""
    return list(dict.fromkeys(items))


# --------------------------------------------------------------------------------------------
# One run
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
    attrs: dict = field(default_factory=dict)  # its settings (run_settings): repeats share them
    warnings: list[str] = field(default_factory=list)  # found here: live report differs
    label: str = ""

    @property
    def metrics(self) -> dict:
        return run_metrics(self.summary)

    def latencies_s(self) -> list[float]:
        """Latencies of its ok measured requests, from requests.csv (what its percentiles use)."""
        if not hasattr(self, "_latencies"):
            rows = read_rows(self.run_dir / "requests.csv", self.summary["steps"])
            self._latencies = sorted(r.latency_s for r in rows if not r.warmup
                                     and r.status == "ok" and r.latency_s is not None)
        return self._latencies


class UnreadableLogError(ValueError):
    """A run or sweep folder whose logs cannot be read back; names the file and what is wrong."""


def read_log_json(path: Path) -> dict:
    """A JSON record of a logs folder (run.json, sweep.json, ...), or UnreadableLogError naming
    the file and where it breaks: a hand-edited or truncated record is then found at once."""
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UnreadableLogError(f"{path}: not valid JSON at line {exc.lineno}, column "
                                 f"{exc.colno}: {exc.msg}") from None
    if not isinstance(record, dict):
        raise UnreadableLogError(f"{path}: expected a JSON object, found a "
                                 f"{type(record).__name__}")
    return record


def _read_optional_json(path: Path) -> dict:
    return read_log_json(path) if path.exists() else {}


def run_settings(run: dict, args: dict, config: dict) -> dict:
    """Everything that makes a run what it is, but its load and its seed: the settings of the
    run (args.json under either spelling), what run.json says it ran on, and its config."""
    attrs = {}
    for key, names in _ARG_SETTINGS.items():
        value = next((args[n] for n in names if n in args), None)
        attrs[key] = int(value) if isinstance(value, bool) else value
    if attrs["v"] is None and run.get("requests") is not None:
        attrs["v"] = run["requests"] - (run.get("warmup") or 0)
    if attrs["warmup"] is None:
        attrs["warmup"] = run.get("warmup")
    if attrs["b"] is None:
        attrs["b"] = run.get("batch")
    attrs["res"] = "+".join("x".join(map(str, s)) for s in run.get("frame_sizes") or []) or None
    attrs["prec"] = run.get("precision")
    attrs["device"] = run.get("device_kind")
    attrs["mps"] = run["mps"].split(" ")[0].rstrip(":") if run.get("mps") else None
    # How its processes were started: run.json says it; older runs were all local. A run joined
    # to a cluster is another point than one on a Ray instance of its own, or on another cluster.
    attrs["launcher"] = run.get("launcher") or args.get("launcher") or "local"
    address = args.get("ray_address") or (config.get("ray") or {}).get("address")
    attrs["cluster"] = (address or "own") if attrs["launcher"] == "ray" else None
    body = {k: v for k, v in config.items() if k not in _KEYED_FIELDS}
    attrs["config"] = (hashlib.sha1(json.dumps(body, sort_keys=True, default=str).encode())
                       .hexdigest()[:6] if body else None)
    return attrs


def _summary(run_dir: Path) -> dict:
    """The run's summary recomputed from its logs; UnreadableLogError naming the file at fault."""
    run = read_log_json(run_dir / "run.json")  # its own error names the file and line
    requests = run_dir / "requests.csv"
    if not requests.is_file():
        raise UnreadableLogError(f"{requests}: not found: the run folder has its run.json but "
                                 "not its per-request records, so its numbers cannot be "
                                 "recomputed (was the folder copied in part?)")
    problem = damage(requests, run.get("requests"))
    if problem:  # else read as a run without measured requests
        raise UnreadableLogError(f"{requests}: damaged: {problem}; the run's numbers cannot be "
                                 "recomputed (was the folder copied in part?)")
    try:
        return summary_from_run_dir(run_dir)
    except (KeyError, ValueError, TypeError) as exc:
        raise UnreadableLogError(f"{run_dir}: its run.json and requests.csv could not be read "
                                 f"back: {type(exc).__name__}: {exc}") from None


def _live_report_warnings(run_dir: Path, summary: dict) -> list[str]:
    """Whether the run's own report.json agrees with the recomputed numbers. It only serves this
    check, so a missing or damaged one is a warning, not a reason to leave the run out."""
    live_path = run_dir / "report.json"
    if not live_path.exists():
        return ["no report.json: the run may not have finished writing its logs"]
    try:
        live = read_log_json(live_path)
    except UnreadableLogError as exc:
        return [f"{exc}; the run's own numbers cannot be checked against the recomputed ones"]
    if json.loads(json.dumps(summary)) != live:
        return ["the numbers recomputed from requests.csv differ from the run's own "
                "report.json (was the report code changed since the run?); this "
                "comparison shows the recomputed ones"]
    return []


def load_run(run_dir: Path, base_label: str | None, origin: str, repeat=None, seed=None) -> RunPoint:
    import yaml

    summary = _summary(run_dir)
    run = summary["run"]
    args = _read_optional_json(run_dir / "args.json")
    config_path = run_dir / "config.yaml"
    try:
        config = (yaml.safe_load(config_path.read_text()) or {}) if config_path.exists() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UnreadableLogError(f"{config_path}: not valid YAML{where}: "
                                 f"{getattr(exc, 'problem', None) or exc}") from None
    warnings = _live_report_warnings(run_dir, summary)
    if seed is None:
        seed = args.get("seed")
    return RunPoint(run_dir, summary, base_label or args.get("config_label") or run.get("config")
                    or run_dir.name, float(run.get("mean_interval_ms") or 0.0), repeat, seed,
                    origin, run_settings(run, args, config), warnings)


# --------------------------------------------------------------------------------------------
# Repeats of one point
# --------------------------------------------------------------------------------------------

@dataclass
class Group:
    label: str
    mean_interval_ms: float
    runs: list[RunPoint]
    stats: dict  # metric -> spread over the runs (mean, min, max, std)
    pooled: dict  # latency metric -> value over the pooled requests of all runs
    warnings: list[str]
    short: dict  # percentile -> True when the pooled requests are too few for it
    stages: list[tuple[str, dict]]  # per step: part -> mean ms (means over runs)
    capacity: dict | None = None

    @property
    def nominal_rps(self) -> float | None:
        return rate_of(self.mean_interval_ms)

    @property
    def bulk(self) -> bool:
        return self.mean_interval_ms == 0

    @property
    def offered_rps(self) -> float | None:
        """The realised offered rate, mean over the repeats (None in bulk mode)."""
        return None if self.bulk else self.stats["offered_rps"]["mean"]

    @property
    def lone(self) -> bool:
        """Every repeat measured a single request: at -mi 0 that is one request, not a bulk load."""
        return all((r.summary.get("load") or {}).get("sent") == 1 for r in self.runs)

    @property
    def load_text(self) -> str:
        if self.bulk:
            return "one request" if self.lone else "bulk"
        return f"{self.offered_rps or self.nominal_rps:.2f}"

    @property
    def load_label(self) -> str:
        """The load with its unit, for titles, legends and headings."""
        return self.load_text if self.bulk else self.load_text + " req/s"

    @property
    def regime(self) -> str:
        """bulk, overloaded (a repeat did not keep up with its load, or dropped requests) or
        within (what a latency-throughput curve may join)."""
        if self.bulk:
            return "bulk"
        for r in self.runs:
            v = r.summary.get("validity") or {}
            if v.get("kept_up") is False or r.summary["counts"]["dropped"]:
                return "overloaded"
        return "within"


def _labels(runs: list[RunPoint]) -> None:
    """Label = config label, plus whatever setting differs between runs of that label."""
    by_base: dict[str, list[RunPoint]] = {}
    for r in runs:
        by_base.setdefault(r.base_label, []).append(r)
    for base, members in by_base.items():
        keys = dedupe([k for m in members for k in m.attrs])
        varying = [k for k in keys if len({json.dumps(m.attrs.get(k)) for m in members}) > 1]
        for m in members:
            shown = [k for k in varying if k not in _UNSAID_WHEN_NONE or m.attrs.get(k) is not None]
            extra = " ".join(f"{k}={m.attrs.get(k)}" if k in _NAMED else f"{k}{m.attrs.get(k)}"
                             for k in shown)
            m.label = f"{base} {extra}" if extra else base


def _stage_means(runs: list[RunPoint]) -> list[tuple[str, dict]]:
    steps = dedupe([entry["step"] for r in runs for entry in r.summary["stages"]])
    out = []
    for step in steps:
        parts = {}
        for part, fields in STAGE_PARTS:
            per_run = []
            for r in runs:
                entry = next((e for e in r.summary["stages"] if e["step"] == step), None)
                if entry is None:
                    continue
                values = [entry[f]["mean"] for f in fields
                          if f in entry and entry[f]["mean"] is not None]
                if values:
                    per_run.append(math.fsum(values) * 1e3)
            parts[part] = spread_stats(per_run)["mean"]
        out.append((step, parts))
    return out


def _pooled(runs: list[RunPoint]) -> dict:
    lat = describe([v for r in runs for v in r.latencies_s()])
    return {"count": lat["count"],
            **{f"{k}_ms": (None if lat[k] is None else lat[k] * 1e3)
               for k in ("mean", "p50", "p90", "p99", "max")}}


def group_runs(runs: list[RunPoint]) -> list[Group]:
    """Repeats together (same label: same config and settings; same load), in config order, then
    by rising load."""
    _labels(runs)
    order = dedupe([r.label for r in runs])
    keyed: dict[tuple[str, float], list[RunPoint]] = {}
    for r in runs:
        keyed.setdefault((r.label, r.mean_interval_ms), []).append(r)
    groups = []
    for (label, mi), members in keyed.items():
        members.sort(key=lambda r: (r.repeat if r.repeat is not None else 1 << 30, r.run_dir.name))
        metrics = [m.metrics for m in members]
        stats = {name: spread_stats([x[name] for x in metrics]) for name, *_ in METRICS}
        stats["ok"] = spread_stats([x["ok"] for x in metrics])
        pooled = _pooled(members)
        short = {"p99": 0 < pooled["count"] < MIN_FOR_P99, "p90": 0 < pooled["count"] < MIN_FOR_P90}
        warnings = repeat_warnings([m.summary for m in members])
        for m in members:
            warnings += [f"{m.run_dir.name}: {w}" for w in m.summary.get("warnings") or []]
            warnings += [f"{m.run_dir.name}: {w}" for w in m.warnings]
        groups.append(Group(label, mi, members, stats, pooled, dedupe(warnings), short,
                            _stage_means(members)))
    groups.sort(key=lambda g: (order.index(g.label),
                               g.nominal_rps if g.nominal_rps is not None else math.inf))
    return groups
