"""Compare runs from their logs folders: tables (markdown and CSV) and plots, never re-running.

    python -m pipeline.analysis.compare logs/sweep-261121_120000-flavr-whole+flavr-split
    python -m pipeline.analysis.compare logs/<run> logs/<run> logs/capacity-... --out cmp/

Inputs are run folders and sweep/capacity folders (their sweep.json says which runs belong to which
config, load and repeat). Every run's numbers are recomputed from its logs by the function behind
its own report (runs.py), so a comparison rendered a month later shows the numbers each run printed
(and says so where they differ). Runs are grouped into points whose runs are repeats, identical but
for the seed (runs.py); each run's validity warnings come from its own summary; the only check made
here is the one that needs several runs: repeats that disagree by more than 10%. Capacity probes are
judged again from their logs with the search's own rule (capacity.judge_probe), so both agree.

Outputs (in --out; by default the sweep folder when it is the only input): compare.md, compare.csv,
runs.csv, capacity.csv, compare.json (tables.py) and plots/*.png (plots.py).

An input that is neither a run folder nor a sweep folder is skipped and named; when no input is
one, nothing is written and the command ends with status 2. A damaged record (run.json,
sweep.json, a missing, empty or cut-off requests.csv) stops the comparison with the file's name:
a cut requests.csv read as it is would pass for a run without measured requests.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.analysis.capacity import (
    capacity_entry,
    capacity_notices,
    judge_probe,
    probe_facts,
)
from pipeline.analysis.runs import (
    Group,
    RunPoint,
    UnreadableLogError,
    group_runs,
    load_run,
    read_log_json,
)
from pipeline.analysis.sweep_folder import SWEEP_FILE, resolve_run_dir
from pipeline.analysis.tables import render_markdown, write_tables


@dataclass
class Comparison:
    inputs: list[str]
    sweeps: list[dict]
    runs: list[RunPoint]
    groups: list[Group]
    capacity: list[dict]
    warnings: list[str]
    slo_p99_ms: float | None = None
    skipped: list[str] = field(default_factory=list)  # "input: why it is neither" per input
    markdown: str = ""
    out_dir: Path | None = None
    files: dict = field(default_factory=dict)


class NothingToCompareError(ValueError):
    """No input is a run folder or a sweep folder; says what each one is instead."""


def not_comparable(path: Path) -> str | None:
    """Why an input is neither a run folder nor a sweep folder (None when it is one)."""
    if (path / SWEEP_FILE).is_file() or (path / "run.json").is_file():
        return None
    if not path.exists():
        return "does not exist"
    if not path.is_dir():
        return "is a file, not a folder"
    if not any(path.iterdir()):
        return "is an empty folder"
    return f"holds neither run.json nor {SWEEP_FILE}"


def load_inputs(paths) -> tuple[list[RunPoint], list[dict], list[dict], list[str], list[str]]:
    """Runs, capacity results and sweep records from run and sweep folders; warnings about
    anything missing; and the inputs skipped as neither (NothingToCompareError when every input
    is). A run reachable twice (a sweep and its run folder) counts once."""
    runs: dict[Path, RunPoint] = {}
    capacity, sweeps, warnings, skipped = [], [], [], []

    def add(run_dir: Path, label, origin, repeat=None, seed=None):
        key = run_dir.resolve()
        if key in runs:
            return runs[key]
        if not (run_dir / "run.json").exists():
            warnings.append(f"{run_dir}: not a run folder (no run.json); skipped")
            return None
        runs[key] = load_run(run_dir, label, origin, repeat, seed)
        return runs[key]

    for text in paths:
        path = Path(text)
        problem = not_comparable(path)
        if problem is not None:
            skipped.append(f"{path}: {problem}")
            warnings.append(f"{path}: {problem}: neither a run folder (run.json) nor a sweep "
                            f"folder ({SWEEP_FILE}); skipped")
        elif (path / SWEEP_FILE).is_file():
            record = read_log_json(path / SWEEP_FILE)
            try:
                _add_sweep(path, record, add, sweeps, capacity, warnings)
            except KeyError as exc:  # the runs' own records raise UnreadableLogError instead
                raise UnreadableLogError(f"{path / SWEEP_FILE}: not a record as flavr-sweep "
                                         f"writes it: an entry lacks {exc}") from None
        else:
            add(path, None, "run")
    if skipped and len(skipped) == len(paths):
        raise NothingToCompareError(
            "nothing to compare: no input is a run folder (with run.json) or a sweep folder "
            f"(with {SWEEP_FILE}):\n" + "\n".join(f"  {line}" for line in skipped))
    return list(runs.values()), capacity, sweeps, warnings, skipped


def _add_sweep(path: Path, record: dict, add, sweeps, capacity, warnings) -> None:
    """A sweep or capacity folder's runs (through `add`) and capacity results."""
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
            probe.update(passed=verdict.passed, reasons=verdict.reasons, notices=verdict.notices,
                         **probe_facts(point.summary), run_dir=str(point.run_dir))
            if verdict.passed != p.get("passed"):
                warnings.append(f"{sweep_dir.name}: probe at {p['rate_rps']:g} req/s of "
                                f"{entry['config']} was judged {'pass' if p.get('passed') else 'fail'} "
                                f"during the search but {'pass' if verdict.passed else 'fail'} from its "
                                "logs now")
        probes.append(probe)
    found = capacity_entry(probes)
    reported = entry.get("capacity_nominal_rps", entry.get("capacity_rps"))
    if found["capacity_nominal_rps"] != reported and entry.get("stop") != "running":
        warnings.append(f"{sweep_dir.name}: capacity of {entry['config']} recomputed from the logs "
                        f"is {found['capacity_nominal_rps']} req/s nominal, the search reported "
                        f"{reported}")
    return {"config": entry["config"], "slo_p99_ms": slo, **found, "probes": probes,
            "stop": entry.get("stop"), "folder": str(sweep_dir),
            "notices": capacity_notices(probes), "command": record.get("command")}


def compare_dirs(paths, slo_p99_ms: float | None = None) -> Comparison:
    runs, capacity, sweeps, warnings, skipped = load_inputs(paths)
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
    return Comparison([str(p) for p in paths], sweeps, runs, groups, capacity, warnings, slo_p99_ms,
                      skipped=skipped)


def default_out_dir(paths) -> Path:
    """The sweep folder when it is the only input, else compare-<time> next to the first input
    that is a run or sweep folder (never next to a path that does not exist)."""
    usable = [Path(p) for p in paths if not_comparable(Path(p)) is None]
    if len(usable) == 1 and (usable[0] / SWEEP_FILE).is_file():
        return usable[0]
    first = usable[0].resolve()
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
                   help="output folder (default: the sweep folder when it is the only input, "
                        "else compare-<time> next to the first input)")
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
    for line in cmp.skipped:  # also in compare.md; repeated where a script's log shows it
        print(f"warning: {line}: neither a run folder nor a sweep folder; skipped",
              file=sys.stderr)
    return 0 if cmp.runs and not cmp.skipped else 1


if __name__ == "__main__":
    sys.exit(main())
