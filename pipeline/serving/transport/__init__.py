"""How work moves between processes: slot pools of tensors with inter-process events (slots.py),
queues and their placement (queues.py), and the small items that travel through them (items.py)."""
