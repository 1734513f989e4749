"""Video in and out: decoding (NVDEC through PyNvVideoCodec or DALI; DALI or PyAV on the CPU),
stream probing and colour, encoding, and synthetic test clips."""
