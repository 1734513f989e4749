"""FLAVR frame interpolation model and its checkpoints."""
