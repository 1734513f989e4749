"""Interpolate one video file end to end: decode, FLAVR, encode at factor x fps.

    python -m pipeline.cli.interpolate IN.mp4 -o OUT.mp4 --factor 4 [--checkpoint F|random] \
        [--trust-checkpoint] [--device auto|cpu|cuda:N] [--precision fp32|bf16|fp16] \
        [--batch N] [--resolution HxW]
    python -m pipeline.cli.interpolate IN.mp4 --eval [--factor 2]   (quality against the truth)

Without --checkpoint the model runs with the weights the project ships (weights/flavr-2x.
safetensors for factor 2), or random ones, said so, where it ships none; `--checkpoint random`
asks for random weights (a smoke test).

Streams: frame chunks from the decoder -> 4-frame windows (1 frame of look-behind, 2 of
look-ahead) -> FLAVR in batches -> the writer, which gets input frame i, then its factor-1 new
frames, ..., then the last input frame: (T-1)*factor+1 frames at the input fps x factor. Memory
stays bounded by one chunk plus one batch of windows, whatever the clip's length.

Any frame size of at least 8x8 works (FLAVR's minimum): the model pads internally, and since the
encoders' 4:2:0 video needs even sizes, an odd width or height is padded by one pixel for the
output (the last column or row repeated), with a notice.

A bad input (missing, empty, not a video, truncated or corrupt, unsupported codec, fewer than 2
frames, smaller than 8x8), a bad output (the input itself, a folder, an extension other than
.mp4/.mkv/.webm, a codec its container cannot hold, a place that cannot be written) or a bad
checkpoint (not a weight file, a folder, damaged, of another model or factor, or a pickle holding
more than weights without --trust-checkpoint) ends the command with exit code 2 and one line
naming the file. The video is written under a temporary name beside the output and renamed into
place once complete: a failed or interrupted (Ctrl-C, SIGTERM) run leaves no half-written video,
no folder it made for the output, and an existing file of the output's name untouched.
"""
from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from models.registry import RANDOM_WEIGHTS
from pipeline.errors import CheckpointError, VideoError
from pipeline.folders import missing_folders, remove_empty

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # what a shell reports for Ctrl-C
# 128 + 15, what a shell reports for a process SIGTERM ended: `timeout`, Slurm, systemd and
# Kubernetes send SIGTERM to stop a job, and this code tells them it stopped because asked.
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(BaseException):
    """SIGTERM, raised where the program is, so that it unwinds through the same cleanup as
    Ctrl-C's KeyboardInterrupt (a BaseException too: `except Exception` must not swallow it)."""


@contextmanager
def sigterm_raises():
    """Within: the first SIGTERM raises Terminated; later ones are ignored so the cleanup it
    starts is not cut short (a scheduler that will not wait sends SIGKILL). Main thread only."""
    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _min_frame_size() -> int:
    from models.flavr.served import FLAVRServed

    return FLAVRServed.min_size


def _resolution(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 256x448, got '{text}'") from None
    least = _min_frame_size()
    if h < least or w < least:
        raise argparse.ArgumentTypeError(f"height and width must be at least {least}, got {text}")
    return h, w


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _device(text: str) -> str:
    if text == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    from pipeline.media.decode import parse_device

    try:
        dev = parse_device(text)  # the decoder's own reading: a bare cuda is cuda:0
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected auto, cpu or cuda:N, got '{text}'") from None
    if dev.type == "cuda" and (not torch.cuda.is_available()
                               or dev.index >= torch.cuda.device_count()):
        raise argparse.ArgumentTypeError(f"device {text} is not available here")
    return str(dev)


def build_parser() -> argparse.ArgumentParser:
    from pipeline.media.encode import ENCODERS  # the writer's own codecs, AV1 among them

    ap = argparse.ArgumentParser(prog="python -m pipeline.cli.interpolate",
                                 description="Interpolate a video with FLAVR: decode, model, "
                                             "encode at factor x fps.")
    ap.add_argument("input", type=Path, help="video file to interpolate")
    task = ap.add_mutually_exclusive_group()  # --eval writes no video: -o would go unused
    task.add_argument("-o", "--output", type=Path, default=None,
                      help="output video (.mp4/.mkv: H.264 where available, .webm: VP9); "
                           "required unless --eval")
    task.add_argument("--eval", action="store_true",
                      help="keep every factor-th frame, interpolate the rest and print PSNR/SSIM "
                           "against the true frames next to the nearest-frame and averaging "
                           "baselines (writes no video; not with -o)")
    ap.add_argument("--factor", type=int, choices=(2, 4, 8), default=2,
                    help="output frames per input frame interval (fps multiplier)")
    ap.add_argument("--checkpoint", default=None,
                    help="FLAVR weights file, .safetensors (preferred) or .pth; default: the "
                         "weights the project ships for the factor; 'random': untrained weights "
                         "(a smoke test)")
    ap.add_argument("--trust-checkpoint", action="store_true",
                    help="allow full unpickling of a .pth checkpoint that holds more than "
                         "weights; it can run code from the file")
    ap.add_argument("--device", type=_device, default="auto", help="auto, cpu or cuda:N")
    ap.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                    help="model precision (default fp32; bf16/fp16 are for GPUs: on a CPU without "
                         "native support for them they run many times slower)")
    ap.add_argument("--batch", type=_at_least_one, default=4, help="windows per model call (>= 1)")
    ap.add_argument("--chunk", type=_at_least_one, default=16,
                    help="frames decoded per step (>= 1)")
    ap.add_argument("--resolution", type=_resolution, default=None, metavar="HxW",
                    help="resize the input to HxW before the model (default: its own size)")
    ap.add_argument("--codec", choices=("auto", *ENCODERS), default="auto",
                    help="encoder (default auto: H.264 where the container and PyAV take it, "
                         "else VP9); one the output's container holds")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def load_flavr(factor: int, checkpoint, device: str, precision: str, trust_checkpoint: bool,
               log=print):
    """FLAVR for `factor` on `device`, read once, before anything is decoded or written: the
    named weights, the project's shipped ones when none is named, or random ones on request."""
    from models.flavr.checkpoint import build_model
    from models.flavr.served import FLAVRServed

    if checkpoint is None:
        checkpoint = FLAVRServed(factor).shipped_weights()
        if checkpoint is None:
            log(f"notice: no weights are shipped for factor {factor}: random weights, so the new "
                f"frames are noise (pass --checkpoint)")
        else:
            log(f"weights: {checkpoint}")
    elif str(checkpoint) == RANDOM_WEIGHTS:
        checkpoint = None
    elif Path(checkpoint).is_dir():
        raise CheckpointError(f"{checkpoint}: is a folder; --checkpoint takes a weights file "
                              f"(.safetensors or .pth)")
    elif not Path(checkpoint).is_file():
        raise CheckpointError(f"{checkpoint}: no such checkpoint file")
    if torch.device(device).type == "cpu" and precision != "fp32":
        log(f"warning: --precision {precision} on the CPU can be many times slower than fp32 on "
            f"CPUs without native {precision} support")
    model = build_model(factor=factor, checkpoint=checkpoint, device=device, trust=trust_checkpoint)
    return model.for_inference(precision)


def interpolate(input_path, output_path, factor: int = 2, checkpoint=None, device: str = "cpu",
                precision: str = "fp32", batch: int = 4, chunk: int = 16,
                resolution: tuple[int, int] | None = None, codec: str = "auto",
                progress: bool = True, log=print, trust_checkpoint: bool = False) -> dict:
    """Run the whole thing; returns a summary dict. Raises VideoError / CheckpointError."""
    from tqdm import tqdm

    from models.flavr.windows import output_frame_count, stream_windows
    from pipeline.media.decode import FrameDecoder
    from pipeline.media.encode import VideoWriter
    from pipeline.media.probe import probe

    if batch < 1 or chunk < 1:
        raise ValueError("batch and chunk must be >= 1")
    info = probe(input_path)
    if info.frames < 2:
        raise VideoError(info.path, f"has {info.frames} frame(s); interpolation needs at least 2")
    if resolution is None:
        _check_frame_size(info)
    height, width = resolution or (info.height, info.width)
    output_path = Path(output_path)
    check_output(info.path, output_path, codec)
    # 4:2:0 video needs even sizes: an odd one is padded for the encoder (the model takes any).
    out_h, out_w = height + height % 2, width + width % 2
    if (out_h, out_w) != (height, width):
        log(f"notice: frame size {width}x{height} is odd; the output is {out_w}x{out_h}, its "
            f"last column or row repeated (4:2:0 video needs even sizes)")
    # Claimed before the weights load: an output that cannot be written is refused at once.
    partial, made = _claim_partial_file(output_path)
    total = output_frame_count(info.frames, factor)
    written = 0
    try:
        model = load_flavr(factor, checkpoint, device, precision, trust_checkpoint, log)
        decoder = FrameDecoder(device, resolution=(height, width))
        backend = decoder.backend_for(info)
        log(f"decode: {backend} ({decoder.last_reason})")
        try:
            writer = VideoWriter(partial, info.rate * factor, out_w, out_h, codec=codec)
        except OSError as e:  # e.g. a full disk
            raise VideoError(output_path, f"cannot be written ({e})") from None
        with writer, tqdm(total=total, unit="frame", disable=not progress,
                          desc=output_path.name) as bar, torch.inference_mode():
            last = None
            for windows, middles, _first in stream_windows(decoder.iter_chunks(info.path, chunk),
                                                           batch):
                new = model(windows)  # (B, factor-1, 3, H, W) float32
                if new.shape[1] != factor - 1:
                    raise CheckpointError(f"model made {new.shape[1]} frames per window, "
                                          f"factor {factor} needs {factor - 1}")
                # input frame i, then its factor-1 new frames, for each window of the batch
                out = torch.cat([middles[:, None].to(new.dtype), new], 1).flatten(0, 1)
                writer.write(_pad_to(out, out_h, out_w))
                written += out.shape[0]
                bar.update(out.shape[0])
                last = windows[-1, :, 2]  # input frame i+1 of the last window so far
            writer.write(_pad_to(last[None], out_h, out_w))
            written += 1
            bar.update(1)
        if written != total:
            raise VideoError(info.path, f"wrote {written} frames, expected {total}")
        partial.replace(_real_path(output_path))
    except BaseException:
        partial.unlink(missing_ok=True)  # this run's own file: no half-written video left behind
        remove_empty(made)
        raise
    for notice in decoder.take_notices():  # e.g. PyAV took over a codec this GPU's NVDEC lacks
        log(f"notice: decode: {notice}")
    return {"input": str(info.path), "output": str(output_path), "frames_in": info.frames,
            "frames_out": written, "fps_out": float(info.rate * factor), "codec": writer.codec,
            "width": out_w, "height": out_h, "padded": (out_h, out_w) != (height, width),
            "backend": decoder.last_backend}


def _check_frame_size(info) -> None:
    """FLAVR's smallest frame, checked on the clip's own size (--resolution checks its own)."""
    least = _min_frame_size()
    if info.height < least or info.width < least:
        raise VideoError(info.path, f"frames are {info.width}x{info.height}; FLAVR needs at least "
                                    f"{least}x{least} (--resolution HxW can enlarge them)")


def check_output(input_path, output_path: Path, codec: str) -> None:
    """Refuse, before anything runs, an output that would overwrite the input or that the
    encoder cannot write: raises VideoError naming it."""
    from pipeline.media.encode import CONTAINER_CODECS, pick_codec

    if _real_path(output_path) == _real_path(input_path) or (
            output_path.exists() and os.path.samefile(output_path, input_path)):
        raise VideoError(output_path, f"is the input video {input_path}; write the output to "
                                      f"another file")
    if output_path.is_dir():
        raise VideoError(output_path, f"is a folder; name the video to write in it, e.g. "
                                      f"{output_path / 'out.mp4'}")
    suffix = output_path.suffix.lower()
    if suffix not in CONTAINER_CODECS:  # FFmpeg picks the container from the extension
        named = f"extension '{suffix}' is not a video container" if suffix else "has no extension"
        raise VideoError(output_path, f"{named}; use {', '.join(CONTAINER_CODECS)}")
    try:  # the encoder's own rule: an encoder this build has, in a container that holds it
        pick_codec(output_path, codec)
    except ValueError as e:
        raise VideoError(output_path, f"--codec {codec}: {e}") from None


def _real_path(path) -> Path:
    """The file `path` names, links followed (a link's target is what gets written)."""
    return Path(os.path.realpath(path))


def _claim_partial_file(output_path: Path) -> tuple[Path, list[Path]]:
    """A new, empty file beside the output's target, made here (O_EXCL), so that a failed run
    removes only a file of its own; it keeps the container's extension, which FFmpeg reads.
    Also the folders made for it, deepest first, for a failed run to remove."""
    target = _real_path(output_path)
    made = missing_folders(target.parent)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.stem}.{secrets.token_hex(4)}.partial{target.suffix}")
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as e:
        remove_empty(made)
        raise VideoError(output_path, f"cannot be written ({e.strerror or e})") from None
    return partial, made


def _pad_to(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(T,3,h,w) -> (T,3,height,width) for height >= h, width >= w: the last row and column
    repeated."""
    dh, dw = height - frames.shape[-2], width - frames.shape[-1]
    if not dh and not dw:
        return frames
    return F.pad(frames.float(), (0, dw, 0, dh), mode="replicate")


def evaluate(input_path, factor: int = 2, checkpoint=None, device: str = "cpu",
             precision: str = "fp32", batch: int = 4, chunk: int = 16,
             resolution: tuple[int, int] | None = None, log=print,
             trust_checkpoint: bool = False) -> tuple[dict, int]:
    """`--eval`: scores per method and the number of recovered frames (interpolate_eval.py)."""
    from pipeline.cli.interpolate_eval import evaluate_clip
    from pipeline.media.decode import FrameDecoder
    from pipeline.media.probe import probe

    info = probe(input_path)
    if info.frames < 3 * factor + 1:
        raise VideoError(info.path, f"has {info.frames} frames; evaluating at {factor}x needs at "
                                    f"least {3 * factor + 1}")
    if resolution is None:
        _check_frame_size(info)
    model = load_flavr(factor, checkpoint, device, precision, trust_checkpoint, log)
    decoder = FrameDecoder(device, resolution=resolution)
    return evaluate_clip(model, decoder.iter_chunks(info.path, chunk), factor, batch)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.output is None and not args.eval:
        parser.error("the following arguments are required: -o/--output (or --eval)")
    # Ctrl-C and SIGTERM alike: the run's own files are removed on the way out, one line says so.
    try:
        with sigterm_raises():
            return _run(args)
    except (VideoError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("interrupted (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED


def _run(args) -> int:
    """The command once its flags are read: --eval's scores, or the interpolated video."""
    def log(msg):
        print(msg, file=sys.stderr)

    if args.eval:
        from pipeline.cli.interpolate_eval import format_scores

        table, n = evaluate(args.input, args.factor, args.checkpoint, args.device,
                            args.precision, args.batch, args.chunk, args.resolution, log,
                            args.trust_checkpoint)
        print(format_scores(table, n, args.factor))
        return 0
    summary = interpolate(args.input, args.output, args.factor, args.checkpoint, args.device,
                          args.precision, args.batch, args.chunk, args.resolution,
                          args.codec, progress=not args.quiet, log=log,
                          trust_checkpoint=args.trust_checkpoint)
    print(f"wrote {summary['output']}: {summary['frames_out']} frames "
          f"({summary['frames_in']} in), {summary['width']}x{summary['height']} at "
          f"{summary['fps_out']:g} fps, {summary['codec']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
