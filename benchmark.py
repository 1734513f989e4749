"""Benchmark a placement of the serving pipeline (the command lives in pipeline/cli/benchmark.py).

    python benchmark.py -c configs/flavr-split.yaml -mi 50
    python benchmark.py --model-only [--sizes 720x1280 --batch 1,4 ...]   (the model alone)
    python benchmark.py --decode-only [--codecs h264,vp9 --workers 1,2 ...] (decode alone)
"""
import sys

from pipeline.cli.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
