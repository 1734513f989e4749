"""One benchmark run: its plan, its processes (workers/), how tensors and items move between them
(transport/), and how the processes are started (launch/)."""
