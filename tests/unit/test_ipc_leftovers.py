"""The launcher removes the CUDA IPC files an exited child left in /dev/shm, and only those."""
import multiprocessing as mp
import os

from pipeline.serving.launch.ipc_leftovers import ipc_leftovers, remove_ipc_leftovers


def exited_pid() -> int:
    proc = mp.get_context("spawn").Process(target=os.getpid)
    proc.start()
    proc.join(60)
    return proc.pid


def files_of(root, pid):
    names = [f"torch_{pid}_3658205410_0", f"torch_{pid}_7_1", f"cuda.shm.0.{pid:x}.1"]
    for name in names:
        (root / name).write_bytes(b"\0" * 16)
    return {root / n for n in names}


def test_an_exited_childs_files_are_removed_and_a_live_ones_kept(tmp_path):
    dead, live = exited_pid(), os.getpid()
    dead_files, live_files = files_of(tmp_path, dead), files_of(tmp_path, live)
    (tmp_path / f"torch_{dead}0_1_0").write_bytes(b"")  # another pid that starts with the same digits
    assert set(remove_ipc_leftovers([dead], tmp_path)) == dead_files
    assert not any(p.exists() for p in dead_files)
    assert all(p.exists() for p in live_files)
    assert (tmp_path / f"torch_{dead}0_1_0").exists()


def test_files_are_matched_by_the_pid_in_their_name(tmp_path):
    pid = 0x821
    files_of(tmp_path, pid)
    (tmp_path / "cuda.shm.0.8210.1").write_bytes(b"")
    assert {p.name for p in ipc_leftovers(pid, tmp_path)} == {
        "torch_2081_3658205410_0", "torch_2081_7_1", "cuda.shm.0.821.1"}
