"""Quality against ground truth in a run's summary: requests.csv's truth columns (--check-outputs
on clips with truth, records.py) as means over the measured ok requests that have them, the model
next to the two baselines, as `interpolate --eval` prints them for one file."""
from __future__ import annotations

import math

_METHODS = (("model", "truth_psnr_db", "truth_ssim"), ("averaging", "avg_psnr_db", "avg_ssim"),
            ("nearest", "nearest_psnr_db", "nearest_ssim"))


def _mean(values) -> float:
    return math.fsum(values) / len(values)


def truth_summary(ok, run_info: dict) -> dict | None:
    """None when no request was scored against truth."""
    scored = [r for r in ok if r.truth_frames]
    if not scored:
        return None
    gains = [r.truth_psnr_db - r.avg_psnr_db for r in scored]
    return {
        "requests": len(scored),
        "frames": sum(r.truth_frames for r in scored),
        "methods": {name: {"psnr_db": _mean([getattr(r, p) for r in scored]),
                           "ssim": _mean([getattr(r, s) for r in scored])}
                    for name, p, s in _METHODS},
        "model_vs_averaging_db": _mean(gains),
        "model_ahead_requests": sum(g > 0 for g in gains),
        "change_based": run_info.get("change_based") is not None,
    }


def truth_lines(truth: dict | None) -> list[str]:
    """The report's lines for it (nothing when no request had truth)."""
    if not truth:
        return []
    n = truth["requests"]
    labels = {name: name for name in truth["methods"]}
    if truth["change_based"]:
        labels["model"] = "model (change-based)"
    width = max(map(len, labels.values()))
    lines = [f"against ground truth (means over {n} request{'s' * (n != 1)}, "
             f"{truth['frames']} new frames; outputs rounded to 8 bits)",
             f"  {'':<{width}} {'PSNR dB':>8} {'SSIM':>7}"]
    for name, m in truth["methods"].items():
        lines.append(f"  {labels[name]:<{width}} {m['psnr_db']:8.2f} {m['ssim']:7.4f}")
    lines.append(f"  model vs averaging: {truth['model_vs_averaging_db']:+.2f} dB (the model "
                 f"ahead in {truth['model_ahead_requests']} of {n} requests)")
    lines.append("  checking costs the sink time (inputs decoded again, truth read, SSIM); a sink "
                 "that falls behind")
    lines.append("  holds up the last step: compare speeds with a run without --check-outputs")
    return lines + [""]
