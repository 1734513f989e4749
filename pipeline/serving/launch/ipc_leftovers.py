"""Files that CUDA inter-process sharing leaves in /dev/shm when a process ends without tearing
down its CUDA context (children leave with os._exit, and a killed child cannot clean up):

    torch_<pid>_<n>_<k>       torch's reference counters of GPU blocks shared over CUDA IPC
    cuda.shm.<n>.<pid hex>.<k>  the driver's memory behind inter-process CUDA events

Both carry the owner's pid, so once a child has exited the launcher removes exactly its own: no
live process can still use them. (Seen on H200 hosts: a test session's CUDA children left 18.)
"""
from __future__ import annotations

from pathlib import Path

SHM = Path("/dev/shm")


def ipc_leftovers(pid: int, root: Path = SHM) -> list[Path]:
    """The CUDA IPC files of process `pid` in `root`."""
    torch_files = root.glob(f"torch_{pid}_*")
    driver_files = (p for p in root.glob("cuda.shm.*")
                    if p.name.split(".")[3:4] == [f"{pid:x}"])
    return sorted(set(torch_files) | set(driver_files))


def remove_ipc_leftovers(pids, root: Path = SHM) -> list[Path]:
    """Remove the CUDA IPC files of the exited processes `pids`; return what was removed."""
    removed = []
    for pid in pids:
        for path in ipc_leftovers(pid, root):
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:  # gone meanwhile
                pass
    return removed
