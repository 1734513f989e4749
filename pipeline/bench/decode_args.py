"""The decode-only benchmark's flags, every one checked before anything is made (no clip, no
folder, no worker): one error line naming the flag, exit 2 (decode_only.main)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.folders import check_folder

# --backends auto runs them in this order: the GPU decoders first, so that a run cut short by a
# time limit has measured them
AUTO_ORDER = ("pynvvideocodec", "dali-gpu", "pyav", "dali-cpu")
LIMIT = 10_000  # requests, clips, reads and frames per flag: enough, and a run that ends
MIN_FRAMES = 2  # a request of one frame has nothing to interpolate (the decoder refuses it)
ONTO = {"cuda": "GPUs", "cpu": "the CPU"}
# what check_args adds to the parsed flags (not flags: decode.json's settings leave them out)
DERIVED = ("size_list", "worker_list", "codec_list", "devices", "backend_list")


def build_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmark.py --decode-only", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="auto", help="comma list, or auto: every backend that "
                   "can run here (default)")
    p.add_argument("--codecs", default="h264,hevc,vp9,av1")
    p.add_argument("--sizes", default="256x256,720x1280", help="HxW list")
    p.add_argument("--workers", default="1,2,4", help="worker processes per GPU (or on the CPU)")
    p.add_argument("--gpus", default="all", help="all (every GPU, or the CPU where there is "
                   "none), a comma list of GPU ids, or none (CPU)")
    p.add_argument("--frames", type=int, default=8, help="frames per clip request, at least 2 "
                   "(8, as the shipped configs' requests)")
    p.add_argument("--clips", type=int, default=24, help="clip requests per worker and cell")
    p.add_argument("--distinct", type=int, default=4, help="distinct clips per codec and size")
    p.add_argument("--clip-frames", type=int, default=None, help="frames in each short clip, of "
                   "which a request decodes the first --frames (default --frames; the shipped "
                   "configs' clips hold 16)")
    p.add_argument("--phases", action="store_true", help="then profile each clip's decode phase "
                   "by phase (synchronising the device at every phase boundary, in that pass "
                   "only): mean and p90 per phase, OUT/phases.csv")
    p.add_argument("--stream-reads", type=int, default=12, help="reads of --frames frames per "
                   "worker from the open stream")
    p.add_argument("--cache", default=".cache/decode-bench", help="where the clips are written "
                   "(once)")
    p.add_argument("--out", default=None, help="folder for decode.csv and decode.json "
                   "(default logs/decode-<time>)")
    return p


def check_args(args) -> None:
    """The flags' values on their own and against this machine; ConfigError naming the flag.
    Sets args.size_list, worker_list, codec_list, devices and backend_list."""
    least = {"frames": MIN_FRAMES}
    for name in ("frames", "clips", "distinct", "stream_reads"):
        lo = least.get(name, 1)
        if not lo <= getattr(args, name) <= LIMIT:
            why = " (interpolation needs at least 2 frames)" if lo == MIN_FRAMES else ""
            raise ConfigError(f"--{name.replace('_', '-')}",
                              f"must be between {lo} and 10,000, got {getattr(args, name)}{why}")
    if args.clip_frames is not None and not args.frames <= args.clip_frames <= LIMIT:
        raise ConfigError("--clip-frames", f"at least --frames ({args.frames}), at most 10,000, "
                                           f"got {args.clip_frames}")
    args.size_list = _sizes(args.sizes)
    args.worker_list = _ints("--workers", args.workers, 1, 64, "worker processes per device")
    args.codec_list = _codecs(args.codecs)
    args.devices = devices(args.gpus)
    args.backend_list = _backends(args.backends, args.devices[0] != "cpu", args.codec_list)
    check_folder("--cache", Path(args.cache))
    if args.out is not None:
        check_folder("--out", Path(args.out))


def _sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        try:
            size = tuple(int(x) for x in part.lower().split("x"))
        except ValueError:
            size = ()
        if len(size) != 2 or not 16 <= min(size) <= max(size) <= 8192 or size[0] % 2 or size[1] % 2:
            raise ConfigError("--sizes", f"each HxW must have even sides between 16 and 8192, "
                                         f"got '{part}'")
        out.append(size)
    return out


def _ints(flag: str, text: str, lo: int, hi: int, what: str) -> list[int]:
    try:
        values = [int(w) for w in text.split(",")]
    except ValueError:
        raise ConfigError(flag, f"takes N[,N...] ({what}), got '{text}'") from None
    if any(not lo <= v <= hi for v in values):
        raise ConfigError(flag, f"{what}: between {lo} and {hi}, got '{text}'")
    return values


def _codecs(text: str) -> list[str]:
    """The codecs asked for that this PyAV build can write clips of (a note for the others)."""
    from pipeline.media.encode import encoder_available
    from pipeline.media.probe import SUPPORTED_CODECS

    asked = text.split(",")
    for c in asked:
        if c not in SUPPORTED_CODECS:
            raise ConfigError("--codecs", f"unknown codec '{c}' (choose from "
                                          f"{', '.join(SUPPORTED_CODECS)})")
    usable = [c for c in dict.fromkeys(asked) if encoder_available(c) is not None]
    lacking = [c for c in dict.fromkeys(asked) if c not in usable]
    if not usable:
        raise ConfigError("--codecs", f"this PyAV build has no encoder for {', '.join(lacking)}, "
                                      "so no clip of it can be made here")
    if lacking:
        print(f"note: this PyAV build has no encoder for {', '.join(lacking)}: skipped",
              file=sys.stderr)
    return usable


def devices(gpus: str) -> list[str]:
    """The devices the workers decode onto: the CPU for `none` (and for `all` on a machine
    without GPUs); GPU ids must be GPUs torch sees."""
    if gpus == "none":
        return ["cpu"]
    ids = None if gpus == "all" else _ints("--gpus", gpus, 0, 1023, "GPU ids, all or none")
    if ids is not None and len(set(ids)) != len(ids):
        raise ConfigError("--gpus", f"names a GPU twice: '{gpus}'")
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if ids is None:
        return [f"cuda:{g}" for g in range(count)] or ["cpu"]
    for g in ids:
        if count == 0:
            raise ConfigError("--gpus", f"GPU {g} was asked for but this machine has no GPU "
                                        "(use --gpus none to decode on the CPU)")
        if g >= count:
            raise ConfigError("--gpus", f"GPU {g} is not present: this machine has {count} "
                                        f"GPU(s) (ids 0..{count - 1})")
    return [f"cuda:{g}" for g in ids]


def backends_for(asked: str, on_gpu: bool) -> list[str]:
    """The backends asked for (auto: every one) that can run on this run's devices, in order;
    a note for each one named explicitly that cannot."""
    names, reasons = _runnable(asked, on_gpu)
    for name, why in reasons.items():
        print(f"note: backend {name} cannot run here ({why}), skipped", file=sys.stderr)
    return names


def _runnable(asked: str, on_gpu: bool) -> tuple[list[str], dict[str, str]]:
    from pipeline.media.backends import BACKENDS, backend_class

    names = list(AUTO_ORDER) if asked == "auto" else asked.split(",")
    for name in names:
        if name not in BACKENDS:
            raise ConfigError("--backends", f"unknown backend '{name}' (choose from auto or "
                                            f"{', '.join(BACKENDS)})")
    if len(set(names)) != len(names):
        raise ConfigError("--backends", f"names a backend twice: '{asked}'")
    device = "cuda" if on_gpu else "cpu"
    out, reasons = [], {}
    for name in names:
        cls = backend_class(name)
        missing = cls.unavailable()
        if device not in cls.devices:
            onto = " or ".join(ONTO[d] for d in cls.devices)
            reasons[name] = f"it decodes onto {onto} only, and the workers are on {ONTO[device]}"
        elif missing:
            reasons[name] = f"its library does not import: {missing}"
        else:
            out.append(name)
    return out, ({} if asked == "auto" else reasons)


def _backends(asked: str, on_gpu: bool, codecs: list[str]) -> list[str]:
    """backends_for, refused when it leaves nothing to measure."""
    from pipeline.media.backends import backend_class

    names, reasons = _runnable(asked, on_gpu)
    if not names:
        raise ConfigError("--backends", "nothing to measure: " + "; ".join(
            f"{n}: {why}" for n, why in reasons.items()))
    for name, why in reasons.items():
        print(f"note: backend {name} cannot run here ({why}), skipped", file=sys.stderr)
    if not any(c in backend_class(n).codecs for n in names for c in codecs):
        takes = "; ".join(f"{n} decodes {', '.join(backend_class(n).codecs)}" for n in names)
        raise ConfigError("--codecs", f"nothing to measure: {takes}; not {', '.join(codecs)}")
    return names
