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
                 workers / clips/s - frames / (stream fr/s / workers), in ms

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

import argparse
import csv
import json
import multiprocessing as mp
import os
import signal
import sys
import time
from pathlib import Path

from pipeline.bench import decode_phases
from pipeline.bench.decode_worker import Cell, clip_set, worker_main
from pipeline.clock import now

START_S = 600.0  # worker start-up (imports) and a cell's preparation, on a loaded machine
COLUMNS = ("backend", "codec", "size", "devices", "workers_per_device", "clips_per_s",
           "clips_per_s_per_device", "frames_per_s", "stream_frames_per_s", "setup_ms_per_clip",
           "error")
# --backends auto runs them in this order: the GPU decoders first, so that a run cut short by a
# time limit has measured them
AUTO_ORDER = ("pynvvideocodec", "dali-gpu", "pyav", "dali-cpu")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="benchmark.py --decode-only", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="auto", help="comma list, or auto: every backend that "
                   "can run here (default)")
    p.add_argument("--codecs", default="h264,hevc,vp9,av1")
    p.add_argument("--sizes", default="256x256,720x1280", help="HxW list")
    p.add_argument("--workers", default="1,2,4", help="worker processes per GPU (or on the CPU)")
    p.add_argument("--gpus", default="all", help="all, a comma list of GPU ids, or none (CPU)")
    p.add_argument("--frames", type=int, default=8, help="frames per clip request (8, as the "
                   "shipped configs' requests)")
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
    args = p.parse_args(argv)
    for name in ("frames", "clips", "distinct", "stream_reads"):
        if not 1 <= getattr(args, name) <= 10_000:
            p.error(f"--{name.replace('_', '-')}: must be between 1 and 10,000")
    if args.clip_frames is not None and not args.frames <= args.clip_frames <= 10_000:
        p.error("--clip-frames: at least --frames, at most 10,000")
    try:
        args.size_list = [tuple(int(x) for x in s.lower().split("x")) for s in
                          args.sizes.split(",")]
        args.worker_list = [int(w) for w in args.workers.split(",")]
    except ValueError:
        p.error("--sizes takes HxW[,HxW...] and --workers N[,N...]")
    if any(len(s) != 2 or not 16 <= min(s) <= max(s) <= 8192 or s[0] % 2 or s[1] % 2
           for s in args.size_list):
        p.error("--sizes: each HxW must have even sides between 16 and 8192")
    if any(not 1 <= w <= 64 for w in args.worker_list):
        p.error("--workers: between 1 and 64 per device")
    return args


def devices(gpus: str) -> list[str]:
    if gpus == "none":
        return ["cpu"]
    import torch

    if not torch.cuda.is_available():
        return ["cpu"]
    ids = range(torch.cuda.device_count()) if gpus == "all" else [int(g) for g in gpus.split(",")]
    return [f"cuda:{g}" for g in ids]


def backends_for(asked: str, on_gpu: bool) -> list[str]:
    from pipeline.media.backends import backend_class

    names = list(AUTO_ORDER) if asked == "auto" else asked.split(",")
    out = []
    for name in names:
        cls = backend_class(name)  # ValueError for an unknown name
        if ("cuda" if on_gpu else "cpu") in cls.devices and cls.unavailable() is None:
            out.append(name)
        elif asked != "auto":
            print(f"note: backend {name} cannot run here, skipped", file=sys.stderr)
    return out


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
                    raise RuntimeError(f"decode workers {dead or 'all'} did not answer")
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
    setup = n / clip_rate - frames / (stream_rate / n)
    return {"clips_per_s": clip_rate, "clips_per_s_per_device": clip_rate / n_devices,
            "frames_per_s": clip_frames / wall, "stream_frames_per_s": stream_rate,
            "setup_ms_per_clip": 1000 * setup, "error": ""}


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    devs = devices(args.gpus)
    on_gpu = devs[0] != "cpu"
    backends = backends_for(args.backends, on_gpu)
    from pipeline.media.backends import backend_class
    from pipeline.media.encode import encoder_available

    codecs = [c for c in args.codecs.split(",") if encoder_available(c) is not None]
    out = Path(args.out or f"logs/decode-{time.strftime('%y%m%d_%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    sets = {(c, s): clip_set(Path(args.cache), c, s, args.clip_frames or args.frames,
                             args.distinct, args.frames * (args.stream_reads + 3))
            for c in codecs for s in args.size_list}
    rows, phase_rows = [], []
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
    settings = {k: v for k, v in vars(args).items() if k not in ("size_list", "worker_list")}
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
            f"setup {r['setup_ms_per_clip']:7.2f} ms")


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
                     f"{r['stream_frames_per_s']:11.1f} {r['setup_ms_per_clip']:9.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
