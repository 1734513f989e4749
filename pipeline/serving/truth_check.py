"""The sink's check against ground truth (--check-outputs, for clips with truth beside them:
pipeline/media/truth.py). Per request, its new frames and the two model-free baselines made from
its input frames (averaging the frames around each gap, repeating the nearer one) are scored
against the true frames at the same times, exactly as `interpolate --eval` scores one file
(analysis/quality.py: 8-bit rounded, PSNR capped at 100, means over the frames).

Why here: the sink already reads each item's outputs once when checking, and nothing in this
module runs when checking is off. It costs the sink time: the input frames are decoded again on
the CPU (the decode worker's are gone by now; on a CPU run the same decoder gives the same frames,
on a GPU NVDEC's differ by up to a grey level), the truth is read, and SSIM convolves every frame.

A stream's segments follow one another, so each stream (and each clip) is read front to back by a
cursor of its own that keeps its last frames: the next segment starts where the last one ended.

The decoders are imported where used: the orchestrator imports this module for `run_truths`, and
its start-up need not load them.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from pipeline.analysis.quality import GapScores, neighbour_baselines
from pipeline.analysis.records import TruthScores
from pipeline.media.truth import TruthInfo, gap_targets, truths_for

CHUNK = 8  # frames a cursor decodes at a time
OPEN_CURSORS = 64  # streams' cursors kept open at once (each holds a decoder)
ARRAYS = 4  # truth .npz files kept in memory (a clip set cycles through its clips)


def run_truths(videos, served, notices: list) -> dict[str, TruthInfo]:
    """The run's clips with ground truth, checked before anything starts (a truth that cannot
    score the model's frames stops the run, naming the file); a notice says what it costs."""
    if served.output_kind != "frames":
        return {}
    truths = truths_for(videos, served.factor)
    if truths:
        notices.append(f"--check-outputs: {len(truths)} of {len(set(map(str, videos)))} clips "
                       f"have ground truth; the sink scores their requests against it, which "
                       f"costs it time (decoding the inputs again, SSIM)")
    return truths


class FrameCursor:
    """Frame i of a file, read front to back; a frame behind those kept starts the file again."""

    def __init__(self, open_source):
        self._open = open_source
        self._source = None
        self._held: list[torch.Tensor] = []
        self._base = 0  # index of _held[0]

    def frame(self, i: int) -> torch.Tensor | None:
        """(3, H, W) float in [0, 1]; None past the file's end."""
        if self._source is None or i < self._base:
            self.close()
            self._source, self._held, self._base = self._open(), [], 0
        while i >= self._base + len(self._held):
            try:
                self._held += list(self._source.read(CHUNK))
            except EOFError:
                return None
            drop = max(0, len(self._held) - 2 * CHUNK)  # the frame asked for stays: it is newer
            self._held, self._base = self._held[drop:], self._base + drop
        return self._held[i - self._base]

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None


class _Array:
    """Truth frames held in memory (a .npz), as a FrameSource."""

    def __init__(self, frames: np.ndarray, size):
        self.frames, self.size, self.at = frames, size, 0

    def read(self, n: int) -> torch.Tensor:
        from pipeline.media.decode import resize

        if self.at >= len(self.frames):
            raise EOFError("no more truth frames")
        part = self.frames[self.at:self.at + n]
        self.at += len(part)
        return resize(torch.from_numpy(part).permute(0, 3, 1, 2).float() / 255.0, self.size)

    def close(self) -> None:
        pass


class TruthCheck:
    """Scores requests of clips that have truth. truths: clip path -> its truth; factor: the
    model's; backend: the run's --decode-backend (a GPU-only one becomes auto: decoding is on
    the CPU here); beat: called between frames, keeps the sink's heartbeat and returns True when
    the run is stopping."""

    def __init__(self, truths: dict[str, TruthInfo], factor: int, backend: str, beat):
        self.truths, self.factor, self.beat = truths, factor, beat
        self.backend = backend if backend in ("pyav", "dali-cpu") else "auto"
        self.cursors: OrderedDict = OrderedDict()
        self.arrays: dict[str, np.ndarray] = {}  # truth .npz files read, oldest first
        self.failed: set[str] = set()  # clips whose scoring failed (said once each)

    def score(self, part, new: torch.Tensor) -> TruthScores | None:
        """new: the request's (rows, factor-1, 3, H, W) new frames. None when the clip has no
        truth or none of the request's gaps does."""
        truth = self.truths.get(part.video)
        if truth is None:
            return None
        size = tuple(new.shape[-2:])
        inputs = self._cursor(part, "clip", lambda: self._decoder(size).open(part.video, CHUNK))
        truths = self._cursor(part, "truth", lambda: self._open_truth(truth, size))
        scores = GapScores()
        for row, i, ids in gap_targets(part.position, part.rows, truth, self.factor):
            if self.beat():
                return None
            before, after = inputs.frame(i), inputs.frame(i + 1)
            true = [truths.frame(t) for t in ids]
            if before is None or after is None or any(t is None for t in true):
                continue  # a file shorter than its probe said
            guesses = neighbour_baselines(before[None], after[None], self.factor)
            guesses = {"model": new[row], **{m: g[0].to(new.device) for m, g in guesses.items()}}
            scores.add(guesses, torch.stack(true).to(new.device))
        if scores.n == 0:
            return None
        t = scores.table()
        return TruthScores(scores.n, t["model"]["psnr"], t["model"]["ssim"], t["average"]["psnr"],
                           t["average"]["ssim"], t["nearest"]["psnr"], t["nearest"]["ssim"])

    def _decoder(self, size):
        from pipeline.media.decode import FrameDecoder

        return FrameDecoder("cpu", resolution=size, backend=self.backend)

    def _open_truth(self, truth: TruthInfo, size):
        if truth.is_video:
            return self._decoder(size).open(truth.path, CHUNK)
        if truth.path not in self.arrays:
            with np.load(truth.path) as data:
                self.arrays[truth.path] = data["frames"]
            while len(self.arrays) > ARRAYS:
                self.arrays.pop(next(iter(self.arrays)))
        return _Array(self.arrays[truth.path], size)

    def _cursor(self, part, kind: str, open_source) -> FrameCursor:
        key = (part.video, part.stream_id, kind)
        if key not in self.cursors:
            self.cursors[key] = FrameCursor(open_source)
            while len(self.cursors) > OPEN_CURSORS:
                self.cursors.popitem(last=False)[1].close()
        self.cursors.move_to_end(key)
        return self.cursors[key]

    def close(self) -> None:
        for cursor in self.cursors.values():
            cursor.close()
        self.cursors.clear()
