"""The threshold sweep's flags (change_sweep.py), each read and checked as it is parsed: a bad
value stops the command before anything is loaded or made, with one line naming the flag."""
from __future__ import annotations

import argparse
from pathlib import Path

from models.flavr.change_based import ChangeConfig
from pipeline.argtypes import int_at_least
from pipeline.bench.model_bench import parse_sizes
from pipeline.media.moving_fraction import fraction_problem

DEFAULT_VIDEO = Path(".cache/opencv-doc/vtest.avi")


def number_list(kind, problem, least: int = 0):
    """An argparse `type`: comma-separated `kind` values (at least `least` of them), each one
    that `problem` takes (value -> why it cannot be, the value included, or None)."""
    def parse(text: str) -> list:
        try:
            values = [kind(t) for t in text.split(",") if t.strip()]
        except ValueError:
            expected = "integers" if kind is int else "numbers"
            raise argparse.ArgumentTypeError(f"expected comma-separated {expected}, got "
                                             f"'{text}'") from None
        if len(values) < least:
            raise argparse.ArgumentTypeError(f"needs at least {least}, got '{text}'")
        for value in values:
            why = problem(value)
            if why:
                raise argparse.ArgumentTypeError(why)
        return values

    parse.__name__ = f"{kind.__name__} list"
    return parse


def change_rule(name: str):
    """`problem` for one ChangeConfig field: the model's own rule, without its config prefix."""
    def problem(value) -> str | None:
        try:
            ChangeConfig(**{name: value})
        except ValueError as e:
            return str(e).split(": ", 1)[-1]
        return None

    return problem


def sizes(text: str):
    """'native' (the real clip's size), or HxW sizes."""
    return text if text == "native" else parse_sizes(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.bench.change_sweep",
                                description="Threshold sweep of change-based inference: speed-up "
                                            "over the full model against fidelity.")
    p.add_argument("--out", type=Path, help="folder for sweep.csv/.png/.json")
    p.add_argument("--replot", type=Path, metavar="DIR",
                   help="measure nothing: draw DIR/sweep.png again from DIR/sweep.csv")
    p.add_argument("--video", default=str(DEFAULT_VIDEO),
                   help="real clip ('none' to skip; fetch with scripts/fetch_opencv_videos.sh)")
    p.add_argument("--start", type=int_at_least(0), default=0, help="first frame of the real clip")
    p.add_argument("--frames", type=int_at_least(2), default=33,
                   help="frames per clip (frames-1 windows)")
    p.add_argument("--sizes", type=sizes, default="native", help="HxW list, e.g. 576x768,720x960; "
                   "'native' keeps the real clip's size (synthetic clips then use it too)")
    p.add_argument("--synthetic", type=number_list(float, fraction_problem),
                   default="0.01,0.1,0.5,1",
                   help="moving fractions of synthetic clips, each > 0 and <= 1 ('' for none)")
    p.add_argument("--synthetic-crf", type=int, default=16,
                   help="quality of the synthetic clips' lossy encode (lower is better)")
    p.add_argument("--thresholds", type=number_list(float, change_rule("threshold"), least=1),
                   default="0.02,0.04,0.06,0.08,0.12,0.16", help="each in [0, 1)")
    p.add_argument("--tile", type=int, default=ChangeConfig.tile)
    p.add_argument("--halo", type=number_list(int, change_rule("halo"), least=1),
                   default=[ChangeConfig.halo],
                   help="halo, or a list of halos to sweep each threshold at (e.g. 8,16)")
    p.add_argument("--feather", type=int, default=None, help="blend band (default halo/2)")
    p.add_argument("--fallback", type=float, default=ChangeConfig.fallback)
    p.add_argument("--refresh", type=int, default=ChangeConfig.refresh)
    p.add_argument("--gate-study", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure own and exact gates (untimed; the real clip only)")
    p.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=True,
                   help="let cuDNN time its algorithms per shape, for the full model and the "
                        "tiles alike, as the runners do (whole windows and tiles run in "
                        "power-of-two pieces, tuned in the untimed passes); off: its heuristics")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default=None, choices=("fp32", "bf16", "fp16"),
                   help="default: bf16 on a GPU, fp32 on the CPU")
    p.add_argument("--checkpoint", default=None, help="FLAVR weights (default: random, seed 0)")
    p.add_argument("--random-weights", choices=("lively", "default"), default="lively",
                   help="without --checkpoint: PyTorch's init with convolutions scaled by sqrt(6) "
                        "so the network's output depends visibly on its input, or PyTorch's init")
    p.add_argument("--warmup", type=int_at_least(0), default=1,
                   help="untimed passes per measurement")
    p.add_argument("--repeats", type=int_at_least(1), default=3,
                   help="timed passes per measurement")
    p.add_argument("--seed", type=int, default=0)
    return p
