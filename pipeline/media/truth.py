"""Ground truth beside a clip: the true frames between the clip's own, for quality checks.

Two kinds, found next to the clip by name:

  CLIP.truth.npz    synthetic clips (synthetic.py, moving_fraction.py with a truth factor F):
                    `frames` (N, H, W, 3) uint8 RGB rendered at t = j/F, `times`, `factor`
  CLIP.truth.<ext>  a video at F times the clip's frame rate whose frame F*i is the clip's frame i
                    (any container and codec the pipeline decodes): how real footage gets truth.
                    `decimate` makes such a pair from any video: the clip keeps every F-th frame,
                    the original is the truth.

In both, truth frame F*i + j stands for time i + j/F of the clip. A model of factor f makes the
frames at i + k/f, which are truth frames F*i + k*F/f: F must be a multiple of f.

    python -m pipeline.media.truth decimate IN OUT.mp4 --factor 2 [--size 720x1280] [--crf 12]

writes OUT.mp4 (every 2nd frame of IN, at half its frame rate) and OUT.truth.mp4 (all of them).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import VideoError

TRUTH = ".truth"


def truth_path(clip) -> Path:
    """Where a synthetic clip's true frames are kept."""
    return Path(clip).with_suffix(TRUTH + ".npz")


def truth_video_path(clip) -> Path:
    """The truth video `decimate` writes beside a clip (same container)."""
    clip = Path(clip)
    return clip.with_suffix(TRUTH + clip.suffix)


def write_truth_npz(clip, frames: np.ndarray, factor: int) -> Path:
    """(N, H, W, 3) uint8 RGB frames at t = j/factor beside `clip`."""
    path = truth_path(clip)
    times = np.arange(frames.shape[0]) / factor
    np.savez_compressed(path, frames=frames, times=times, factor=int(factor))
    return path


def is_truth_file(path) -> bool:
    """A truth file, never a clip of its own (a glob over a folder must not take it)."""
    return Path(path).stem.endswith(TRUTH)


def find_truth(clip) -> Path | None:
    """The clip's truth file: the .npz first, then a video CLIP.truth.<ext>."""
    npz = truth_path(clip)
    if npz.is_file():
        return npz
    clip = Path(clip)
    videos = sorted(p for p in clip.parent.glob(f"{clip.stem}{TRUTH}.*")
                    if p.is_file() and p.suffix != ".npz")
    return videos[0] if videos else None


@dataclass(frozen=True)
class TruthInfo:
    path: str
    factor: int  # truth frames per clip frame
    frames: int  # truth frames in the file
    clip_frames: int  # frames of the clip it belongs to

    @property
    def is_video(self) -> bool:
        return not self.path.endswith(".npz")


def describe_truth(clip, model_factor: int) -> TruthInfo | None:
    """The clip's truth, checked against the clip and the model; None where it has none.
    Raises VideoError naming the truth file when it cannot score this model's frames."""
    from pipeline.media.probe import probe

    path = find_truth(clip)
    if path is None:
        return None
    clip_info = probe(clip)
    if path.suffix == ".npz":
        try:
            with np.load(path) as data:
                factor, frames = int(data["factor"]), len(data["times"])
        except (OSError, ValueError, KeyError) as exc:
            raise VideoError(path, f"not a truth file (frames, times, factor): {exc}") from None
    else:
        info = probe(path)
        ratio = info.rate / clip_info.rate
        if ratio.denominator != 1 and abs(float(ratio) - round(ratio)) > 1e-3:
            raise VideoError(path, f"its frame rate {info.fps:g} is not a whole multiple of the "
                                   f"clip's {clip_info.fps:g} ({clip})")
        factor, frames = max(1, round(ratio)), info.frames
    if factor % model_factor:
        raise VideoError(path, f"ground truth at {factor}x the clip's frame rate does not hold "
                               f"the frames of a {model_factor}x model: the truth factor "
                               f"({factor}) must be a multiple of model.factor ({model_factor})")
    needed = (clip_info.frames - 1) * factor + 1
    if frames < needed:
        raise VideoError(path, f"holds {frames} frames; the clip's {clip_info.frames} frames at "
                               f"{factor}x need {needed}")
    return TruthInfo(str(path), factor, frames, clip_info.frames)


def truths_for(videos, model_factor: int) -> dict[str, TruthInfo]:
    """Clip path -> its truth, for the clips of a run that have one."""
    out = {}
    for v in dict.fromkeys(str(v) for v in videos):
        try:
            info = describe_truth(v, model_factor)
        except VideoError as exc:
            if Path(exc.path).resolve() == Path(v).resolve():  # a bad clip: its requests fail later
                continue
            raise
        if info is not None:
            out[v] = info
    return out


def gap_targets(first: int, rows: int, truth: TruthInfo, model_factor: int
                ) -> list[tuple[int, int, list[int]]]:
    """Where the truth of a request's new frames is: (row, clip frame before the gap, truth frame
    of each of the row's new frames), for the rows whose gap has truth.

    Row r interpolates between stream frames first + r and first + r + 1 (a clip request: first
    0; a stream's segment: its first frame's place in the stream). A stream plays its file in a
    loop, so stream frame p is file frame p mod (clip frames); the gap across the loop's seam
    (last frame to first) has no truth and is left out."""
    step = truth.factor // model_factor
    out = []
    for r in range(rows):
        i = (first + r) % truth.clip_frames
        if i + 1 >= truth.clip_frames:
            continue
        ids = [i * truth.factor + k * step for k in range(1, model_factor)]
        if ids[-1] < truth.frames:
            out.append((r, i, ids))
    return out


def decimate(src, clip, factor: int, size: tuple[int, int] | None = None, crf: int = 12
             ) -> tuple[int, int]:
    """Write every `factor`-th frame of `src` to `clip` (at its frame rate / factor) and all of
    them to the truth video beside it; returns (clip frames, truth frames)."""
    import av

    from pipeline.media.encode import VideoWriter
    from pipeline.media.transcode import rgb_frames, target_format

    if factor < 2:
        raise ValueError(f"factor must be >= 2, got {factor}")
    clip = Path(clip)
    with av.open(str(src)) as container:
        rate, h, w = target_format(container, size)
        with VideoWriter(truth_video_path(clip), rate, w, h, crf=crf) as truth, \
                VideoWriter(clip, rate / factor, w, h, crf=crf) as kept:
            for j, frame in enumerate(rgb_frames(container, h, w)):
                truth.write(frame)
                if j % factor == 0:
                    kept.write(frame)
            return kept.frames_written, truth.frames_written


def main(argv=None) -> int:
    from pipeline.media.encode import check_crf, pick_codec  # PyAV only for the command
    from pipeline.media.transcode import even_size

    ap = argparse.ArgumentParser(prog="python -m pipeline.media.truth",
                                 description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("decimate", help="a clip of every F-th frame of a video, with the video "
                                        "as its truth (OUT.truth.<ext>)")
    d.add_argument("src")
    d.add_argument("out")
    d.add_argument("--factor", type=int, default=2, help="keep 1 frame in F (2)")
    d.add_argument("--size", default=None, help="HxW, even (default: the source's, made even)")
    d.add_argument("--crf", type=int, default=12, help="quality of both, lower is better (12)")
    args = ap.parse_args(argv)
    size = even_size(args.size, ap)
    if args.factor < 2:
        ap.error("--factor: at least 2")
    try:  # both videos are written in the codec OUT's container takes first
        check_crf(pick_codec(args.out), args.crf)
    except ValueError as exc:
        ap.error(f"--crf: {exc}")
    kept, total = decimate(args.src, args.out, args.factor, size, args.crf)
    print(f"{args.out}: {kept} frames; {truth_video_path(args.out)}: {total} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
