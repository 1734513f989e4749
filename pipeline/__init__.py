"""Serving pipeline: config, processes, queues, GPU hand-off, decode, runners, sink, timing, report."""
