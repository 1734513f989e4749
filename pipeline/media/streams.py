"""Streams: long videos read segment by segment, each with its decoder open and positioned.

A stream plays one file; with `loop` the file starts again after its last frame (a camera that
keeps recording: the windows across that seam see a cut, as at a shot change), so it never ends.
A segment of N frames comes with the frames around it that the model's rows read
(ServedModel.stream_behind / stream_ahead): the worker keeps them from the segment before and
decodes the look-ahead once, so every frame of the stream is decoded exactly once.

    reader = SegmentReader(FrameDecoder("cpu").open("street.mp4", 8), behind=1, ahead=2)
    frames, behind, ahead = reader.next(8)     # (behind + n + ahead, 3, H, W)
"""
from __future__ import annotations

import torch

from pipeline.errors import VideoError
from pipeline.media.backends.base import FrameSource


class LoopingSource(FrameSource):
    """A file's frames over and over: `open()` makes a fresh positioned decoder at frame 0."""

    def __init__(self, open_source):
        self._open = open_source
        self._source = open_source()
        self.loops = 0  # times the file started again

    def read(self, n: int) -> torch.Tensor:
        pieces, got, fresh = [], 0, False
        while got < n:
            try:
                piece = self._source.read(n - got)
            except EOFError:
                if fresh:  # a file that yields nothing from its start would loop forever
                    raise EOFError("the file has no frames") from None
                self._source.close()
                self._source, fresh = self._open(), True
                self.loops += 1
                continue
            pieces.append(piece)
            got += piece.shape[0]
            fresh = False
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def close(self) -> None:
        self._source.close()


class SegmentReader:
    """One stream's segments in order: `next(n)` returns (frames, behind, ahead) where frames
    holds `behind` frames before the segment, its n new frames (fewer only where a finite stream
    ends) and `ahead` frames after it; behind is below `self.behind` only at the stream's start,
    ahead below `self.ahead` only at its end. Raises EOFError once a finite stream has ended."""

    def __init__(self, source: FrameSource, behind: int, ahead: int):
        self.source, self.behind, self.ahead = source, behind, ahead
        self.held: torch.Tensor | None = None  # frames [position - kept_behind, position + kept_ahead)
        self.kept_ahead = 0
        self.position = 0  # stream index of the next segment's first frame
        self.first = 0  # stream index of the last segment's first frame
        self.segments = 0
        self.ended = False

    def next(self, n: int) -> tuple[torch.Tensor, int, int]:
        want = n + self.ahead - self.kept_ahead  # frames not yet decoded
        new = None
        if want > 0 and not self.ended:
            try:
                new = self.source.read(want)
            except EOFError:
                new = None
            if new is None or new.shape[0] < want:
                self.ended = True
        parts = [t for t in (self.held, new) if t is not None and t.shape[0]]
        if not parts:
            raise EOFError("the stream has ended")
        frames = parts[0] if len(parts) == 1 else torch.cat(parts)
        behind = 0 if self.held is None else self.held.shape[0] - self.kept_ahead
        available = frames.shape[0] - behind  # this segment's frames plus what follows
        count = min(n, available)
        if count <= 0:
            raise EOFError("the stream has ended")
        ahead = min(self.ahead, available - count)
        frames = frames[:behind + count + ahead]
        # What the next segment needs from here: its look-behind and what was decoded ahead.
        keep = min(self.behind, behind + count) + ahead
        self.held = frames[frames.shape[0] - keep:].clone()
        self.kept_ahead = ahead
        self.first = self.position
        self.position += count
        self.segments += 1
        return frames, behind, ahead

    def close(self) -> None:
        self.source.close()


class StreamSet:
    """The streams one decode worker owns, each read segment after segment by its own open
    decoder (FrameDecoder.open) over its file in a loop.

    A segment must come after the stream's previous one (the client sends them in order through
    this worker's own queue); a decoder that fails is dropped, and the stream's next segment
    starts the file again from its first frame, as a stream that restarted."""

    def __init__(self, decoder, behind: int, ahead: int, chunk: int, loop: bool = True):
        self.decoder, self.behind, self.ahead = decoder, behind, ahead
        self.chunk, self.loop = chunk, loop
        self.readers: dict[int, SegmentReader] = {}
        self.last: dict[int, int] = {}  # stream id -> its last segment served

    def open(self, stream_id: int, path) -> SegmentReader:
        if self.loop:
            source = LoopingSource(lambda: self.decoder.open(path, self.chunk))
        else:
            source = self.decoder.open(path, self.chunk)
        reader = self.readers[stream_id] = SegmentReader(source, self.behind, self.ahead)
        return reader

    def segment(self, stream_id: int, path, segment: int, n: int):
        """(frames, behind, ahead) of the stream's next n frames (SegmentReader.next)."""
        last = self.last.get(stream_id)
        if last is not None and segment <= last:
            raise VideoError(path, f"stream {stream_id}: segment {segment} arrived after "
                                   f"segment {last}: a stream's segments must come in order")
        reader = self.readers.get(stream_id) or self.open(stream_id, path)
        try:
            out = reader.next(n)
        except BaseException:
            self.readers.pop(stream_id, None)
            reader.close()
            raise
        self.last[stream_id] = segment
        return out

    def first_frame(self, stream_id: int) -> int:
        """Where in its stream the stream's last segment started (a stream that restarted counts
        from its restart)."""
        return self.readers[stream_id].first

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()
        self.readers.clear()
