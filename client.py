"""The load generator, as a command: print the request schedule a benchmark run would send.

    python client.py -mi 50 -n 20 [--seed 0]

Requests arrive as a Poisson process (exponential gaps of mean `-mi` ms, from a seeded generator,
so a run can be repeated exactly) or all at once (`-mi 0`). The benchmark's client process
(pipeline/serving/workers/client.py) sends exactly this schedule; latency counts from each
request's scheduled time. The schedule itself lives in pipeline/serving/loadgen.py.
"""
from __future__ import annotations

import argparse
import sys

from pipeline.analysis.statistics import event_rate
from pipeline.config import RunSettings, add_setting_flags, check_flag_value
from pipeline.serving.loadgen import poisson_offsets, run_schedule  # noqa: F401  (re-exported)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    # -mi and --seed as benchmark.py declares them (pipeline/config/schema.py), bounds included.
    add_setting_flags(p, only=("mean_interval_ms", "seed"))
    p.add_argument("-n", "--requests", type=int, default=20,
                   help="how many requests (as many as benchmark.py's -v allows)")
    args = p.parse_args(argv)
    try:
        check_flag_value(args.requests, RunSettings, "videos", "-n/--requests")
        offsets = poisson_offsets(args.requests, args.mean_interval_ms, args.seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for i, t in enumerate(offsets):
        print(f"{i:6d}  {t * 1000:10.1f} ms")
    rate = event_rate(offsets)  # as a run's report gives its offered rate
    if rate is not None:
        print(f"realised rate {rate:.2f} requests/s (nominal {1000 / args.mean_interval_ms:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
