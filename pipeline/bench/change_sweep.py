"""Threshold sweep of change-based inference: speed-up over the full model against fidelity.

    python -m pipeline.bench.change_sweep --replot DIR     (sweep.png again from DIR/sweep.csv)
    python -m pipeline.bench.change_sweep --out DIR [--video .cache/opencv-doc/vtest.avi]
        [--sizes 576x768,720x960] [--synthetic 0.01,0.1,0.5,1] [--thresholds 0.01,0.02,...]
        [--tile 64 --halo 8,16 --fallback 0.5 --refresh 16] [--device auto]
        [--precision fp32|bf16|fp16]      (default: bf16 on a GPU, fp32 on the CPU)

For every clip (the real static-camera clip, and synthetic clips in which 1%, 10%, 50%, 100% of
the frame moves, round-tripped through H.264, or VP9 where PyAV has no H.264 encoder, so that
their still pixels carry real codec noise) at every size, the full model and change-based
inference at every threshold run the same windows as one stream. Per threshold: model time of
each (summed over the clip's windows, median of timed passes after warm-up), speed-up, the share
of tiles computed, windows run whole and the time spent renewing gates, and PSNR against the full
model's frames over the clip, its worst window, and the pixels computed as tiles alone (with the
stream's cached gates, each tile's own gates, and the window's exact gates). Writes DIR/sweep.csv,
DIR/sweep.png, DIR/sweep.json and prints the table.
"""
from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import av
import torch
from matplotlib.figure import Figure  # no pyplot: needs no display or backend

from models.flavr.change_based import ChangeConfig
from models.flavr.checkpoint import build_model
from models.flavr.windows import make_windows
from pipeline.bench import change_passes
from pipeline.bench.change_sweep_args import build_parser
from pipeline.bench.model_bench import resolve_device
from pipeline.bench.render import environment, text_table
from pipeline.bench.timing import Clock, cudnn_settings
from pipeline.errors import CheckpointError, ConfigError, OutputError, VideoError
from pipeline.folders import make_folder, remove_empty
from pipeline.media.moving_fraction import (
    read_frames,
    render_clip,
    still_noise,
    write_lossy,
)

# What a user can put right (a flag, a file): one line, status 2, not a traceback.
USER_ERRORS = (CheckpointError, ConfigError, OutputError, VideoError)
COLUMNS = ("clip", "size", "halo", "threshold", "windows", "whole", "renewals", "tiles_computed", "cost",
           "full_ms", "change_ms", "speedup", "renewal_time_share", "psnr_db", "psnr_worst_window_db",
           "psnr_tiles_db", "psnr_tiles_own_gates_db", "psnr_tiles_exact_gates_db",
           "model_still_psnr_db", "still_noise_max", "still_noise_p999")


def clips(args, size):
    """(name, frames (T, 3, H, W) on the CPU, still-pixel noise (empty if unknown)) for every
    clip at `size`."""
    if args.video != "none":
        yield "real", read_frames(args.video, args.start, args.frames, size), {}
    for fraction in args.synthetic:
        frames, region = render_clip(*size, args.frames, fraction, args.seed)
        # Through a real lossy encode and back: the still part flickers as a camera's would.
        with tempfile.TemporaryDirectory(dir=args.out) as tmp:
            path = Path(tmp) / "clip.mp4"
            codec = write_lossy(path, frames, crf=args.synthetic_crf)
            decoded = read_frames(path)
        moving = region.mask(*size)
        noise = still_noise(decoded, moving, margin=16) if fraction < 1 else None
        noise = noise or {}
        yield f"moving {fraction:g} ({codec})", decoded, noise


def real_clip_size(args) -> tuple[int, int]:
    """(H, W) of the real clip, once the frames the sweep takes from it decode (the last of them
    is read): a file PyAV cannot decode, or one too short, is refused by flag (ValueError)."""
    last = args.start + args.frames - 1
    try:
        frame = read_frames(args.video, last, 1)
    except av.FFmpegError as e:
        why = getattr(e, "strerror", None) or str(e)
        raise ValueError(f"--video {args.video}: not a video PyAV can decode ({why})") from None
    except ValueError:  # read_frames: the clip ends before that frame
        raise ValueError(f"--video {args.video}: fewer than {last + 1} frames (--start "
                         f"{args.start}, --frames {args.frames})") from None
    return tuple(frame.shape[-2:])


def resolve_sizes(args) -> list[tuple[int, int]]:
    """The sizes to sweep, once the real clip is known to decode; ValueError naming the flag."""
    if args.video == "none" and not args.synthetic:
        raise ValueError("--video none with --synthetic '': no clip to measure")
    native = real_clip_size(args) if args.video != "none" else None
    if args.sizes != "native":
        return args.sizes  # HxW sizes, read by the parser
    if native is None:
        raise ValueError("--sizes: 'native' needs --video; give sizes, e.g. 576x768")
    return [native]


def resolve_precision(asked: str | None, device: torch.device) -> str:
    """--precision as given; unset, bf16 on a GPU and fp32 on the CPU, where bf16 without native
    support runs one FLAVR window tens of times slower (96x128: over 290 s against 3.9 s)."""
    if asked is not None:
        return asked
    return "bf16" if device.type == "cuda" else "fp32"


def load_model(args, device):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights are said in the output
        model = build_model(None if args.checkpoint else 2, args.checkpoint, "cpu", seed=args.seed)
    if args.checkpoint:
        weights = f"checkpoint {args.checkpoint}"
    else:
        weights = f"random (seed {args.seed}, {args.random_weights} init)"
        if args.random_weights == "lively":
            change_passes.liven(model)
    model = model.to(device).for_inference(args.precision, channels_last=device.type == "cuda")
    return model, weights


def change_config(args, halo: int, threshold: float) -> ChangeConfig:
    return ChangeConfig(threshold=threshold, tile=args.tile, halo=halo, feather=args.feather,
                        fallback=args.fallback, refresh=args.refresh)


def measure_clip(args, model, clock, name, frames, noise, size, device) -> list[dict]:
    windows = make_windows(frames.to(device))
    full = change_passes.full_pass(model, windows, clock, args.warmup, args.repeats)
    still = change_passes.still_psnr(model, frames[0].to(device))
    rows = []
    for halo, threshold in itertools.product(args.halo, args.thresholds):
        config = change_config(args, halo, threshold)
        result = change_passes.change_pass(model, config, windows, clock, args.warmup, args.repeats)
        clip, worst = change_passes.pass_fidelity(result, full)
        tiled = [result.outputs[i] for i in change_passes.tiled_rows(result)]
        gates = {"cached": change_passes.tile_psnr(tiled, full, result)}
        if args.gate_study and name == "real":
            gates = change_passes.gate_study(model, config, windows, full, result)
        rows.append({
            "clip": name, "size": f"{size[0]}x{size[1]}", "halo": halo, "threshold": threshold,
            "windows": len(result.stats), "whole": sum(s.whole for s in result.stats),
            "renewals": sum(s.reason in ("first", "refresh") for s in result.stats),
            "tiles_computed": clip.computed_fraction,
            "cost": sum(s.cost for s in result.stats) / len(result.stats),
            "full_ms": full.ms, "change_ms": result.ms, "speedup": full.ms / result.ms,
            "renewal_time_share": change_passes.refresh_share(result),
            "psnr_db": clip.psnr_db, "psnr_worst_window_db": worst,
            "psnr_tiles_db": gates["cached"],
            "psnr_tiles_own_gates_db": gates.get("own"),
            "psnr_tiles_exact_gates_db": gates.get("exact"),
            "model_still_psnr_db": still,
            "still_noise_max": noise.get("max"), "still_noise_p999": noise.get("p999"),
        })
        print(f"  {name} {size[0]}x{size[1]} halo {halo} threshold {threshold:g}: "
              f"{rows[-1]['speedup']:.2f}x, PSNR {clip.psnr_db:.2f} dB", flush=True)
    return rows


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def noise_text(row: dict) -> str:
    """Still pixels' drift in 8-bit levels, 'max/p99.9', '-' where unknown."""
    if row["still_noise_max"] is None:
        return "-"
    return f"{row['still_noise_max']:.0f}/{row['still_noise_p999']:.0f}"


def table(rows: list[dict]) -> str:
    cols = ("clip", "size", "halo", "thresh", "whole", "tiles", "full ms", "change ms", "speed-up",
            "renew", "PSNR dB", "worst dB", "tiles dB", "own gates", "exact gates", "still dB",
            "noise")
    body = [[r["clip"], r["size"], str(r["halo"]), f"{r['threshold']:g}", f"{r['whole']}/{r['windows']}",
             f"{r['tiles_computed']:.1%}", f"{r['full_ms']:.1f}", f"{r['change_ms']:.1f}",
             f"{r['speedup']:.2f}x", f"{r['renewal_time_share']:.0%}", fmt(r["psnr_db"], ".2f"),
             fmt(r["psnr_worst_window_db"], ".2f"),
             fmt(r["psnr_tiles_db"], ".2f"), fmt(r["psnr_tiles_own_gates_db"], ".2f"),
             fmt(r["psnr_tiles_exact_gates_db"], ".2f"), fmt(r["model_still_psnr_db"], ".2f"),
             noise_text(r)]
            for r in rows]
    return text_table(cols, body)


def plot(rows: list[dict], path: Path) -> None:
    """Two panels: speed-up per threshold, and PSNR against speed-up. A clip keeps one colour,
    a halo one line style, a size one marker; identical outputs are drawn on a band above the
    highest finite PSNR (they would squash the rest at any fixed height)."""
    fig = Figure(figsize=(13, 5))
    left, right = fig.subplots(1, 2)
    finite = [r["psnr_db"] for r in rows
              if r["psnr_db"] is not None and r["psnr_db"] < float("inf")]
    top = (max(finite) if finite else 50.0) + 3.0
    colours = {c: f"C{i % 10}" for i, c in enumerate(dict.fromkeys(r["clip"] for r in rows))}
    styles = {h: s for h, s in zip(sorted({r["halo"] for r in rows}), ("-", "--", ":", "-."))}
    markers = {z: m for z, m in zip(dict.fromkeys(r["size"] for r in rows), "osD^v")}
    for key in dict.fromkeys((r["clip"], r["size"], r["halo"]) for r in rows):
        series = [r for r in rows if (r["clip"], r["size"], r["halo"]) == key]
        look = dict(color=colours[key[0]], linestyle=styles.get(key[2], "-"),
                    marker=markers.get(key[1], "o"), label=f"{key[0]} {key[1]} halo {key[2]}")
        left.plot([r["threshold"] for r in series], [r["speedup"] for r in series], **look)
        psnr = [min(r["psnr_db"], top) for r in series]
        right.plot([r["speedup"] for r in series], psnr, **look)
        if key[0] == "real":  # thresholds on the real clip's curves only, to stay readable
            for r, y in zip(series, psnr):
                right.annotate(f"{r['threshold']:g}", (r["speedup"], y), fontsize=7,
                               textcoords="offset points", xytext=(3, 3), color=look["color"])
    left.axhline(1.0, color="grey", lw=0.8)
    right.axhline(top, color="grey", lw=0.8, ls=":")
    right.annotate("identical to the full model", (0.01, top), xycoords=("axes fraction", "data"),
                   fontsize=7, textcoords="offset points", xytext=(0, 3), color="grey")
    right.axhline(40.0, color="firebrick", lw=0.8, ls=":")
    right.set_ylim(min(finite + [40.0]) - 2.0, top + 2.0)
    left.set(xlabel="threshold (mean change of an 8x8 block, 0..1)",
             ylabel="speed-up over the full model", title="model time, full / change-based")
    right.set(xlabel="speed-up over the full model", ylabel="PSNR against the full model (dB)",
              title="fidelity against speed-up (labels: the real clip's thresholds)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def read_rows(path: Path) -> list[dict]:
    """sweep.csv back into rows with numbers (empty cells: None)."""
    text = {"clip", "size"}
    with open(path, newline="") as f:
        raws = list(csv.DictReader(f))
    rows = []
    for raw in raws:
        row = {}
        for k, v in raw.items():
            if k in text:
                row[k] = v
            elif v == "":
                row[k] = None
            else:
                row[k] = int(v) if k in ("halo", "windows", "whole", "renewals") else float(v)
        rows.append(row)
    return rows


def measure_all(args, model, clock, sizes, device) -> list[dict]:
    """The rows of every clip at every size."""
    rows = []
    with cudnn_settings(benchmark=args.cudnn_benchmark):
        for size in sizes:
            for name, frames, noise in clips(args, size):
                rows += measure_clip(args, model, clock, name, frames, noise, size, device)
    return rows


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.replot:
        source = args.replot / "sweep.csv"
        if not source.is_file():
            print(f"error: --replot {args.replot}: no sweep.csv there", file=sys.stderr)
            return 2
        plot(read_rows(source), args.replot / "sweep.png")
        print(f"wrote {args.replot}/sweep.png")
        return 0
    if args.out is None:
        print("error: --out: required (a folder for sweep.csv, sweep.png, sweep.json)",
              file=sys.stderr)
        return 2
    if args.video != "none" and not Path(args.video).is_file():
        print(f"error: --video {args.video}: not found (bash scripts/fetch_opencv_videos.sh "
              f"fetches it; --video none skips it)", file=sys.stderr)
        return 2
    if args.out.exists() and not args.out.is_dir():
        print(f"error: --out {args.out}: is a file; name a folder for sweep.csv, sweep.png, "
              f"sweep.json", file=sys.stderr)
        return 2
    # Everything that can be refused is, before the output folder is made.
    try:
        configs = [dataclasses.asdict(change_config(args, halo, 0.0)) for halo in args.halo]
        sizes = resolve_sizes(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    args.precision = resolve_precision(args.precision, device)
    try:  # the weights too: a file that cannot be used leaves no folder behind
        model, weights = load_model(args, device)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    clock = Clock(device)
    started = time.time()
    made: list[Path] = []  # make_folder takes away what it made when it fails
    try:
        made = make_folder("--out", args.out)
        rows = measure_all(args, model, clock, sizes, device)
    except BaseException as e:  # a run that wrote nothing leaves no folder (Ctrl-C too)
        remove_empty(made)
        if not isinstance(e, USER_ERRORS):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    with open(args.out / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args.out / "sweep.png")
    summary = {"command": sys.argv, "arguments": {k: str(v) for k, v in vars(args).items()},
               "change_configs": configs, "weights": weights, "timing": clock.method,
               "environment": environment(device), "seconds": time.time() - started, "rows": rows}
    (args.out / "sweep.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"device: {summary['environment']['device_name']}; precision {args.precision}; "
          f"weights: {weights}; timing: {clock.method}")
    print(table(rows))
    print(f"wrote {args.out}/sweep.csv, sweep.png, sweep.json in {summary['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
