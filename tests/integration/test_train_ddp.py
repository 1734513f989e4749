"""Two real processes under torchrun train one model with DDP over gloo, and leave nothing behind."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import build

REPO = Path(__file__).resolve().parents[2]


def _entries(folder: str) -> set[str]:
    return set(os.listdir(folder)) if os.path.isdir(folder) else set()


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(pid))
        except (OSError, ValueError):
            pass
    return pids


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return build(tmp_path_factory.mktemp("data"))


def test_two_gloo_processes_train_together_and_clean_up(dataset, tmp_path):
    out = tmp_path / "run"
    shm, tmp = _entries("/dev/shm"), _entries("/tmp")
    private_tmp = tmp_path / "tmp"  # torchrun keeps its logs in a temporary folder: ours
    private_tmp.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(private_tmp)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pipeline.train", "--out", str(out),
           "--set", f"data.root={dataset}", "--set", "data.val_clips=[street.webm]",
           "--set", "data.crop=32", "--set", "data.photo_size=[80,112]", "--set", "val.crop=32",
           "--set", "val.windows_per_clip=1", "--set", "train.device=cpu", "--set", "train.steps=2",
           "--set", "train.batch_size=1", "--set", "train.precision=fp32",
           "--set", "train.compile=false", "--set", "train.channels_last=false",
           "--set", "train.log_every=1", "--set", "optim.warmup_steps=1"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "on 2 x cpu" in proc.stdout
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2 and len(state["ranks"]) == 2  # both ranks' sampler states
    seeds = {tuple(r["numpy"][1][:4]) for r in state["ranks"]}
    assert len(seeds) == 2  # each rank its own random stream
    rows = (out / "train.csv").read_text().splitlines()
    assert len(rows) == 3  # header + steps 1..2, written once (rank 0 only)
    assert (out / "val.csv").exists()
    assert _processes_mentioning(str(out)) == []
    # Other programs on the machine may use /tmp and /dev/shm meanwhile: look only for what torch
    # (shared tensors) and torchrun (its log folder) would leave. torchrun starts the ranks as
    # plain subprocesses, so multiprocessing's files (pymp-*, sem.mp-*) are never ours.
    assert not [e for e in _entries("/dev/shm") - shm if e.startswith("torch_")]
    assert not [e for e in _entries("/tmp") - tmp if e.startswith("torchelastic_")]
