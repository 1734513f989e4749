"""Models the serving pipeline can run: the interface (base.py), weight files (weights.py), one
folder per model, and the registry that names them (registry.py)."""
