"""R(2+1)D-18 action recognition, the RnB paper's workload: the network (model.py), its work
count (flops.py), its weight files (checkpoint.py) and its served form (served.py)."""
from models.r2plus1d.model import STAGES, R2Plus1D, R2Plus1DConfig  # noqa: F401
