"""Video in and out: decoding (DALI on NVDEC or the CPU, PyAV), stream probing and colour,
encoding, and synthetic test clips."""
