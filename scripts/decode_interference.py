"""How much does decoding on the same GPU slow the model down?

One process runs FLAVR (bf16, channels-last, eager, the runner's high-priority stream) on a
request's worth of 720p windows, back to back, timing each call with CUDA events. Beside it,
K decode processes loop over a 720p H.264 clip on the same GPU, in one of these modes:

    none     no decode process (the model alone)
    full     what a decode worker does: NVDEC through DALI, colour correction to float RGB,
             window gather, copy into a slot-sized buffer, stream sync
    raw      NVDEC through DALI only (the decoder's own call): uint8 RGB into a torch tensor, stream sync
    convert  no decode: only the float conversion, colour correction and window gather of
             'full', on a uint8 tensor already on the GPU (our kernels alone)

It prints, per mode, the model's time per call (mean and median) and its slowdown against
'none', and how many clips per second the decode processes got through meanwhile.

    python scripts/decode_interference.py [--gpu 0] [--workers 2] [--rate 20] [--modes ...]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def _decode_loop(mode: str, clip: str, device: str, frames: int, period: float, ready, stop,
                 counter) -> None:
    from models.flavr.windows import make_windows
    from pipeline.media.backends.dali import DaliGpuBackend, dali_rgb
    from pipeline.media.decode import FrameDecoder
    from pipeline.media.probe import probe

    dev = torch.device(device)
    torch.cuda.set_device(dev)
    decoder = FrameDecoder(device)
    nvdec = DaliGpuBackend(dev)
    info = probe(clip)
    stream = torch.cuda.current_stream(dev)
    slot = torch.empty((frames - 1, 3, 4, info.height, info.width), device=dev)
    raw = torch.randint(0, 256, (frames, info.height, info.width, 3), dtype=torch.uint8, device=dev)

    def once():
        if mode == "full":
            slot.copy_(make_windows(decoder.decode(clip, frames)))
        elif mode == "raw":
            nvdec.raw(info, 0, frames)
        else:  # convert: what the worker does to DALI's output
            slot.copy_(make_windows(dali_rgb(raw, info, DaliGpuBackend.chroma_offset)))
        stream.synchronize()

    once()
    ready.set()
    due = time.perf_counter()
    while not stop.is_set():
        once()
        with counter.get_lock():
            counter.value += 1
        due += period  # period 0: as fast as it goes
        time.sleep(max(0.0, due - time.perf_counter()))


def _model_times(device: str, height: int, width: int, rows: int, iters: int) -> list[float]:
    from models.flavr.checkpoint import build_model

    dev = torch.device(device)
    torch.backends.cudnn.benchmark = True
    model = build_model(factor=2, device=dev, seed=0).for_inference("bf16", channels_last=True)
    stream = torch.cuda.Stream(dev, priority=-1)
    x = torch.rand((rows, 3, 4, height, width), device=dev)
    events = []
    with torch.inference_mode(), torch.cuda.stream(stream):
        for _ in range(5):
            model(x)
        stream.synchronize()
        for _ in range(iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record(stream)
            model(x)
            b.record(stream)
            events.append((a, b))
        stream.synchronize()
    return [a.elapsed_time(b) for a, b in events]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--modes", default="none,full,raw,convert")
    ap.add_argument("--frames", type=int, default=3, help="frames decoded per clip (request)")
    ap.add_argument("--iters", type=int, default=60, help="timed model calls per mode")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="clips/s all decode processes together aim at (0: as fast as they go)")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args(argv)
    from pipeline.media.synthetic import write_clip

    device = f"cuda:{args.gpu}"
    height, width = 720, 1280
    clip = str(Path(tempfile.mkdtemp()) / "clip.mp4")
    write_clip(clip, width, height, 8, 24, "h264", seed=0)
    ctx = mp.get_context("spawn")
    rows = args.frames - 1
    results = []
    for mode in args.modes.split(","):
        stop, counter = ctx.Event(), ctx.Value("l", 0)
        procs, readies = [], []
        if mode != "none":
            for _ in range(args.workers):
                ready = ctx.Event()
                p = ctx.Process(target=_decode_loop,
                                args=(mode, clip, device, args.frames,
                                      args.workers / args.rate if args.rate else 0.0, ready,
                                      stop, counter))
                p.start()
                procs.append(p)
                readies.append(ready)
            for r in readies:
                if not r.wait(120):
                    raise SystemExit(f"{mode}: a decode process did not start")
        with counter.get_lock():
            counter.value = 0
        t0 = time.perf_counter()
        times = _model_times(device, height, width, rows, args.iters)
        wall = time.perf_counter() - t0
        decoded = counter.value
        stop.set()
        for p in procs:
            p.join(30)
        results.append({"mode": mode, "mean_ms": statistics.mean(times),
                        "median_ms": statistics.median(times),
                        "clips_per_s": decoded / wall if procs else 0.0})
    base = next((r["median_ms"] for r in results if r["mode"] == "none"), None)
    print(f"FLAVR 2x bf16 {height}x{width}, {rows} windows per call, {args.workers} decode "
          f"processes on {torch.cuda.get_device_name(args.gpu)}")
    print(f"{'mode':<8} {'mean ms':>8} {'median ms':>10} {'slowdown':>9} {'clips/s':>8}")
    for r in results:
        slow = f"{r['median_ms'] / base - 1:+.1%}" if base else "-"
        print(f"{r['mode']:<8} {r['mean_ms']:>8.2f} {r['median_ms']:>10.2f} {slow:>9} "
              f"{r['clips_per_s']:>8.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
