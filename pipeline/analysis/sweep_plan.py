"""What `flavr-sweep --dry-run` prints: every config as its runs would place it, the loads or the
search, and how many runs; every config is checked as before a real sweep, and nothing starts
(no run, no sweep folder, no logs folder)."""
from __future__ import annotations

from pathlib import Path

from pipeline.analysis.sweep_folder import rate_of


def _load(mi: float) -> str:
    return "bulk (-mi 0)" if mi == 0 else f"{rate_of(mi):.3g} req/s (mi {mi:g} ms)"


def _placements(cfgs, plans) -> list[str]:
    from pipeline.config import describe_placement

    lines = []
    for cfg, plan in zip(cfgs, plans):
        for n in plan.notices:
            lines.append(f"notice: {n}")
        lines.append(describe_placement(cfg, cpu_mode=plan.device_kind == "cpu"))
        lines.append(f"  (runs on {plan.device_kind}, launcher {plan.launcher})")
        lines.append("")
    return lines


def sweep_plan_text(cfgs, labels, plans, mean_intervals, repeats: int, opts) -> str:
    runs = len(cfgs) * len(mean_intervals) * repeats
    seeds = ", ".join(str(opts.seed + k) for k in range(repeats))
    return "\n".join(_placements(cfgs, plans) + [
        f"sweep of {', '.join(labels)}",
        f"loads: {'; '.join(_load(mi) for mi in mean_intervals)}",
        f"repeats: {repeats} (seeds {seeds}); {opts.videos} measured requests per run",
        f"{runs} runs; logs under {Path(opts.logs_root)}",
        "dry run: every config checked; nothing started, nothing written",
    ])


def capacity_plan_text(cfgs, labels, plans, slo_p99_ms: float, opts, search: dict) -> str:
    bounds = ", ".join(f"{k} {v:g}" for k, v in search.items()
                       if k in ("lo", "hi", "start", "rel_tol") and v is not None)
    return "\n".join(_placements(cfgs, plans) + [
        f"capacity search of {', '.join(labels)}: p99 within {slo_p99_ms:g} ms",
        f"search: {bounds or 'defaults'}; at most {search.get('max_probes')} probes per config, "
        f"each >= {search.get('min_requests')} requests and >= "
        f"{search.get('min_duration_s'):g} s",
        f"logs under {Path(opts.logs_root)}",
        "dry run: every config checked; nothing started, nothing written",
    ])
