"""`flavr-model-bench`: the model alone (pipeline/bench/model_bench.py); also
`python benchmark.py --model-only`."""
import sys

from pipeline.bench.model_bench import main

if __name__ == "__main__":
    sys.exit(main())
