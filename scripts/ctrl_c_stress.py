"""Ctrl-C at random moments of a run's life, many times: each run must stop cleanly.

    python scripts/ctrl_c_stress.py                     # 16 runs, Ctrl-C 0-9 s after start
    python scripts/ctrl_c_stress.py -n 16 --from 5.8 --to 7.8 --seed 2

Each run is the fault tests' long CPU benchmark (decode + a real FLAVR runner on 16x16 clips,
one warm-up and 400 measured requests at -mi 200), started in a process group of its own. Once
its processes exist, the script waits a random delay in [--from, --to] seconds and sends SIGINT
to the whole group, as a terminal's Ctrl-C does; the delays of one machine's start-up, warm-up
and first measured requests are covered by the default range (on two cores: processes at ~0 s,
warm-up done at ~6-7 s). A run is clean when it exits non-zero saying "interrupted", prints no
traceback (children included), writes logs that account for every request with a reason, and
leaves no child running. The last line is "N/M clean"; the exit code is the number of runs that
were not.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from run_helpers import (  # noqa: E402 - the tests' helpers, found through the path above
    assert_logs_account_for_everything,
    children_alive,
    long_benchmark,
    wait_for,
)

REQUESTS = 401  # long_benchmark's warm-up and measured requests


def one_run(delay_s: float) -> tuple[str, list[str]]:
    """Start, interrupt after `delay_s`, check; returns (what happened, problems)."""
    tmp = Path(tempfile.mkdtemp(prefix="ctrl-c-stress-"))
    try:
        bench, run_dir, table = long_benchmark(tmp, serving=False)
        time.sleep(delay_s)
        os.killpg(bench.pid, signal.SIGINT)
        sent = time.monotonic()
        code = bench.wait(timeout=25)
        took = time.monotonic() - sent
        if code is None:
            bench.kill_group()
            return f"still running {took:.0f} s after Ctrl-C", ["did not stop"]
        problems = []
        if code == 0:
            problems.append("exit code 0")
        if "interrupted" not in bench.err:
            problems.append("no 'interrupted' message")
        if "Traceback" in bench.err:
            problems.append("a traceback:\n" + bench.err[-3000:])
        statuses: dict[str, int] = {}
        try:
            for row in assert_logs_account_for_everything(run_dir, REQUESTS):
                statuses[row["status"]] = statuses.get(row["status"], 0) + 1
        except AssertionError as exc:
            problems.append(f"logs: {exc}")
        if wait_for(lambda: not children_alive(table), 5, "the children to exit") is not True:
            problems.append("children still running")
        return f"exit {code}, stopped in {took:.2f} s, requests {statuses}", problems
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=16, help="runs (16)")
    ap.add_argument("--from", dest="lo", type=float, default=0.0,
                    help="shortest delay, s after the processes exist (0)")
    ap.add_argument("--to", dest="hi", type=float, default=9.0, help="longest delay, s (9)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the delays (1)")
    args = ap.parse_args(argv)
    if args.n < 1 or not 0 <= args.lo <= args.hi:
        ap.error("need -n >= 1 and 0 <= --from <= --to")
    rng = random.Random(args.seed)
    unclean = 0
    for i in range(args.n):
        delay = rng.uniform(args.lo, args.hi)
        what, problems = one_run(delay)
        unclean += bool(problems)
        print(f"{i}: Ctrl-C {delay:.2f} s in: {what}: {'clean' if not problems else problems}",
              flush=True)
    print(f"{args.n - unclean}/{args.n} clean")
    return unclean


if __name__ == "__main__":
    sys.exit(main())
