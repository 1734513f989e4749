"""The model benchmark's results for people: the environment, and the summary and per-stage
tables as text and markdown. Column names follow the model's units (FLAVR: frames/s and PSNR;
R(2+1)D: clips/s and top-1 agreement with fp32)."""
from __future__ import annotations

import math
import platform
import subprocess
from pathlib import Path

import torch

GIB = 1024 ** 3


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def environment(device: torch.device) -> dict:
    env = {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
           "python": platform.python_version(), "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "cudnn_allow_tf32_default": torch.backends.cudnn.allow_tf32}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update({"capability": f"{p.major}.{p.minor}", "sm_count": p.multi_processor_count,
                    "memory_gib": p.total_memory / GIB})
    env["git_commit"] = None
    try:
        git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, cwd=Path(__file__).resolve().parents[2])
        if git.returncode == 0:
            env["git_commit"] = git.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return env


def _fmt(value, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def summary_columns(result: dict) -> tuple[str, ...]:
    unit, kind = result["settings"]["output_unit"], result["settings"]["output_kind"]
    quality = "top-1 = fp32" if kind == "scores" else "PSNR dB"
    return ("size", "mode", "batch", f"{unit}/s", "ms/call", "TFLOP/s", "% ceiling",
            "peak GiB", "rel-L2", quality, "speed-up")


def summary_rows(result: dict) -> list[list[str]]:
    rate = result["settings"]["rate_key"]
    n_columns = len(summary_columns(result))
    out = []
    for s in result["sizes"]:
        for r in s["rows"]:
            if r.get("error"):
                out.append([s["size"], r["mode"], str(r["batch"]), "error: " + r["error"][:60]] +
                           [""] * (n_columns - 4))
                continue
            if "top1_agreement" in r:
                quality = f"{100 * r['top1_agreement']:.0f}%"
            elif r["psnr_db"] is None and r["max_abs_err"] == 0:
                quality = "exact"
            else:
                quality = _fmt(r["psnr_db"], ".1f")
            out.append([s["size"], r["mode"], str(r["batch"]), f"{r[rate]:.2f}",
                        f"{r['ms_median']:.2f}", f"{r['tflops']:.1f}",
                        _fmt(r["ceiling_fraction"] and 100 * r["ceiling_fraction"], ".1f"),
                        _fmt(r["peak_gib"], ".2f"), _fmt(r["rel_l2"], ".2e"), quality,
                        _fmt(r["speedup"], ".2f", "-") + ("x" if r["speedup"] is not None else "")])
    return out


STAGE_COLUMNS = ("stage", "ms", "% of sum", "TFLOP/s")


def stage_rows(row: dict) -> list[list[str]]:
    return [[s["stage"], f"{s['ms']:.3f}", f"{100 * s['share']:.1f}", _fmt(s["tflops"], ".1f")]
            for s in row["stages"]]


def text_table(columns, rows) -> str:
    widths = [max(len(str(c)), *(len(r[i]) for r in rows)) if rows else len(c)
              for i, c in enumerate(columns)]
    lines = ["  ".join(f"{c:>{w}}" for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(f"{v:>{w}}" for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def markdown_table(columns, rows) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---:" for _ in columns) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def headline(result: dict) -> list[str]:
    env, c = result["environment"], result["ceiling"]
    lines = [f"device: {env['device_name']} ({env['device']}); torch {env['torch']}, "
             f"CUDA {env['cuda']}, cuDNN {env['cudnn']}",
             f"timing: {result['timing']}",
             f"weights: {result['settings']['weights']}; accuracy inputs: {result['accuracy_inputs']}"]
    if c:
        lines.append(f"ceiling: {c['dtype']} {c['n']}^3 matrix product, median of {c['iters']}: "
                     f"{c['tflops']:.1f} TFLOP/s" + ("" if c["dtype"] == "bfloat16" else
                                                     " (not bf16: % ceiling is against this)"))
    return lines


def stage_sections(result: dict):
    """(title, row) for each measured row with a stage table."""
    for s in result["sizes"]:
        for r in s["rows"]:
            if r.get("stages"):
                yield (f"{s['size']} {r['mode']} batch {r['batch']} ({r['precision']}): stage sum "
                       f"{r['stage_sum_ms']:.2f} ms vs {r['ms_median']:.2f} ms per whole call", r)


def render_text(result: dict) -> str:
    row_name = result["settings"]["row_name"]
    parts = []
    for title, r in stage_sections(result):
        parts += [f"per stage, {title}", text_table(STAGE_COLUMNS, stage_rows(r)), ""]
    parts += headline(result)
    for s in result["sizes"]:
        best = s.get("best")
        if best:
            parts.append(f"{s['size']}: {s[f'gmacs_per_{row_name}']:.1f} GMAC per {row_name}; best "
                         f"{best['mode']} b{best['batch']}: {best['speedup']:.2f}x original")
    parts += ["", text_table(summary_columns(result), summary_rows(result))]
    return "\n".join(parts)


def render_markdown(result: dict) -> str:
    s = result["settings"]
    unit, row_name = s["output_unit"], s["row_name"]
    quality = ("top-1 = fp32: how often the top class equals the fp32 reference's"
               if s["output_kind"] == "scores" else "PSNR")
    parts = [f"# {s['model_title']}, model alone on one device", "",
             *[f"- {line}" for line in headline(result)],
             f"- iterations: {s['warmup']} warm-up, {s['iters']} timed, {s['stage_iters']} per-stage",
             f"- command: `{result['command']}`", "", "## Summary", "",
             markdown_table(summary_columns(result), summary_rows(result)), "",
             f"{unit}/s counts the model's outputs ({s['outputs_per_row']} per {row_name}); "
             f"TFLOP/s from the analytic count (`{s['model']}` stage_macs); % ceiling against the "
             f"matrix-product ceiling above; rel-L2 and {quality} against a strict fp32 reference "
             "on the same inputs; speed-up over `original`.", "",
             "## Per stage", ""]
    for title, r in stage_sections(result):
        parts += [f"### {title}", "", markdown_table(STAGE_COLUMNS, stage_rows(r)), ""]
    prof = result.get("profile")
    if prof:
        parts += [f"## Profile: {prof['what']}, {prof['size']} batch {prof['batch']}", "",
                  markdown_table(("name", "calls", "total ms", "%", "kind"),
                                 [[r["name"][:100].replace("|", "/"), str(r["calls"]),
                                   f"{r['total_ms']:.2f}", f"{100 * r['share']:.1f}", r["kind"]]
                                  for r in prof["top"][:15]]), ""]
    parts += ["## How work is counted", "", result["flop_convention"], ""]
    return "\n".join(parts)


def json_safe(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
