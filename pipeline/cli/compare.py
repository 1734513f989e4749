"""`flavr-compare`: the command-line entry of pipeline/analysis/compare.py."""
import sys

from pipeline.analysis.compare import main

if __name__ == "__main__":
    sys.exit(main())
