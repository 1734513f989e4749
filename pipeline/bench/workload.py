"""What a model benchmark measures: the modes, the study's shared state, the model copies and
the inputs (random for timing, video-like for accuracy)."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from models.base import ServedModel
from pipeline.bench.timing import Clock

MODES = ("original", "fast", "fp16", "compile")
DEFAULT_SIZES = "256x256,512x512,720x1280,1080x1920"  # for a model that takes any frame size

# torch.compile mode for the "compile" rows. The default mode, not "max-autotune-no-cudagraphs":
# nearly all of these models' work is 3D convolutions, which Inductor leaves to cuDNN unless
# max-autotune makes it benchmark its generic Triton conv templates against cuDNN for every conv
# shape: minutes of autotuning per input size, for templates that rarely beat cuDNN's Hopper
# kernels. What compilation can win here is the memory-bound glue between convs (FLAVR's gate
# scaling, residual add and ReLU, LeakyReLU, skip concatenation, padding, the fp32 mean; batch
# norm in R(2+1)D), and the default mode already fuses that. No CUDA graphs either way: a call
# takes milliseconds, so launch overhead is small, and a graph's private memory pool would blur
# the peak-memory column.
COMPILE_MODE = "default"


@dataclass(frozen=True)
class ModeSpec:
    mode: str
    batch: int
    precision: str
    channels_last: bool
    cudnn_benchmark: bool
    compiled: bool

    @property
    def label(self) -> str:
        return f"{self.mode} b{self.batch}"


def plan_modes(modes: list[str], batches: list[int], compile_batches: list[int]) -> list[ModeSpec]:
    """original: the reference code's way (fp32, batch 1, eager, contiguous, cudnn.benchmark off,
    PyTorch's default TF32 for cuDNN convs); fast: bf16, channels-last, cudnn.benchmark, each
    batch; fp16: as fast in fp16; compile: fast plus torch.compile of the whole forward."""
    specs = []
    for mode in modes:
        if mode == "original":
            specs.append(ModeSpec("original", 1, "fp32", False, False, False))
        elif mode in ("fast", "fp16"):
            precision = "bf16" if mode == "fast" else "fp16"
            specs += [ModeSpec(mode, b, precision, True, True, False) for b in batches]
        elif mode == "compile":
            specs += [ModeSpec("compile", b, "bf16", True, True, True) for b in compile_batches]
    return specs


@dataclass
class Study:
    device: torch.device
    clock: Clock
    served: ServedModel  # the model as a workload: rows, work count, output kind
    base: torch.nn.Module  # fp32 weights on the CPU; every mode starts from a copy
    iters: int
    warmup: int
    stage_iters: int
    seed: int
    ceiling_tflops: float | None


def make_model(study: Study, spec: ModeSpec):
    """(the eager model, the callable to time): a copy of the base in the mode's precision."""
    model = copy.deepcopy(study.base).to(study.device)
    model.for_inference(spec.precision, channels_last=spec.channels_last)
    if not spec.compiled:
        return model, model
    # A fresh compile per shape: static shapes (dynamic=False) give the best kernels, and resetting
    # keeps one size's guards and recompile count from touching the next.
    torch._dynamo.reset()
    return model, torch.compile(model, mode=None if COMPILE_MODE == "default" else COMPILE_MODE,
                                dynamic=False)


def random_input(study: Study, batch: int, height: int, width: int):
    """A (batch, *row shape) input buffer and fill(t), which refills a buffer with uniform values
    from a generator seeded by the study (each timed call sees new data)."""
    gen = torch.Generator(device=study.device).manual_seed(study.seed)
    x = torch.empty(batch, *study.served.row_shape(height, width), device=study.device)
    return x, lambda t: t.uniform_(0.0, 1.0, generator=gen)


def synthetic_rows(served: ServedModel, count: int, height: int, width: int, seed: int
                   ) -> tuple[torch.Tensor, str]:
    """`count` rows of model input in [0, 1] that look like video: each the model's frames of
    one of the project's moving scenes (pipeline.media.synthetic), as (count, 3, T, H, W)."""
    from pipeline.media.synthetic import make_scene, render

    rows, t = [], served.frames_per_row
    for i in range(count):
        layers = make_scene(width, height, t, seed * 1009 + i)
        frames = [torch.from_numpy(render(layers, float(k), width, height)) for k in range(t)]
        rows.append(torch.stack(frames).permute(3, 0, 1, 2))  # (T, H, W, 3) -> (3, T, H, W)
    return torch.stack(rows).float().contiguous(), "pipeline.media.synthetic scenes"
