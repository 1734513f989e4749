"""Training checkpoints: safetensors shards of at most 15 MiB each plus one small JSON.

A full checkpoint folder (what a run saves every N steps, at the end and on SIGTERM/Ctrl-C):
  model-KKKKK.safetensors   fp32 weights, FLAVR's own key names
  ema-KKKKK.safetensors     fp32 moving average of the weights (only with optim.ema)
  optim-KKKKK.safetensors   Adam's moments and step counts
  rng.safetensors           each rank's torch CPU/CUDA generator and data-sampler generators
  state.json                step, optimizer param groups, scheduler, numpy/python RNG, config
A weights folder holds only model-KKKKK.safetensors (e.g. bf16, half the bytes to carry); a run
resumed from one starts fresh optimizer moments at the step written in the shards' metadata.

Shards (shards.py) stay small so that a machine which hands back a few files of 16 MiB at a time
can return them.

Every file that cannot be used (missing, cut short, not safetensors, a model of another factor)
raises CheckpointError naming it; `check` finds these from the files' headers alone.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from models.flavr import FLAVR, FLAVRConfig
from models.flavr.checkpoint import infer_factor
from models.weights import check_fit, first_line
from pipeline.errors import CheckpointError, OutputError
from pipeline.folders import is_within
from pipeline.train.shards import (  # noqa: F401 - load_sharded(_metadata) are used through here
    complete_shards,
    header_shapes,
    load_sharded,
    load_sharded_metadata,
    read_metadata,
    read_tensors,
    save_sharded,
)

FORMAT = "flavr-serving-train/1"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---- full checkpoints ---------------------------------------------------------------------------

def rank_state(data) -> dict:
    """What one rank must keep to continue exactly: its generators and its sampler."""
    state = {"torch_cpu": torch.get_rng_state(), "numpy": _jsonable(np.random.get_state()),
             "python": _jsonable(random.getstate()), "data_batches": data.batches,
             "data_cpu_gen": data.cpu_gen.get_state(), "data_dev_gen": data.dev_gen.get_state()}
    if torch.cuda.is_available() and data.device.type == "cuda":
        state["torch_cuda"] = torch.cuda.get_rng_state(data.device)
    return state


def restore_rank_state(state: dict, data) -> None:
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and data.device.type == "cuda":
        torch.cuda.set_rng_state(state["torch_cuda"], data.device)
    np.random.set_state(_numpy_state(state["numpy"]))
    random.setstate(_python_state(state["python"]))
    data.load_state_dict({"cpu_gen": state["data_cpu_gen"], "dev_gen": state["data_dev_gen"],
                          "batches": state["data_batches"]})


def _jsonable(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, list)):
        return [_jsonable(x) for x in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _numpy_state(s):
    return (s[0], np.array(s[1], dtype=np.uint32), int(s[2]), int(s[3]), float(s[4]))


def _python_state(s):
    return (s[0], tuple(s[1]), s[2])


def _model_metadata(flavr: FLAVR, step: int, dtype: torch.dtype,
                    average: bool = False) -> dict[str, str]:
    return {"format": FORMAT, "kind": "weights", "step": str(step),
            "factor": str(flavr.config.factor), "dtype": str(dtype).removeprefix("torch."),
            "average": str(average).lower()}


def _model_tensors(flavr: FLAVR, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    # Default memory layout and CPU: the file never depends on channels-last or the device.
    return {k: v.detach().to("cpu", dtype).contiguous() for k, v in flavr.state_dict().items()}


@contextlib.contextmanager
def _new_folder(folder: Path):
    """A temporary folder beside `folder`, swapped in when the block ends well and removed when
    it does not (a second Ctrl-C while saving leaves neither a half checkpoint nor its folder)."""
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _replace_folder(tmp, folder)


def _replace_folder(tmp: Path, folder: Path) -> None:
    """Swap a finished temporary folder in: a crash leaves either the old or the new one. A
    signal cannot leave the run with its checkpoint under the `.old` name only, or the old one
    beside it: the swap runs with SIGINT and SIGTERM held back."""
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    with _signals_held():
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _signals_held():
    """SIGINT and SIGTERM noted during the block and raised again after it. Handlers are
    swapped rather than the signals masked: a mask holds back only the calling thread, and
    any of torch's threads may take a signal sent to the process."""
    if threading.current_thread() is not threading.main_thread():  # handlers live there only
        yield
        return
    came = []
    held = {sig: signal.signal(sig, lambda signum, frame: came.append(signum))
            for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in held.items():  # None: one set outside Python, not restorable
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for sig in dict.fromkeys(came):  # now to the run's own handlers
            signal.raise_signal(sig)


def save(folder, flavr: FLAVR, optimizer, scheduler, step: int, rank_states: list[dict],
         config: dict | None = None, extra: dict | None = None, average=None) -> Path:
    """A full checkpoint (see module doc); rank_states[r] comes from rank_state() on rank r;
    `average` a WeightAverage (pipeline/train/ema.py) or None."""
    folder = Path(folder)
    opt = optimizer.state_dict()
    tensors = {f"{i}.{k}": v if torch.is_tensor(v) else torch.tensor(v)
               for i, s in opt["state"].items() for k, v in s.items()}
    rng, ranks = {}, []
    for r, st in enumerate(rank_states):
        ranks.append({k: v for k, v in st.items() if not torch.is_tensor(v)})
        rng.update({f"{r}.{k}": v for k, v in st.items() if torch.is_tensor(v)})
    state = {"format": FORMAT, "step": step, "factor": flavr.config.factor,
             "param_groups": opt["param_groups"], "scheduler": scheduler.state_dict(),
             "ranks": ranks, "config": config, **(extra or {})}
    with _new_folder(folder) as tmp:
        save_sharded(_model_tensors(flavr, torch.float32), tmp, "model",
                     _model_metadata(flavr, step, torch.float32))
        if average is not None:
            save_sharded(_model_tensors(average.module, torch.float32), tmp, "ema",
                         {**_model_metadata(average.module, step, torch.float32, True),
                          "updates": str(average.updates)})
        save_sharded(tensors or {"empty": torch.zeros(0)}, tmp, "optim",
                     {"format": FORMAT, "kind": "optim"})
        save_file(rng, str(tmp / "rng.safetensors"), metadata={"format": FORMAT})
        (tmp / "state.json").write_text(json.dumps(state, indent=1, default=_jsonable))
    return folder


def save_weights(folder, flavr: FLAVR, step: int, dtype: str = "bf16",
                 average: bool = False) -> list[Path]:
    """Only the model, in `dtype`, as shards that carry their step (a weights folder);
    `average`: these are the moving average of the weights (said in the metadata)."""
    folder = Path(folder)
    with _new_folder(folder) as tmp:
        save_sharded(_model_tensors(flavr, DTYPES[dtype]), tmp, "model",
                     _model_metadata(flavr, step, DTYPES[dtype], average))
    return sorted(folder.glob("model-*.safetensors"))


def is_full(folder) -> bool:
    return (Path(folder) / "state.json").is_file()


def read_state(folder) -> dict:
    """state.json of a full checkpoint ({} for a weights folder)."""
    path = Path(folder) / "state.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: damaged or cut short ({exc})") from None


def _check_fits(folder: Path, paths: list[Path], factor: int) -> None:
    """The shards hold exactly the tensors of the FLAVR `factor`x model a run trains, in its
    shapes (from the headers: nothing is read). The factor comes from the head's shape, not from
    metadata, which a file written by other tools may lack."""
    state = {k: torch.empty(shape, device="meta") for k, shape in header_shapes(paths).items()}
    found = infer_factor(state, str(folder))
    if found != factor:
        raise CheckpointError(f"{folder}: holds a {found}x model; this run trains {factor}x")
    with torch.device("meta"):  # shapes only: nothing is allocated
        model = FLAVR(FLAVRConfig(factor))
    check_fit(model.state_dict(), state, str(folder), f"the FLAVR {factor}x model trained here")


def check(folder, factor: int) -> int:
    """Raise CheckpointError (naming the file) unless `folder`, a checkpoint or weights folder or
    one exported file, can be resumed by a run that trains `factor`x: every file opens and every
    set of shards is complete. Reads headers only, so a run finds a damaged copy before it
    spends minutes loading its data. Returns the step that run starts at."""
    folder = Path(folder)
    paths, metadata = complete_shards(folder, "model")
    _check_fits(folder, paths, factor)
    if not is_full(folder):
        return int(metadata.get("step", 0))
    complete_shards(folder, "optim")
    if has_average(folder):
        _check_fits(folder, complete_shards(folder, "ema")[0], factor)
    read_metadata(folder / "rng.safetensors")
    state = read_state(folder)
    lacking = [key for key in ("step", "param_groups", "scheduler", "ranks") if key not in state]
    if lacking or not isinstance(state["step"], int):
        raise CheckpointError(f"{folder / 'state.json'}: damaged, it lacks "
                              f"{', '.join(lacking) or 'a whole step number'}")
    return state["step"]


def _schedule_at(scheduler, step: int) -> None:
    """Put a LambdaLR at `step` without stepping it (no optimizer step has been taken)."""
    lrs = [base * fn(step) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler.last_epoch = step
    scheduler._last_lr = lrs


def _match_param_layouts(optimizer) -> None:
    """Give each moment its parameter's memory layout: safetensors stores tensors contiguous,
    while channels-last parameters have channels-last moments, and the fused Adam kernel
    requires both to match."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p, {})
            for name, v in st.items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    st[name] = torch.empty_like(p, dtype=v.dtype).copy_(v)


@torch.no_grad()
def copy_weights(module, weights: dict[str, torch.Tensor], source: str) -> None:
    """Copy saved tensors (any dtype, any device) into `module`; the same keys and shapes, or a
    CheckpointError naming `source` (copy_ alone would broadcast a tensor of the wrong shape)."""
    own = module.state_dict()
    check_fit(own, weights, source, "the model trained here")
    for k, v in own.items():
        v.copy_(weights[k].to(v.dtype))  # copy_ keeps the module's device and memory layout


def has_average(folder) -> bool:
    return Path(folder).is_dir() and any(Path(folder).glob("ema-*.safetensors"))


def load_average(folder, average) -> bool:
    """Put a checkpoint's moving average into `average` (a WeightAverage); False where the
    checkpoint has none (the average then starts from the loaded weights)."""
    if not has_average(folder):
        return False
    weights, meta = load_sharded(Path(folder), "ema")
    average.load(weights, int(meta.get("updates", 0)))
    return True


def load(folder, flavr: FLAVR, optimizer, scheduler, data, rank: int, log=print) -> tuple[int, bool]:
    """Restore what `folder` holds into the given objects; return the step to continue from and
    whether the checkpoint was full (False: weights only, the caller reseeds its sampler).

    Full checkpoint: everything, bit for bit. Weights folder, or one exported weights file such
    as the shipped weights/flavr-2x.safetensors: the weights (cast to the model's dtype), the
    schedule set to the saved step, fresh optimizer moments (with a warning)."""
    folder = Path(folder)
    weights, meta = load_sharded(folder, "model")
    copy_weights(flavr, weights, str(folder))
    if not is_full(folder):
        step = int(meta.get("step", 0))
        warnings.warn(f"{folder}: weights only ({meta.get('dtype', '?')}); Adam's moments start "
                      f"afresh at step {step}", stacklevel=2)
        _schedule_at(scheduler, step)
        return step, False
    state = read_state(folder)
    opt_tensors, _ = load_sharded(folder, "optim")
    groups = state["param_groups"]
    current = optimizer.state_dict()["param_groups"]
    for g, c in zip(groups, current):  # keep this machine's kernel choice (fused on CUDA, foreach on CPU)
        for key in ("fused", "foreach", "capturable", "differentiable"):
            if key in c:
                g[key] = c[key]
    per_param: dict[int, dict] = {}
    for key, t in opt_tensors.items():
        if key == "empty":
            continue
        i, name = key.split(".", 1)
        per_param.setdefault(int(i), {})[name] = t
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    _match_param_layouts(optimizer)
    scheduler.load_state_dict(state["scheduler"])
    ranks = state["ranks"]
    if rank < len(ranks):
        rng = read_tensors(folder / "rng.safetensors")
        tensors = {k.split(".", 1)[1]: v for k, v in rng.items() if k.split(".", 1)[0] == str(rank)}
        restore_rank_state({**ranks[rank], **tensors}, data)
    else:
        log(f"checkpoint: no sampler state for rank {rank} (saved with {len(ranks)} ranks); "
            "this rank's data stream starts afresh")
    return int(state["step"]), True


def export(folder, out, dtype: str = "bf16", raw: bool = False) -> Path:
    """One inference weight file (FLAVR's key names) from a checkpoint or weights folder: the
    moving average of the weights where the checkpoint has one, unless `raw`. Raises
    OutputError for an `out` it must not or cannot write, before reading anything."""
    folder, out = Path(folder), Path(out)
    _check_export_target(folder, out)
    prefix, averaged = _export_source(folder, raw)
    weights, meta = load_sharded(folder, prefix)
    tensors = {k: v.to(DTYPES[dtype]).contiguous() for k, v in weights.items()}
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "kind": "weights",
                                               "factor": meta.get("factor", ""),
                                               "step": meta.get("step", ""), "dtype": dtype,
                                               "average": str(averaged).lower()})
        os.replace(tmp, out)
    except BaseException as exc:
        with contextlib.suppress(OSError):  # never a half-written file beside the output
            tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception):  # the library's write errors are not all OSError
            raise OutputError(out, f"cannot be written ({first_line(exc)})") from None
        raise
    return out


def _check_export_target(folder: Path, out: Path) -> None:
    if out.suffix != ".safetensors":
        raise OutputError(out, "must end in .safetensors, the format serving and interpolate "
                               "read")
    if out.is_dir():
        raise OutputError(out, f"is a folder; name the file to write, e.g. "
                               f"{out / 'flavr.safetensors'}")
    if is_within(out, folder):
        raise OutputError(out, f"is in {folder}, which it is exported from; write it elsewhere")


def _export_source(folder: Path, raw: bool) -> tuple[str, bool]:
    """Which shards to export ('model' or 'ema'), and whether they hold the moving average."""
    if has_average(folder):
        return ("model", False) if raw else ("ema", True)
    averaged = load_sharded_metadata(folder, "model").get("average") == "true"
    if averaged and raw:
        raise CheckpointError(f"{folder}: holds only the moving average of the weights; the "
                              f"trained weights (--raw) are in the run's checkpoint folder")
    return "model", averaged
