"""`flavr-sweep`: the command-line entry of pipeline/analysis/sweep.py."""
import sys

from pipeline.analysis.sweep import main

if __name__ == "__main__":
    sys.exit(main())
