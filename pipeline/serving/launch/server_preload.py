"""Imported once by the local launcher's fork server (multiprocessing's forkserver), before it
forks any child: what every child would otherwise import afresh, at seconds of CPU each."""
import atexit
import os

import torch  # noqa: F401  (imported for the children; the server itself never touches CUDA)

_SERVER = os.getpid()


def _leave_at_once() -> None:
    # A torch-laden interpreter takes most of a second to wind down, and the server has nothing
    # to clean up: leave now, so that children, whose parent-death signal watches the server, go
    # with the main process at once. Forked children inherit this hook but never run it (they
    # leave by os._exit); the pid check keeps it to the server all the same.
    if os.getpid() == _SERVER:
        os._exit(0)


atexit.register(_leave_at_once)
