"""What a load sweep and a capacity search share: their folder and its sweep.json record, the
checks made before the first run, running one run after another (interrupts included), and the
one-line account of each run.

    <logs>/sweep-<yymmdd_HHMMSS>-<name>/      (capacity-... for a capacity search)
        sweep.json    the command, and which run folder is which config, load and repeat (or probe)
        compare.*     the comparison compare.py renders from those run folders
"""
from __future__ import annotations

import datetime as _dt
import json
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.analysis.formatting import fmt

SWEEP_FILE = "sweep.json"  # the file a sweep or capacity folder keeps its record in
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")


def rate_of(mean_interval_ms: float) -> float | None:
    """Nominal requests/s of a Poisson load with this mean interval; None for bulk (0)."""
    return 1000.0 / mean_interval_ms if mean_interval_ms > 0 else None


def interval_for_rate(rate: float) -> float:
    """Mean interval in ms for a rate in req/s, rounded to 0.001 ms so folder names stay readable."""
    return round(1000.0 / rate, 3)


def sweep_dir_name(kind: str, name: str, when: _dt.datetime | None = None) -> str:
    when = when or _dt.datetime.now()
    name = _UNSAFE.sub("_", name).strip("_") or "sweep"
    return f"{kind}-{when:%y%m%d_%H%M%S}-{name}"


def create_sweep_dir(logs_root, kind: str, name: str) -> Path:
    from pipeline.serving.runlog import create_run_dir

    return create_run_dir(Path(logs_root), sweep_dir_name(kind, name))


def resolve_run_dir(sweep_dir, text: str) -> Path:
    path = Path(text)
    return path if path.is_absolute() else (Path(sweep_dir) / path).resolve()


def relative_run_dir(run_dir: Path | None, sweep_dir: Path) -> str | None:
    """A run folder as seen from the sweep folder, so the logs root can be moved as a whole."""
    if run_dir is None:
        return None
    run_dir, sweep_dir = Path(run_dir).resolve(), Path(sweep_dir).resolve()
    try:
        return str(Path("..") / run_dir.relative_to(sweep_dir.parent))
    except ValueError:
        return str(run_dir)


def write_json(path: Path, data) -> None:
    """Written whole and renamed into place: an interrupted sweep never leaves half a record."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def start_record(prefix: str, kind: str, name: str, command, labels, cfgs, overrides, opts,
                 specific: dict):
    """A new `<prefix>-...` folder and its sweep.json, written at once so an interrupted search
    still says what it was."""
    sweep_dir = create_sweep_dir(opts.logs_root, prefix, name)
    record = {
        "kind": kind,
        "name": name,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "cwd": str(Path.cwd()),
        "configs": [{"label": l, "name": c.name, "file": c.source} for l, c in zip(labels, cfgs)],
        "overrides": list(overrides),
        "options": asdict(opts),
        "status": "running",
        **specific,
    }
    write_json(sweep_dir / SWEEP_FILE, record)
    return sweep_dir, record


def config_labels(cfgs) -> list[str]:
    """One label per config: its name; the file name where two share a name; #k as a last resort."""
    names = [c.name for c in cfgs]
    labels = []
    for c in cfgs:
        label = c.name
        if names.count(c.name) > 1 and c.source:
            label = Path(c.source).stem
        labels.append(label)
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if labels.count(label) == 1 else f"{label}#{seen[label]}")
    return out


def check_configs(cfgs, opts) -> list:
    """Validate every config against this machine before the first run starts: a typo in the
    second config must not surface an hour into the sweep. Raises ConfigError; returns each
    config's plan (plan.py's Plan)."""
    from pipeline.serving.plan import plan_run

    return [plan_run(cfg, opts) for cfg in cfgs]


def check_logs(opts, log) -> None:
    """LogsError naming the logs folder when the sweep could not write there (as benchmark.py
    refuses it), before its folder is made and the first run starts."""
    from pipeline.serving.runlog import check_writable

    for notice in check_writable(opts.logs_root):
        log(f"notice: {notice}")


def with_overrides(cfgs, overrides):
    """Every config with the same `--set FIELD=VALUE` assignments, as benchmark.py applies them."""
    if not overrides:
        return list(cfgs)
    from pipeline.config import apply_overrides

    return [apply_overrides(c, list(overrides)) for c in cfgs]


class Interrupts:
    """Ctrl-C / SIGTERM between or during runs ends the sweep after the current run's logs are
    written (the orchestrator stops a run cleanly on either); the sweep folder is still written."""

    def __init__(self):
        self.seen = False

    def __enter__(self):
        def handler(signum, frame):
            self.seen = True
            raise KeyboardInterrupt
        self.previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc):
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)
        return False

    def after(self, result) -> bool:
        """True when the sweep must stop after this run."""
        error = getattr(result, "error", None) or ""
        if error.startswith("interrupted"):  # the orchestrator caught the signal itself
            self.seen = True
        return self.seen


def run_one(run_fn, cfg, opts, args_for_log, interrupts: Interrupts):
    """One run; returns (result or None, error text or None)."""
    try:
        result = run_fn(cfg, opts, args_for_log=args_for_log)
    except KeyboardInterrupt:
        interrupts.seen = True
        return None, "interrupted before the run could write its logs"
    except Exception as exc:  # e.g. an unreadable clip: recorded, and the sweep goes on
        return None, f"the run could not start: {type(exc).__name__}: {exc}"
    return result, result.error


def point_line(result) -> str:
    """One run in one line: the realised offered rate, what it achieved, its percentiles."""
    s = result.summary if result is not None else {}
    t, lat, load = s.get("throughput") or {}, s.get("latency_s") or {}, s.get("load") or {}
    offered = "bulk" if load.get("bulk") else f"offered {fmt(load.get('offered_rps'))}"
    return (f"{offered}, achieved {fmt(t.get('requests_per_s'))} req/s, "
            f"p50 {fmt(lat.get('p50'), '.1f', 1e3)} ms, p99 {fmt(lat.get('p99'), '.1f', 1e3)} ms "
            f"({lat.get('count', 0)} requests)")


def eta(started: float, done: int, total: int) -> str:
    if done == 0 or done >= total:
        return ""
    left = (time.monotonic() - started) / done * (total - done)
    return f"; about {left / 60:.1f} min left" if left >= 90 else f"; about {left:.0f} s left"


def stderr_log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class SweepResult:
    sweep_dir: Path | None  # None: a dry run
    record: dict
    interrupted: bool = False
    plan: str | None = None  # a dry run's account of what would run


def finish(sweep_dir: Path, record: dict, interrupts: Interrupts, render: bool, log) -> SweepResult:
    """Close the folder's record (complete or interrupted) and render the comparison."""
    record["status"] = "interrupted" if interrupts.seen else "complete"
    write_json(sweep_dir / SWEEP_FILE, record)
    if render:
        from pipeline.analysis.compare import write_comparison

        try:
            comparison = write_comparison([sweep_dir], out_dir=sweep_dir)
        except Exception as exc:  # the runs are safe in their folders
            log(f"comparison failed: {type(exc).__name__}: {exc}; "
                f"re-render with: python -m pipeline.analysis.compare {sweep_dir}")
        else:
            print(comparison.markdown)
    return SweepResult(sweep_dir, record, interrupts.seen)
