"""Change-based inference in a run's summary: how much of the frames the model computed and, in a
fidelity run, how close its output came to the full model's (requests.csv's computed_fraction,
windows_whole and psnr_vs_full_db over the measured ok requests)."""
from __future__ import annotations

import math


def change_summary(ok, run_info: dict) -> dict | None:
    """None when the run did not use change-based inference."""
    config = run_info.get("change_based")
    fractions = [r.computed_fraction for r in ok if r.computed_fraction is not None]
    if config is None and not fractions:
        return None
    whole = [r.windows_whole for r in ok if r.windows_whole is not None]
    psnr = [r.psnr_vs_full_db for r in ok if r.psnr_vs_full_db is not None
            and math.isfinite(r.psnr_vs_full_db)]
    return {
        "config": config,
        "fidelity_run": bool(config and config.get("check")),
        "requests": len(fractions),
        "computed_fraction_mean": sum(fractions) / len(fractions) if fractions else None,
        "computed_fraction_max": max(fractions, default=None),
        "windows_whole": sum(whole),
        "psnr_requests": len(psnr),
        "psnr_mean_db": sum(psnr) / len(psnr) if psnr else None,
        "psnr_worst_db": min(psnr, default=None),
    }


def change_lines(change: dict | None) -> list[str]:
    """The report's lines for it (nothing when the run did not use it)."""
    if not change:
        return []
    cfg = change.get("config") or {}
    knobs = ", ".join(f"{k} {cfg[k]}" for k in ("threshold", "tile", "halo", "gates") if k in cfg)
    lines = [f"change-based inference ({knobs})" if knobs else "change-based inference"]
    mean = change["computed_fraction_mean"]
    if mean is not None:
        lines.append(f"  tiles computed: {100 * mean:.1f}% of the frames' tiles per request on "
                     f"average (most {100 * change['computed_fraction_max']:.1f}%), "
                     f"{change['windows_whole']} windows run whole, over {change['requests']} "
                     f"requests")
    if change["psnr_mean_db"] is not None:
        lines.append(f"  PSNR against the full model: mean {change['psnr_mean_db']:.2f} dB, worst "
                     f"{change['psnr_worst_db']:.2f} dB ({change['psnr_requests']} requests; "
                     f"identical outputs count as 100 dB)")
    if change["fidelity_run"]:
        lines.append("  fidelity run: the full model also ran every window after each batch's "
                     "timed work (outside compute_s), and the next batch waited for it: "
                     "throughput and latency here are not the change-based speed")
    return lines + [""]
