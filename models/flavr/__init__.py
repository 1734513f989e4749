"""FLAVR frame interpolation: the network (model.py), its 4-frame windows (windows.py), its work
count (flops.py), its checkpoint files (checkpoint.py) and its served form (served.py)."""
from models.flavr.model import FLAVR, STAGES, FLAVRConfig, padded_size  # noqa: F401
