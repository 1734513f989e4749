"""Step kinds a runner process can host, looked up by the config's `kind`.

A step knows the tensors it takes and gives (so slot pools can be sized once), in which groups its
outputs become final (so a split can hand early ones on while later ones are computed), and how to
run one batch on its device, handing each group to `publish(group_index, tensors)` as soon as it is
ready. Timing, queues and hand-off are the runner's business, not the step's.
"""
from __future__ import annotations

import time
import warnings

import torch

from models.registry import RANDOM_WEIGHTS, served_model
from pipeline.serving.transport.slots import TensorSpec


def tensor_specs(shapes: dict) -> dict[str, TensorSpec]:
    """A model's {name: (shape, dtype)} as slot-pool specs."""
    return {k: TensorSpec(tuple(s), dt) for k, (s, dt) in shapes.items()}


def decode_output_spec(model, max_rows: int, height: int, width: int) -> dict[str, TensorSpec]:
    """What the decode step hands on: the model's input rows, float in [0, 1]."""
    return tensor_specs(model.input_spec(max_rows, height, width))


class ModelStep:
    """A contiguous range of the configured model's stages."""

    kind = "model"

    def __init__(self, step_cfg, model_cfg, device: torch.device):
        self.first, self.last = step_cfg.stages
        self.model_cfg = model_cfg
        self.served = served_model(model_cfg)
        self.network = self.served.network
        self.device = device
        self.model = None
        # [(last stage of the sub-range, outputs final after it)], in order
        self.plan = self.network.output_groups(self.first, self.last)
        if not model_cfg.early_handoff:  # one group, published once the whole range has run
            self.plan = [(self.last, tuple(n for _, names in self.plan for n in names))]
        assert self.plan[-1][0] == self.last  # the last stage always makes a live tensor

    def setup(self) -> None:
        cfg = self.model_cfg
        # Without a checkpoint every replica must still hold the same weights: split steps in
        # different processes form one model only if they start from one seed.
        # The main process says once per run that random weights make meaningless outputs.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            # The orchestrator hands over a resolved path, or `random`.
            checkpoint = None if cfg.checkpoint in (None, RANDOM_WEIGHTS) else cfg.checkpoint
            self.model = self.served.build(self.device, cfg.precision, cfg.channels_last,
                                           checkpoint, seed=0,
                                           trust_checkpoint=cfg.trust_checkpoint)
        self._run = self.model.run_stages
        limit = cfg.memory_limit_gib
        if limit:
            # Replicas sharing a device each get a share; a request that needs more fails alone
            # with an out-of-memory error instead of starving its neighbours.
            cap_memory(self.device, limit)
        if cfg.compile or cfg.cuda_graphs:
            # Shapes are fixed per batch size and frame size, all seen during warm-up;
            # "reduce-overhead" also replays each shape as a CUDA graph.
            mode = "reduce-overhead" if cfg.cuda_graphs else None
            self._run = torch.compile(self.model.run_stages, dynamic=False, mode=mode)
            # One graph per (stage sub-range, batch size, frame size); the default limit of 8
            # would fall back to eager for a split's encoder at a few sizes.
            _raise_recompile_limit(64)

    def specs(self, max_rows: int, height: int, width: int):
        shapes = self.model.state_shapes(max_rows, height, width)
        return (tensor_specs(shapes[self.network.boundary_before(self.first)]),
                tensor_specs(shapes[self.last]))

    def output_groups(self) -> list[tuple[str, ...]]:
        return [names for _, names in self.plan]

    def run(self, tensors: dict, size, n_requests: int, publish, items=None, gathered=None):
        """Run the step's stages, one sub-range per output group, publishing each group.
        items: the queue items of the batch, gathered: how their inputs came (slots.Gathered);
        both None while warming up. Returns None, or a change_step.BatchResult."""
        stages = self.network.STAGES
        state = dict(tensors)
        state["size"] = tuple(size)
        start = self.first
        for g, (end, names) in enumerate(self.plan):
            state = self._run(state, start, end)
            publish(g, {k: state[k] for k in names})
            if end != self.last:
                start = stages[stages.index(end) + 1]


def _raise_recompile_limit(n: int) -> None:
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit"):  # the newer name first
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), n))
            return


def cap_memory(device: torch.device, limit_gib: float) -> None:
    """At most `limit_gib` more memory for this process on `device`: the caching allocator's
    share of a GPU, or on the CPU the address space this process may still grow by."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, limit_gib * 2**30 / total), device)
        return
    import resource

    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    want = vm + int(limit_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's allocator raises OutOfMemoryError; the CPU's raises RuntimeError or MemoryError."""
    return (isinstance(exc, (torch.OutOfMemoryError, MemoryError))
            or "can't allocate memory" in str(exc))


class SleepStep:
    """TEST STEP, not a model: holds each request for a fixed time and passes its inputs on.

    It gives capacity searches and overload tests a service time that is known exactly, so that
    they test the pipeline and the measurement rather than the model.
    """

    kind = "sleep"

    def __init__(self, step_cfg, model_cfg, device: torch.device):
        self.sleep_s = step_cfg.sleep_ms / 1000.0
        self.device = device
        self.served = served_model(model_cfg)  # passes the model's input rows on unchanged

    def setup(self) -> None:
        pass

    def specs(self, max_rows: int, height: int, width: int):
        spec = decode_output_spec(self.served, max_rows, height, width)
        return spec, spec

    def output_groups(self) -> list[tuple[str, ...]]:
        return [tuple(decode_output_spec(self.served, 1, 1, 1))]

    def run(self, tensors: dict, size, n_requests: int, publish, items=None, gathered=None):
        # Service time per request, like a model whose cost grows with the batch.
        time.sleep(self.sleep_s * n_requests)
        publish(0, dict(tensors))


STEP_KINDS = {"model": ModelStep, "sleep": SleepStep}


def make_step(step_cfg, model_cfg, device: torch.device):
    if step_cfg.kind == "model" and getattr(model_cfg, "change_based", None) is not None:
        from pipeline.serving.change_step import ChangeModelStep

        return ChangeModelStep(step_cfg, model_cfg, device)
    return STEP_KINDS[step_cfg.kind](step_cfg, model_cfg, device)
