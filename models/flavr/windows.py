"""FLAVR's sliding windows of 4 frames, and putting the new frames back between the old ones.

Window i (i = 0 .. T-2) is frames [i-1, i, i+1, i+2] with indices clamped into [0, T-1]; the model
makes factor-1 new frames between its 2nd and 3rd frame (i and i+1). The first and last windows
repeat the first/last frame, so every gap between input frames gets its new frames and no input
frame is lost. The output sequence is

    f0, n0_1 .. n0_{F-1}, f1, n1_1 .., ..., f_{T-1}        ((T-1)*F + 1 frames)

`StreamingWindows` builds the same windows from frames arriving in chunks, keeping only 1 frame
of look-behind and 2 of look-ahead beyond what it has not yet emitted (bounded memory).
"""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import torch

WINDOW = 4


def window_indices(T: int) -> list[tuple[int, int, int, int]]:
    """Frame indices of each window for a clip of T frames (T >= 2)."""
    if T < 2:
        raise ValueError(f"need at least 2 frames to interpolate, got {T}")
    last = T - 1
    return [tuple(min(max(j, 0), last) for j in (i - 1, i, i + 1, i + 2)) for i in range(T - 1)]


def segment_window_indices(total: int, behind: int, count: int) -> list[tuple[int, int, int, int]]:
    """Indices (into `total` frames of a stream held around a segment) of the windows a segment
    yields: one per gap that starts at one of its `count` frames, the first being frame `behind`.
    Window of gap g is frames [g-1, g, g+1, g+2] clamped into the frames held, so a stream's start
    (behind 0) and end (fewer than 2 frames after) repeat the boundary frame exactly as
    `window_indices` does for a whole clip; the stream's last frame starts no gap."""
    last = total - 1
    return [tuple(min(max(j, 0), last) for j in (g - 1, g, g + 1, g + 2))
            for g in range(behind, behind + count) if g < last]


def output_frame_count(T: int, factor: int) -> int:
    """Frames in the interpolated sequence: every input frame plus factor-1 in each gap."""
    if T < 1 or factor < 1:
        raise ValueError("T and factor must be >= 1")
    return (T - 1) * factor + 1


def make_windows(frames: torch.Tensor, indices=None) -> torch.Tensor:
    """(T,3,H,W) -> (T-1, 3, 4, H, W), FLAVR's input layout; one gather on the frames' device.
    `indices` (default: window_indices(T)) picks other windows, e.g. a stream segment's."""
    if frames.dim() != 4:
        raise ValueError(f"expected (T,3,H,W) frames, got {tuple(frames.shape)}")
    if indices is None:
        indices = window_indices(frames.shape[0])
    idx = _index_tensor(tuple(indices), frames.device)
    return frames[idx].permute(0, 2, 1, 3, 4)  # (rows,4,3,H,W) -> (rows,3,4,H,W)


# Gather indices kept on their device, by (indices, device): a clip request of T frames always
# has the same windows, a stream segment one of a few. Made anew, the index tensor is a blocking
# copy from the host, after which torch synchronises the GPU stream: the decode worker would wait
# for all its queued work once more per request, besides its own synchronisation.
_INDEX_TENSORS: dict[tuple, torch.Tensor] = {}
_MAX_INDEX_TENSORS = 64  # then the cache starts again (clear is one step, safe across threads)


def _index_tensor(indices: tuple, device: torch.device) -> torch.Tensor:
    key = (indices, device)
    idx = _INDEX_TENSORS.get(key)
    if idx is None:
        if len(_INDEX_TENSORS) >= _MAX_INDEX_TENSORS:
            _INDEX_TENSORS.clear()
        idx = torch.tensor(indices, dtype=torch.long, device=device).reshape(-1, WINDOW)
        _INDEX_TENSORS[key] = idx
    return idx


def interleave(frames: Sequence, new_frames: Sequence) -> list:
    """Input frames f (T of them) and new frames n (T-1 groups of factor-1, e.g. a
    (T-1, F-1, 3, H, W) tensor) -> [f0, n0..., f1, n1..., ..., f_{T-1}]."""
    if len(new_frames) != len(frames) - 1:
        raise ValueError(f"{len(frames)} input frames need {len(frames) - 1} groups of new "
                         f"frames, got {len(new_frames)}")
    out = []
    for i in range(len(new_frames)):
        out.append(frames[i])
        out.extend(new_frames[i])
    out.append(frames[len(frames) - 1])
    return out


def interleave_tensor(frames: torch.Tensor, new_frames: torch.Tensor) -> torch.Tensor:
    """Tensor form of `interleave`: (T,3,H,W) + (T-1,F-1,3,H,W) -> ((T-1)*F+1, 3, H, W)."""
    T = frames.shape[0]
    if new_frames.shape[0] != T - 1:
        raise ValueError(f"{T} input frames need {T - 1} groups of new frames, "
                         f"got {new_frames.shape[0]}")
    body = torch.cat([frames[:-1, None], new_frames.to(frames.dtype)], 1)  # (T-1, F, 3, H, W)
    return torch.cat([body.flatten(0, 1), frames[-1:]], 0)


class StreamingWindows:
    """Feed frame chunks (t,3,H,W) in order; get back (windows (B,3,4,H,W), first window index).

    Window i needs frames i-1 .. i+2, so it is emitted once frame i+2 has arrived (or the clip has
    ended, when the missing ones are the clamped last frame). At most `batch` windows come per
    item. Memory: the pending frames only (batch + 3 at most, plus the chunk being consumed)."""

    def __init__(self, batch: int = 8):
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.batch = batch
        self._buf: torch.Tensor | None = None  # frames _base .. _base+len-1
        self._base = 0       # index of the first frame in _buf
        self._next = 0       # next window to emit
        self._seen = 0       # frames received so far

    def push(self, chunk: torch.Tensor) -> Iterator[tuple[torch.Tensor, int]]:
        if chunk.shape[0] == 0:
            return
        self._buf = chunk if self._buf is None else torch.cat([self._buf, chunk], 0)
        self._seen += chunk.shape[0]
        # window i is complete when frame i+2 is here: i <= seen-3
        yield from self._emit(self._seen - 3)

    def finish(self) -> Iterator[tuple[torch.Tensor, int]]:
        """End of clip: the remaining windows, with the last frame repeated."""
        if self._seen < 2:
            raise ValueError(f"need at least 2 frames to interpolate, got {self._seen}")
        yield from self._emit(self._seen - 2, final=True)

    def _frame_ids(self, i: int, T_known: int | None) -> list[int]:
        ids = [max(j, 0) for j in (i - 1, i, i + 1, i + 2)]
        if T_known is not None:
            ids = [min(j, T_known - 1) for j in ids]
        return ids

    def _emit(self, last_window: int, final: bool = False):
        T = self._seen if final else None
        while self._next <= last_window:
            stop = min(last_window, self._next + self.batch - 1)
            ids = [self._frame_ids(i, T) for i in range(self._next, stop + 1)]
            if ids[0][0] < self._base:  # ids never decrease: checked on the host, no GPU sync
                raise AssertionError("look-behind frame was dropped")  # internal invariant
            rel = torch.tensor(ids, device=self._buf.device) - self._base
            windows = self._buf[rel].permute(0, 2, 1, 3, 4)
            yield windows, self._next
            self._next = stop + 1
            # keep only frames the next window needs: from frame next-1 on
            keep_from = max(self._next - 1, 0)
            if keep_from > self._base:
                self._buf = self._buf[keep_from - self._base:]
                self._base = keep_from


def stream_windows(chunks: Iterable[torch.Tensor], batch: int = 8
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """(windows (B,3,4,H,W), their middle frames (B,3,H,W) = input frame i, first index i).

    The middle frame of window i is input frame i: the frame written before window i's new
    frames; after the last window comes the clip's last frame, `windows[-1, :, 2]`."""
    sw = StreamingWindows(batch)
    for chunk in chunks:
        for windows, first in sw.push(chunk):
            yield windows, windows[:, :, 1], first
    for windows, first in sw.finish():
        yield windows, windows[:, :, 1], first
