"""`flavr-synthetic`: write a synthetic test clip (pipeline/media/synthetic.py)."""
import sys

from pipeline.media.synthetic import main

if __name__ == "__main__":
    sys.exit(main())
