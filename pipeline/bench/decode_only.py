"""Decode alone: how fast each backend turns requests into frames, per codec, frame size and
number of worker processes per GPU, on the same clips in one run, so that decode capacity can be
set against the model's rate on the same machine (`benchmark.py --model-only`).

    python benchmark.py --decode-only [--backends pyav,dali-gpu,...] [--codecs h264,hevc,vp9,av1]
        [--sizes 256x256,720x1280] [--workers 1,2,4] [--gpus all|0,1|none] [--frames 8]
        [--clips 24] [--clip-frames N] [--stream-reads 12] [--phases] [--out DIR]

Each cell runs `workers` real processes per GPU (one per decode-step entry, as the pipeline
does; on the CPU, `workers` processes; bench/decode_worker.py). Each first prepares: decodes one
clip, opens a long clip of the same codec and size as a stream and reads its first `--frames`
(making the stream's decoder). Then, from one start time, each decodes `--clips` short clips of
`--frames` frames as separate requests; then, from a second start time, each reads
`--stream-reads` times `--frames` further frames of its stream. Reported per cell:

  clips/s        clip requests decoded per second by all the cell's workers together (from the
                 first worker's start to the last one's end), and per GPU
  frames/s       frames of those clips per second
  stream fr/s    frames per second read by all the workers together through decoders already
                 made and open: the reads after the first, so no set-up of any kind
  setup ms       per clip request, what a worker spent beyond decoding its frames at the stream
                 rate (making or pointing its decoder, demuxing, the hand-over):
                 workers / clips/s - frames / (stream fr/s / workers), in ms; '-' (empty in
                 decode.csv, null in decode.json) where that comes out negative or under 5% of
                 a request's time: the two passes' timing noise, not a set-up (few clips)

With --phases each worker then decodes its clips once more, timing each clip's phases (probe,
decoder set-up, decode, copy out of the decoder, colour conversion, the worker's rows written into
a slot: bench/decode_phases.py), synchronising the device at every phase boundary in that pass
only; a second table gives each phase's mean, p90 and share per clip request (OUT/phases.csv).

Writes OUT/decode.csv and OUT/decode.json after every cell (a run cut short keeps the cells it
finished) and prints the table last. Backends default to every one that can run here, the GPU
ones first: on GPUs PyNvVideoCodec and DALI on NVDEC, then PyAV (it decodes on the CPU and copies
the frames to the GPU: the reference to beat) and DALI's CPU decoder; on the CPU the last two.
A backend that cannot decode a codec skips that cell.
"""
from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import signal
import sys
import time
from pathlib import Path

from pipeline.bench import decode_phases
from pipeline.bench.decode_args import (
    AUTO_ORDER,
    DERIVED,
    backends_for,
    build_parser,
    check_args,
)
from pipeline.bench.decode_worker import Cell, clip_set, worker_main
from pipeline.clock import now
from pipeline.errors import ConfigError
from pipeline.folders import make_folder, remove_empty

START_S = 600.0  # worker start-up (imports) and a cell's preparation, on a loaded machine
COLUMNS = ("backend", "codec", "size", "devices", "workers_per_device", "clips_per_s",
           "clips_per_s_per_device", "frames_per_s", "stream_frames_per_s", "setup_ms_per_clip",
           "error")
__all__ = ["AUTO_ORDER", "COLUMNS", "backends_for", "main", "summarise", "table"]
# A set-up smaller than this share of a clip request's time is not told apart from the timing
# noise of two separate passes (and with few clips the difference can come out negative).
SETUP_NOISE = 0.05
SETUP_NOTE = ("setup ms: per clip request, the time beyond decoding its frames at the open "
              "stream's rate; '-' where that is negative or under "
              f"{SETUP_NOISE:.0%} of a request's time: within timing noise, not a measurement")


def parse_args(argv):
    """The flags, checked (decode_args.py): ConfigError names the first bad one."""
    args = build_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    check_args(args)
    return args


class WorkersLost(RuntimeError):
    """Worker processes that died or stopped answering: the run cannot go on."""


class Pool:
    """Worker processes, started once for the whole grid: `per_device` on each device."""

    def __init__(self, devs: list[str], per_device: int, phases: bool = False):
        ctx = mp.get_context("spawn")
        # the passes of a cell, in order; the profiled one after the clips/s pass it would slow
        self.passes = ("clips", "phases", "stream") if phases else ("clips", "stream")
        self.replies = ctx.Queue()
        self.workers = []  # (name, device, commands, process)
        for k in range(per_device):
            for dev in devs:
                name = f"{dev}#{k}"
                commands = ctx.Queue()
                proc = ctx.Process(target=worker_main, args=(dev, commands, self.replies, name),
                                   name=f"decode-bench {name}", daemon=True)
                proc.start()
                self.workers.append((name, dev, commands, proc))

    def cell(self, cell_for, per_device: int, n_devices: int) -> dict:
        """Run one cell on the first per_device workers of each device: prepare, then the clip
        phase, the profiled one (--phases) and the stream phase, each from a start time shared
        by all; results by worker."""
        active = self.workers[:per_device * n_devices]
        for name, dev, commands, _ in active:
            commands.put(("prepare", cell_for(name)))
        results = self._collect(active, "prepare")
        for phase in self.passes:
            if any(r.error for r in results.values()):
                break
            start = now() + 0.2
            for _, _, commands, _ in active:
                commands.put((phase, start))
            for name, r in self._collect(active, phase).items():
                _merge(results[name], r)
        return results

    def _collect(self, active, kind: str) -> dict:
        out, deadline = {}, time.monotonic() + START_S
        while len(out) < len(active):
            try:
                name, got, result = self.replies.get(timeout=5.0)
            except Exception:  # noqa: BLE001 - queue.Empty: check the workers are alive
                dead = [n for n, _, _, p in active if not p.is_alive()]
                if dead or time.monotonic() > deadline:
                    raise WorkersLost(f"decode workers {dead or 'all'} did not answer")
                continue
            if got == kind:
                out[name] = result
        return out

    def close(self) -> None:
        for _, _, commands, _ in self.workers:
            commands.put(("stop",))
        for _, _, _, proc in self.workers:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)


def _merge(into, phase) -> None:
    """A phase's result into the cell's (each phase fills in its own fields)."""
    for key, value in vars(phase).items():
        if value:
            setattr(into, key, value)


def summarise(results: dict, frames: int, workers: int, n_devices: int) -> dict:
    errors = sorted({r.error for r in results.values() if r.error})
    if errors:
        return {"error": errors[0]}
    clips = sum(r.clips for r in results.values())
    clip_frames = sum(r.clip_frames for r in results.values())
    wall = max(r.clips_s[1] for r in results.values()) - min(r.clips_s[0] for r in
                                                            results.values())
    stream_wall = max(r.stream_s[1] for r in results.values()) - min(r.stream_s[0] for r in
                                                                    results.values())
    stream_rate = sum(r.stream_frames for r in results.values()) / stream_wall
    n = workers * n_devices
    clip_rate = clips / wall
    per_request = n / clip_rate  # one worker's time per clip request
    setup = per_request - frames / (stream_rate / n)
    return {"clips_per_s": clip_rate, "clips_per_s_per_device": clip_rate / n_devices,
            "frames_per_s": clip_frames / wall, "stream_frames_per_s": stream_rate,
            "setup_ms_per_clip": 1000 * setup if setup >= SETUP_NOISE * per_request else None,
            "error": ""}


def main(argv=None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        out = Path(args.out or f"logs/decode-{time.strftime('%y%m%d_%H%M%S')}")
        made = make_folder("--out", out)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows: list[dict] = []
    try:
        return _run(args, out, rows)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WorkersLost as exc:
        print(f"error: {exc}" + (f"; the cells measured are in {out}" if rows else ""),
              file=sys.stderr)
        return 1
    finally:
        if not rows:  # nothing measured: no empty folder left behind
            remove_empty(made)


def _run(args, out: Path, rows: list[dict]) -> int:
    from pipeline.media.backends import backend_class

    devs, backends = args.devices, args.backend_list
    clip_len = args.clip_frames or args.frames
    try:
        sets = {(c, s): clip_set(Path(args.cache), c, s, clip_len, args.distinct,
                                 args.frames * (args.stream_reads + 3))
                for c in args.codec_list for s in args.size_list}
    except OSError as exc:
        raise ConfigError("--cache", f"cannot write the clips under '{args.cache}': "
                                     f"{exc.strerror or exc}") from None
    phase_rows = []
    pool = Pool(devs, max(args.worker_list), phases=args.phases)
    # `timeout` ends a run with SIGTERM: exit through the finally below, stopping the workers
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        for backend in backends:
            for (codec, size), (clips, stream) in sets.items():
                if codec not in backend_class(backend).codecs:
                    continue  # e.g. DALI's CPU decoder reads VP8/VP9 only
                for w in args.worker_list:
                    def cell_for(name):
                        rank = [n for n, _, _, _ in pool.workers].index(name)
                        order = [clips[(rank + i) % len(clips)] for i in range(args.clips)]
                        return Cell(backend, codec, size, order, args.frames, stream,
                                    args.stream_reads)

                    row = {"backend": backend, "codec": codec, "size": f"{size[0]}x{size[1]}",
                           "devices": ",".join(devs), "workers_per_device": w}
                    results = pool.cell(cell_for, w, len(devs))
                    row.update(summarise(results, args.frames, w, len(devs)))
                    rows.append(row)
                    if args.phases and not row["error"]:
                        cell = {k: row[k] for k in decode_phases.COLUMNS if k in row}
                        phase_rows += [{**cell, **r} for r in decode_phases.summarise(results)]
                    _write(out, rows, args, devs, phase_rows if args.phases else None)
                    print(_line(row), file=sys.stderr, flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        pool.close()
    print(table(rows))
    print(SETUP_NOTE)
    if args.phases:
        print("\n" + decode_phases.table(phase_rows))
    print(f"\n{out}/decode.csv, decode.json" + (", phases.csv" if args.phases else ""))
    return 0


def _write(out: Path, rows: list[dict], args, devs, phase_rows: list[dict] | None) -> None:
    """Both files with every row so far, each replaced whole (never left half written); with
    --phases also phases.csv, and the phase rows in decode.json."""
    with open(out / "decode.csv.part", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in COLUMNS} for r in rows)
    os.replace(out / "decode.csv.part", out / "decode.csv")
    settings = {k: v for k, v in vars(args).items() if k not in DERIVED}
    data = {"settings": settings, "devices": devs, "rows": rows}
    if phase_rows is not None:
        data.update(phases=phase_rows, phases_note=decode_phases.NOTE)
        decode_phases.write_csv(out, phase_rows)
    (out / "decode.json.part").write_text(json.dumps(data, indent=1))
    os.replace(out / "decode.json.part", out / "decode.json")


def _line(r: dict) -> str:
    if r.get("error"):
        return f"{r['backend']:>15} {r['codec']:>5} {r['size']:>9} w{r['workers_per_device']}: {r['error']}"
    return (f"{r['backend']:>15} {r['codec']:>5} {r['size']:>9} w{r['workers_per_device']}: "
            f"{r['clips_per_s']:8.1f} clips/s {r['stream_frames_per_s']:8.1f} stream fr/s "
            f"setup {_setup(r, 7)} ms")


def table(rows: list[dict]) -> str:
    head = (f"{'backend':>15} {'codec':>5} {'size':>9} {'w/dev':>5} {'clips/s':>9} "
            f"{'per dev':>8} {'frames/s':>9} {'stream fr/s':>11} {'setup ms':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.get("error"):
            lines.append(f"{r['backend']:>15} {r['codec']:>5} {r['size']:>9} "
                         f"{r['workers_per_device']:>5}  {r['error'][:70]}")
            continue
        lines.append(f"{r['backend']:>15} {r['codec']:>5} {r['size']:>9} "
                     f"{r['workers_per_device']:>5} {r['clips_per_s']:9.1f} "
                     f"{r['clips_per_s_per_device']:8.1f} {r['frames_per_s']:9.1f} "
                     f"{r['stream_frames_per_s']:11.1f} {_setup(r, 9)}")
    return "\n".join(lines)


def _setup(r: dict, width: int) -> str:
    """The setup column: '-' where it is not measurable (SETUP_NOTE)."""
    value = r["setup_ms_per_clip"]
    return f"{'-':>{width}}" if value is None else f"{value:{width}.2f}"


if __name__ == "__main__":
    sys.exit(main())
