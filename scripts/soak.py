"""Soak test: thousands of small requests through real pipeline processes on the CPU, watching
for leaks: the main process's memory and open files before and after, each child's memory early
in the run and at its end.

    python scripts/soak.py                 # 5000 requests: decode + a 0.5 ms TEST sleep step
    python scripts/soak.py -n 300 --json soak.json
    python scripts/soak.py --repeat 3      # the same run 3 times in one process: what stays

The pipeline is decode (real 16x16 clips) + the `sleep` TEST step, so the requests are cheap
and the run measures the plumbing (queues, slot pools, records), not the model. Children's
memory is read from /proc/<pid>/status (VmRSS) of the pids in the run's processes.json, sampled
while the run goes; "early" is the first sample once a quarter of the requests are done, "end" the
last sample before the last request finished.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def rss_mib(pid: int | str = "self") -> float | None:
    """Resident memory of a process in MiB (VmRSS), None once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def settled_fds(start: int, wait_s: float = 2.0) -> int:
    """This process's open fds once the run's teardown has let go, waiting at most wait_s for the
    count to come back to `start`. Counted at once, the suite now and then saw 8 more than at
    the start (in the fault tests' module, with and without the latest transport changes):
    pipes and files a run's teardown closes a moment after run() returns. A leak stays open
    however long one waits."""
    deadline = time.monotonic() + wait_s
    n = open_fds()
    while n > start and time.monotonic() < deadline:
        time.sleep(0.05)
        n = open_fds()
    return n


class _Sampler(threading.Thread):
    """Every `period_s`: each child's RSS (pids from processes.json) and this process's fds."""

    def __init__(self, logs_root: Path, period_s: float):
        super().__init__(daemon=True)
        self.logs_root, self.period_s = logs_root, period_s
        self.samples: list[tuple[float, dict]] = []  # (clock.now(), {name: rss})
        self.table: dict | None = None
        self.done = threading.Event()

    def run(self) -> None:
        from pipeline.clock import now

        while not self.done.is_set():
            if self.table is None:
                found = sorted(self.logs_root.glob("*/processes.json"))
                if found:
                    self.table = json.loads(found[-1].read_text())
            if self.table is not None:
                sample = {name: rss_mib(p["pid"]) for name, p in self.table.items()
                          if name != "main"}
                self.samples.append((now(), sample))
            self.done.wait(self.period_s)


def soak(n: int = 5000, sleep_ms: float = 0.5, size: int = 16, queue_size: int = 64,
         logs_root: str | None = None, video_cache: str | None = None,
         period_s: float = 0.2) -> dict:
    """Run n requests and return the figures (see module doc)."""
    from pipeline.config import config_from_dict
    from pipeline.serving.orchestrator import RunOptions, run

    cfg = config_from_dict({
        "name": "soak", "device": "cpu",
        "videos": {"synthetic": {"count": 4, "width": size, "height": size, "frames": 4,
                                 "fps": 24, "codec": "vp9", "seed": 0}},
        "frames_per_request": 4,
        "model": {"factor": 2, "precision": "fp32", "resolution": [size, size]},
        "pipeline": [{"name": "decode", "kind": "decode", "gpus": [0]},
                     {"name": "sleep", "kind": "sleep", "sleep_ms": sleep_ms, "gpus": [0]}]})
    tmp = None
    if logs_root is None or video_cache is None:
        tmp = tempfile.TemporaryDirectory(prefix="soak-")
    logs = Path(logs_root or Path(tmp.name) / "logs")
    opts = RunOptions(mean_interval_ms=0, videos=n, warmup=0, queue_size=queue_size,
                      on_full="block", logs_root=str(logs), progress=False, cpu_threads=1,
                      video_cache=video_cache or str(Path(tmp.name) / "videos"),
                      stall_timeout_s=60)
    # What a run imports and starts in this process once (torch, multiprocessing's resource
    # tracker) and the clips, made before the start figures so that they are not the first
    # import or the clip encoder.
    from multiprocessing import resource_tracker

    import models.flavr.model  # noqa: F401
    import pipeline.analysis.report  # noqa: F401
    import pipeline.serving.runlog  # noqa: F401
    import pipeline.serving.workers.client  # noqa: F401
    from pipeline.config import resolve_videos

    resource_tracker.ensure_running()
    resolve_videos(cfg, synthetic_root=opts.video_cache)
    gc.collect()
    main_rss_start, fds_start = rss_mib(), open_fds()
    sampler = _Sampler(logs, period_s)
    sampler.start()
    t_start = time.monotonic()
    try:
        result = run(cfg, opts)
    finally:
        sampler.done.set()
        sampler.join()
    elapsed = time.monotonic() - t_start
    done = [r["done_s"] for r in result.rows if r.get("done_s") is not None]  # relative to t0
    del result.rows[:]  # only the counts are kept; the rows are in requests.csv
    gc.collect()
    main_rss_end, fds_end = rss_mib(), settled_fds(fds_start)

    counts = result.summary["counts"]
    t0 = result.summary["run"]["t0"]
    serve_end = t0 + max(done) if done else t0
    # "Early" is once a quarter of the requests are done: the first few hundred requests raise
    # a child's memory once (allocator thresholds, lazily built codec and queue state) by ~20 MiB,
    # which is not a leak and would read as one if measured from the first samples.
    done.sort()
    early_t = t0 + (done[len(done) // 4] if done else 0.0)
    serving = [(t, s) for t, s in sampler.samples if t0 <= t <= serve_end]
    early = next((s for t, s in serving if t >= early_t), serving[0][1] if serving else {})
    end = serving[-1][1] if serving else {}
    children = {}
    for name in (sampler.table or {}):
        if name == "main":
            continue
        peak = max((s.get(name) or 0.0) for _, s in serving) if serving else None
        children[name] = {"rss_early_mib": early.get(name), "rss_end_mib": end.get(name),
                          "rss_peak_mib": peak}
    figures = {
        "requests": n, "ok": counts["ok"], "error": counts["error"],
        "dropped": counts["dropped"], "unfinished": counts["unfinished"],
        "run_error": result.error, "elapsed_s": elapsed,
        "serving_s": serve_end - t0, "requests_per_s": (len(done) / (serve_end - t0))
        if serve_end > t0 else None,
        "main": {"rss_start_mib": main_rss_start, "rss_end_mib": main_rss_end,
                 "fds_start": fds_start, "fds_end": fds_end},
        "children": children, "samples": len(serving), "run_dir": str(result.run_dir),
    }
    if tmp is not None:
        tmp.cleanup()
        figures["run_dir"] = None
    return figures


def format_table(f: dict) -> str:
    def mib(x):
        return "-" if x is None else f"{x:8.1f}"

    lines = [f"soak: {f['requests']} requests in {f['elapsed_s']:.1f} s "
             f"({f['serving_s']:.1f} s serving, {f['requests_per_s'] or 0:.0f} requests/s); "
             f"ok {f['ok']}, error {f['error']}, dropped {f['dropped']}, "
             f"unfinished {f['unfinished']}" + (f"; run error: {f['run_error']}"
                                                if f["run_error"] else ""),
             "",
             f"{'process':<18}{'RSS start':>10}{'RSS end':>10}{'growth':>10}{'peak':>10}   MiB",
             ]
    m = f["main"]
    lines.append(f"{'main':<18}{mib(m['rss_start_mib']):>10}{mib(m['rss_end_mib']):>10}"
                 f"{mib(m['rss_end_mib'] - m['rss_start_mib']):>10}{'':>10}")
    for name, c in f["children"].items():
        growth = (c["rss_end_mib"] - c["rss_early_mib"]
                  if c["rss_end_mib"] is not None and c["rss_early_mib"] is not None else None)
        lines.append(f"{name:<18}{mib(c['rss_early_mib']):>10}{mib(c['rss_end_mib']):>10}"
                     f"{mib(growth):>10}{mib(c['rss_peak_mib']):>10}")
    lines += ["", f"main process open fds: {m['fds_start']} before, {m['fds_end']} after",
              f"(children: start = once a quarter of the requests were done, end = the last sample before the last "
              f"request finished; {f['samples']} samples)"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--requests", type=int, default=5000)
    p.add_argument("--sleep-ms", type=float, default=0.5, help="service time of the TEST step")
    p.add_argument("--size", type=int, default=16, help="clip width and height")
    p.add_argument("-qs", "--queue-size", type=int, default=64)
    p.add_argument("--logs", default=None, help="keep the run's logs here (default: a temp dir)")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    p.add_argument("--repeat", type=int, default=1,
                   help="run it this many times in this process; a first run leaves allocator "
                        "high-water marks, a leak keeps growing run after run")
    args = p.parse_args(argv)
    runs, ok = [], True
    for i in range(args.repeat):
        figures = soak(args.requests, args.sleep_ms, args.size, args.queue_size, args.logs,
                       video_cache=str(REPO / "videos" / "synthetic") if args.logs else None)
        runs.append(figures)
        if i == 0:
            print(format_table(figures))
        else:
            m = figures["main"]
            print(f"run {i + 1}: ok {figures['ok']}; main RSS {m['rss_start_mib']:.1f} -> "
                  f"{m['rss_end_mib']:.1f} MiB; fds {m['fds_start']} -> {m['fds_end']}")
        ok = ok and figures["ok"] == args.requests and \
            figures["main"]["fds_end"] <= figures["main"]["fds_start"]
    if args.json:
        Path(args.json).write_text(json.dumps(runs if args.repeat > 1 else runs[0], indent=2)
                                   + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
