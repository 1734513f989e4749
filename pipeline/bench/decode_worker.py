"""The decode-only benchmark's worker process and its clips.

A worker is a real process on one device (a GPU, or the CPU), like a decode worker of the
pipeline: it keeps one FrameDecoder per backend for its whole life (so a backend that keeps its
decoder across clips does so here too) and, for each cell of the grid, first prepares (decodes one
clip, opens its stream and reads the stream's first `frames`: set-up that the pipeline pays at
start-up, a stream's decoder being made at its first read), then runs two phases, each from a
start time shared by every worker of the cell:

  clips   decodes its list of short clips, each whole, one after another (one request each, a
          decoder set-up per clip where the backend makes one);
  stream  reads on through the long clip `frames` at a time, its decoder already made, open and
          positioned (FrameDecoder.open): the steady rate with no set-up at all.

With --phases a third pass runs between the two: `phases` decodes the clips again, each timed
phase by phase (bench/decode_phases.py), synchronising the device at every phase boundary.

It sends back the host-clock (CLOCK_MONOTONIC) start and end of each phase and what it decoded;
on a GPU each phase ends when the device's work is done (the stream is synchronised).
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path

from pipeline.clock import now, sleep_until

SEED = 11


@dataclass
class Cell:
    backend: str
    codec: str
    size: tuple[int, int]  # (H, W)
    clips: list[str]  # the clips this worker decodes, in order (one request each)
    frames: int  # frames per clip request, and per stream read
    stream: str  # a long clip of the same codec and size
    stream_reads: int


@dataclass
class Result:
    clips_s: tuple[float, float] | None = None  # (start, end) of the clip phase
    clips: int = 0
    clip_frames: int = 0
    stream_s: tuple[float, float] | None = None
    stream_frames: int = 0
    phases: dict | None = None  # phase -> seconds per clip (decode_phases.profile_clips)
    error: str = ""


def clip_set(root: Path, codec: str, size: tuple[int, int], frames: int, count: int,
             stream_frames: int) -> tuple[list[str], str]:
    """`count` distinct short clips and one long one of a codec and size, written once under
    root (synthetic content: textured layers in motion, pipeline/media/synthetic.py)."""
    from pipeline.media.synthetic import CONTAINER, write_clip

    h, w = size
    folder = root / f"{codec}-{w}x{h}"
    folder.mkdir(parents=True, exist_ok=True)
    ext = CONTAINER[codec]
    clips = []
    for i in range(count):
        path = folder / f"clip{i}-{frames}f{ext}"
        if not path.is_file():
            write_clip(path, w, h, frames, 24, codec, SEED + i)
        clips.append(str(path))
    stream = folder / f"stream-{stream_frames}f{ext}"
    if not stream.is_file():
        write_clip(stream, w, h, stream_frames, 24, codec, SEED + 1000)
    return clips, str(stream)


def worker_main(device: str, commands, replies, name: str) -> None:
    """Serve commands until told to stop: ("prepare", Cell), then ("clips", start time),
    optionally ("phases", start time), and ("stream", start time), each answered with its
    Result; ("stop",)."""
    import torch

    torch.set_num_threads(1)
    decoders: dict = {}
    cell, reader = None, None
    while True:
        msg = commands.get()
        if msg[0] == "stop":
            break
        result = Result()
        if msg[0] == "prepare":
            if reader is not None:  # a cell whose phases were not all run
                reader.close()
            cell = msg[1]
            try:
                reader = _prepare(decoders, device, cell)
            except Exception as exc:  # noqa: BLE001 - reported as the cell's error
                reader, result.error = None, _short(exc)
        elif reader is None:
            result.error = "not prepared"
        else:
            phase = {"clips": _clips, "phases": _phases, "stream": _stream}[msg[0]]
            try:
                phase(decoders[cell.backend], cell, reader, msg[1], result, device)
            except Exception as exc:  # noqa: BLE001
                result.error = _short(exc)
            if msg[0] == "stream" or result.error:
                reader.close()
                reader = None
        replies.put((name, msg[0], result))


def _prepare(decoders: dict, device: str, cell: Cell):
    from pipeline.media.decode import FrameDecoder, check_backend, parse_device
    from pipeline.media.probe import probe

    check_backend(cell.backend, parse_device(device), probe(cell.clips[0]).codec)
    decoder = decoders.get(cell.backend)
    if decoder is None:
        decoder = decoders[cell.backend] = FrameDecoder(device, backend=cell.backend)
    decoder.decode(cell.clips[-1], cell.frames)  # builds what the backend keeps
    reader = decoder.open(cell.stream, cell.frames)
    try:
        reader.read(cell.frames)  # where a backend makes the stream's decoder: not timed
    except BaseException:
        reader.close()
        raise
    _sync(device)
    return reader


def _clips(decoder, cell: Cell, reader, start: float, result: Result, device: str) -> None:
    sleep_until(start)
    t0 = now()
    for path in cell.clips:
        frames = decoder.decode(path, cell.frames)
        result.clips += 1
        result.clip_frames += frames.shape[0]
    _sync(device)
    result.clips_s = (t0, now())


def _phases(decoder, cell: Cell, reader, start: float, result: Result, device: str) -> None:
    from pipeline.bench.decode_phases import profile_clips

    sleep_until(start)
    result.phases = profile_clips(decoder, cell.clips, cell.frames, cell.size, device)


def _stream(decoder, cell: Cell, reader, start: float, result: Result, device: str) -> None:
    sleep_until(start)
    t0 = now()
    for _ in range(cell.stream_reads):
        result.stream_frames += reader.read(cell.frames).shape[0]
    _sync(device)
    result.stream_s = (t0, now())


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())[:240]
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({Path(last[0].filename).name}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {text}{where}"
