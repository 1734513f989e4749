"""One markdown row per run folder: the placement study's table in docs/results.md.

Every figure is recomputed from the run's own logs (requests.csv, nvml.csv, run.json) by the same
function as its report. New frames/s = requests/s x (frames per request - 1) x (factor - 1).

    python scripts/study_table.py RUN_DIR [RUN_DIR ...] [--model-alone model-alone.json]

With --model-alone (the JSON of `benchmark.py --model-only`), each saturation row also gets its
new frames/s as a share of N x the model alone, N = the GPUs the run's model steps used, at the
windows per call the run's batches had and in the run's mode (eager, or torch.compile'd when the
run's config sets model.compile).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.analysis.formatting import fmt as _fmt  # noqa: E402
from pipeline.analysis.formatting import pct as _pct  # noqa: E402
from pipeline.analysis.summary import summary_from_run_dir  # noqa: E402


def _ms(x) -> str:
    return _fmt(x, ".1f", 1e3)


def model_alone_fps(path: Path) -> dict[tuple[str, int], float]:
    """(mode, windows per call) -> new frames/s at 720p in a model-only JSON."""
    data = json.loads(path.read_text())
    out: dict[tuple[str, int], float] = {}
    for size in data["sizes"]:
        if (size["height"], size["width"]) != (720, 1280):
            continue
        for r in size["rows"]:
            out[(r["mode"], int(r["batch"]))] = float(r["frames_per_s"])
    return out


def row(run_dir: Path, alone: dict[tuple[str, int], float]) -> str:
    s = summary_from_run_dir(run_dir)
    run, thr = s["run"], s["throughput"]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    per_request_new = (config.get("frames_per_request", 3) - 1) * (run.get("factor", 2) - 1)
    rps = thr["requests_per_s"] or 0.0
    new_fps = rps * per_request_new
    load = "saturation" if s["load"]["bulk"] else f"-mi {run.get('mean_interval_ms'):g}"
    stages = []
    model_gpus = set()
    for st in s["stages"]:
        if st["step"] == "sink":
            continue
        parts = [_ms((st.get(k) or {}).get("mean")) for k in ("queue_wait_s", "compute_s")]
        if (st.get("handoff_s") or {}).get("mean"):
            parts.append(_ms(st["handoff_s"]["mean"]))
        stages.append(f"{st['step']} {'/'.join(parts)}")
        if st["step"] != s["steps"][0]:
            model_gpus |= set(st.get("devices") or {})
    sh = s.get("shares") or {}
    handoff = "0" if not sh.get("handoff_share") else \
        f"{_pct(sh['handoff_share'])} / {_pct(sh.get('handoff_exposed_share'))}"
    util = " / ".join(f"{g['util_mean_pct']:.0f}" for g in s["gpus"]["per_gpu"]
                      if g.get("util_mean_pct") is not None) or "-"
    lat = s["latency_s"]
    share = "-"
    batch = run.get("batch", 1)
    windows = batch * (config.get("frames_per_request", 3) - 1)
    # The reference is the model alone in the same mode: eager ("fast") or torch.compile'd.
    ref = ("compile" if (config.get("model") or {}).get("compile") else "fast", windows)
    if s["load"]["bulk"] and ref in alone and model_gpus:
        share = f"{100 * new_fps / (len(model_gpus) * alone[ref]):.1f}%"
    args = json.loads((run_dir / "args.json").read_text()) if (run_dir / "args.json").exists() else {}
    settings = [o for o in args.get("overrides") or []]
    if args.get("decode_backend", "auto") != "auto":
        settings.insert(0, f"decode {args['decode_backend']}")
    return (f"| {run.get('config')} | {'; '.join(settings) or '-'} | {load} | {batch} | {rps:.2f} | {new_fps:.1f} | {share} | "
            f"{_ms(lat['p50'])} | {_ms(lat['p90'])} | {_ms(lat['p99'])} | {'; '.join(stages)} | "
            f"{handoff} | {util} | {run.get('mps', '-')} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--model-alone", type=Path, default=None)
    args = ap.parse_args(argv)
    alone = model_alone_fps(args.model_alone) if args.model_alone else {}
    if alone:
        print("model alone (720p): " + ", ".join(f"{m} {b} windows/call {f:.1f} new frames/s"
                                              for (m, b), f in sorted(alone.items())))
        print()
    print("| config | settings | load | -b | req/s | new frames/s | of N x model alone | p50 ms | p90 ms | "
          "p99 ms | per stage (wait/compute/hand-off ms) | hand-off copy / exposed | "
          "GPU util % | MPS |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|")
    for d in sorted(args.runs):
        if (d / "run.json").exists():
            print(row(d, alone))
    return 0


if __name__ == "__main__":
    sys.exit(main())
