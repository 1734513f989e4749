"""Hostile and broken checkpoint files for the safety tests, and a runner started on one."""
from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
from pathlib import Path

import torch


class Payload:
    """Unpickling this object runs code: it writes `marker`. Stands for any code a crafted
    checkpoint could carry."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('the payload ran')",)


def crafted_checkpoint(path: Path, marker: Path, state: dict | None = None) -> Path:
    """A torch.save file in the released FLAVR layout whose training entry carries a payload;
    with `state` (a FLAVR state dict) its weights are real, so a trusted load succeeds."""
    weights = {"module." + k: v for k, v in (state or {}).items()}
    torch.save({"state_dict": weights, "epoch": 3, "best_psnr": Payload(marker)}, path)
    return path


def broken_files(folder: Path) -> dict[str, Path]:
    """Files that are not checkpoints, by what is wrong with them."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"empty": folder / "empty.pth", "random": folder / "random.pth",
             "pickle-like": folder / "noise.pth", "text": folder / "notes.safetensors"}
    files["empty"].write_bytes(b"")
    files["random"].write_bytes(os.urandom(4096).replace(b"\x80", b"\x00").replace(b"PK", b"pk"))
    files["pickle-like"].write_bytes(b"\x80" + os.urandom(4096))
    files["text"].write_text("these are not weights\n")
    return files


def runner_fatal_message(model_cfg, timeout_s: float = 120.0) -> tuple[str, int]:
    """Start a real runner process (spawned, on the CPU) for the whole model under `model_cfg`;
    return the fatal message it sends while building its model, and its exit code."""
    from pipeline.config import StepConfig
    from pipeline.serving.transport.messages import Fatal
    from pipeline.serving.workers.child import ChildContext
    from pipeline.serving.workers.runner import RunnerSpec, runner_main

    mp = multiprocessing.get_context("spawn")
    control, setup, stop, free, inq = mp.Queue(), mp.Queue(), mp.Event(), mp.Queue(), mp.Queue()
    ctx = ChildContext("model-0", control, setup, stop, "cpu", 0, 1)
    step = StepConfig(name="model", kind="model", gpus=[0], stages=("stem", "head"))
    spec = RunnerSpec("model", step, model_cfg, 0, [(32, 32)], 3, 1, 1, inq, None, free, {})
    proc = mp.Process(target=runner_main, args=(ctx, spec), daemon=True)
    proc.start()
    try:
        while True:
            msg = control.get(timeout=timeout_s)
            if isinstance(msg, Fatal):
                break
        proc.join(timeout_s)
        return msg.message, proc.exitcode
    except queue_module.Empty:
        raise AssertionError("the runner sent no fatal message") from None
    finally:
        stop.set()
        if proc.is_alive():
            proc.kill()
            proc.join()
        for q in (control, setup, free, inq):
            q.close()
            q.join_thread()
