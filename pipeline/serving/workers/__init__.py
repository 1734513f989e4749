"""The bodies of a run's child processes: the client, decode workers, model runners and the sink,
and what they share (child.py)."""
