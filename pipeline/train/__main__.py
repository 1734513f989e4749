"""python -m pipeline.train: train FLAVR, export its weights, or measure training speed.

    python -m pipeline.train -c configs/train/flavr-2x.yaml [--set FIELD=VALUE ...]
                             [--resume DIR] [--out DIR] [--max-minutes M] [--dry-run]
    torchrun --standalone --nproc_per_node N -m pipeline.train -c ...     (all GPUs of a host)
    python -m pipeline.train export CKPT_DIR OUT.safetensors [--dtype bf16] [--raw]
    python -m pipeline.train bench [...]                                   (see pipeline.train.bench)
    python -m pipeline.train summary RUN_DIR                               (a run's short table)
    python -m pipeline.train compare OUT.png LABEL=RUN_DIR ...             (runs' PSNR side by side)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from pipeline.errors import CheckpointError, ConfigError, OutputError
from pipeline.folders import is_within, nearest_existing
from pipeline.train import logs
from pipeline.train.config import describe, load_train_config

# torch and the modules that import it load inside the commands that need them: --help and
# flag errors stay quick, and a Ctrl-C while torch loads is caught like any other.


def _train(argv) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("-c", "--config", type=Path, help="training config (YAML); omitted: the defaults")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a config field, e.g. --set optim.lr=1e-4 (repeatable)")
    ap.add_argument("--resume", type=Path, metavar="DIR",
                    help="continue from a checkpoint folder (full), or weights only: a weights "
                         "folder or an exported .safetensors file (e.g. weights/flavr-2x.safetensors)")
    ap.add_argument("--out", type=Path, metavar="DIR",
                    help="output folder (default logs/train-<time>-<name>)")
    ap.add_argument("--max-minutes", type=float, metavar="M",
                    help="stop cleanly (save) after M minutes; same as --set train.max_minutes=M")
    ap.add_argument("--stop-at", type=int, metavar="STEP",
                    help="end this piece cleanly at STEP (saved); the schedule still spans train.steps")
    ap.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    args = ap.parse_args(argv)
    overrides = list(args.set) + ([f"train.max_minutes={args.max_minutes}"]
                                  if args.max_minutes is not None else [])
    cfg = load_train_config(args.config, overrides)
    if args.dry_run:
        print(describe(cfg), end="")
        return 0
    # The loop checks its steps only after taking one: a stop at 0 or below would still train one.
    if args.stop_at is not None and args.stop_at < 1:
        raise ConfigError("--stop-at", f"must be a positive integer; got {args.stop_at}")
    if args.resume is not None:
        _check_resume(args.resume, cfg.model.factor, cfg.train.steps, args.stop_at)
    out = args.out or Path("logs") / f"train-{time.strftime('%y%m%d_%H%M%S')}-{cfg.name}"
    _check_out(out, args.resume)
    from pipeline.train.loop import train

    return train(cfg, out, args.resume, args.stop_at)


RUN_FILES = ("checkpoint", "weights", "train.csv", "val.csv")  # what a run writes in its folder


def _check_out(out: Path, resume: Path | None) -> None:
    """Refuse, before any data loads, an output folder the run cannot make, or one that holds
    another run: this run would replace that run's checkpoint and cut its logs. Continuing that
    very run (--resume from inside it) is what a folder with a run in it is for."""
    if out.exists() and not out.is_dir():
        raise ConfigError("--out", f"{out} is a file; name a folder for the run")
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held and not (resume is not None and is_within(resume, out)):
        raise ConfigError("--out", f"{out} holds a training run ({', '.join(held)}), which this "
                                   f"run would replace; continue it with --resume "
                                   f"{out / 'checkpoint'}, or name another folder")
    ancestor = nearest_existing(out)
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError("--out", f"{out} cannot be made: {ancestor} is not a folder this "
                                   f"user can write in")


def _check_resume(resume: Path, factor: int, steps: int, stop_at: int | None) -> None:
    """Refuse a --resume the run could not continue from, before it loads data or writes."""
    if not (resume.is_dir() or resume.suffix == ".safetensors" and resume.is_file()):
        raise ConfigError("--resume", f"{resume} is neither a checkpoint folder nor a "
                                      f".safetensors weights file")
    if (resume / "checkpoint").is_dir() and not any(resume.glob("model-*.safetensors")):
        raise ConfigError("--resume", f"{resume} is a run's folder; continue it from its "
                                      f"checkpoint: --resume {resume / 'checkpoint'}")
    from pipeline.train.checkpoint import check

    try:
        step = check(resume, factor)
    except CheckpointError as e:
        raise ConfigError("--resume", str(e)) from None
    if stop_at is not None and stop_at <= step:
        raise ConfigError("--stop-at", f"must be past step {step}, where --resume {resume} "
                                       f"continues; got {stop_at}")
    if step >= steps:
        raise ConfigError("--resume", f"{resume} continues at step {step}, and train.steps is "
                                      f"{steps}: nothing is left to train; raise it, e.g. "
                                      f"--set train.steps={step + 1000}")


def _export(argv) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.train export",
                                 description="write one inference weight file (safetensors) "
                                             "from a checkpoint or weights folder")
    ap.add_argument("checkpoint", type=Path, help="checkpoint or weights folder")
    ap.add_argument("out", type=Path, help="OUT.safetensors")
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    ap.add_argument("--raw", action="store_true",
                    help="the trained weights, not their moving average (optim.ema) where the "
                         "checkpoint has one")
    args = ap.parse_args(argv)
    from pipeline.train.checkpoint import export

    path = export(args.checkpoint, args.out, args.dtype, args.raw)
    print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB ({args.dtype})")
    return 0


def _compare(argv) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.train compare",
                                 description="plot held-out PSNR against step of several runs")
    ap.add_argument("png", type=Path, help="OUT.png")
    ap.add_argument("runs", nargs="+", metavar="LABEL=VAL_CSV",
                    help="a label and a run's val.csv (or its folder)")
    args = ap.parse_args(argv)
    if args.png.suffix.lower() != ".png":
        raise OutputError(args.png, "must end in .png")
    if not args.png.parent.is_dir():
        raise OutputError(args.png, f"no folder {args.png.parent} to write it in")
    runs = []
    for item in args.runs:
        label, sep, path = item.partition("=")
        if not sep or not label:
            ap.error(f"{item!r} is not LABEL=VAL_CSV")
        path = Path(path) / "val.csv" if Path(path).is_dir() else Path(path)
        if not path.is_file():
            ap.error(f"{path}: no such file")
        columns, rows = logs.read_table(path)
        if not {"step", "clip", "model_psnr", "average_psnr"} <= set(columns):
            ap.error(f"{path}: not a run's val.csv (its columns: {', '.join(columns) or 'none'})")
        if not rows:
            ap.error(f"{path}: no validation yet")
        runs.append((label, path))
    try:
        logs.plot_compare(runs, args.png)
    except OSError as exc:
        raise OutputError(args.png, f"cannot be written ({exc.strerror or exc})") from None
    print(f"wrote {args.png}")
    return 0


def _summary(argv) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.train summary",
                                 description="a training run's short table")
    ap.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    args = ap.parse_args(argv)
    for folder in args.runs:
        if not (folder / "train.csv").is_file():
            ap.error(f"{folder}: not a training run's folder (no train.csv)")
    for folder in args.runs:
        print(logs.summary(folder))
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "export":
            return _export(argv[1:])
        if argv and argv[0] == "compare":
            return _compare(argv[1:])
        if argv and argv[0] == "summary":
            return _summary(argv[1:])
        if argv and argv[0] == "bench":
            from pipeline.train.bench import main as bench_main

            return bench_main(argv[1:])
        return _train(argv)
    except (ConfigError, CheckpointError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the first Ctrl-C of a training run stops it cleanly (saved)
        print("interrupted; the checkpoints saved before it are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
