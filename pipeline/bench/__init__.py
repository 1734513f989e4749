"""The model alone, without the pipeline: timing, accuracy of fast modes, profiles."""
