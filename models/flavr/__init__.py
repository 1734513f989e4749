"""FLAVR frame interpolation: the network (model.py), its 4-frame windows (windows.py) and its
checkpoint files (checkpoint.py)."""
from models.flavr.model import FLAVR, STAGES, FLAVRConfig, padded_size  # noqa: F401
