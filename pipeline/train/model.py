"""The model as trained: FLAVR with the performance switches of a training run, and one step.

Switches (each a config field, each measured by pipeline/train/bench.py):
  precision   fp32: strict IEEE fp32 matmuls and convolutions; tf32: TF32 tensor cores for fp32;
              bf16: autocast to bf16 over fp32 master weights (TF32 for what stays fp32)
  channels_last   weights and activations NDHWC (NHWC for the 2D head): cuDNN's preferred layout
  compile     torch.compile of the training step's forward and backward: element-wise chains
              become fused kernels
  activation_checkpointing   each encoder/decoder stage runs under torch.utils.checkpoint, so the
              backward pass recomputes its activations instead of keeping them (memory for time)
"""
from __future__ import annotations

import contextlib
import math
import warnings

import torch
import torch._dynamo
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.checkpoint import checkpoint

from models.flavr import FLAVR, STAGES
from models.flavr.checkpoint import build_model

CHECKPOINTED = tuple(s for s in STAGES if s != "head")  # the head is small and runs last anyway


def set_backend_flags(precision: str) -> None:
    """fp32 is strict IEEE; tf32 and bf16 let fp32 matmuls and convolutions use TF32. cuDNN times
    its algorithms for each new shape: training's shapes are fixed (crops of one size, a few
    validation frame sizes), so that pays once; its default heuristics picked far slower 3D
    convolutions (one H200, bf16 + channels-last + compile, batch 16: 160.7 samples/s, 265.0
    with timing)."""
    tf32 = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True


def autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_channels_last(model: FLAVR) -> FLAVR:
    """NDHWC for 5D weights (Conv3d), NHWC for 4D (the head's Conv2d); the model converts its
    inputs to match."""
    formats = {5: torch.channels_last_3d, 4: torch.channels_last}
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() in formats:
                p.data = p.data.contiguous(memory_format=formats[p.dim()])
    model.channels_last = True
    return model


class TrainNet(nn.Module):
    """FLAVR's forward pass for training: stage by stage, each checkpointed when asked.
    Holds the FLAVR module as `flavr`; weights are saved from that module, with its own names."""

    def __init__(self, flavr: FLAVR, activation_checkpointing: bool = False):
        super().__init__()
        self.flavr = flavr
        self.activation_checkpointing = activation_checkpointing

    def _stage(self, stage: str, state: dict) -> dict:
        return self.flavr.run_stages(state, stage, stage)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if not self.activation_checkpointing:
            return self.flavr(frames)
        state = {"frames": frames, "size": tuple(frames.shape[-2:])}
        for stage in STAGES:
            if stage in CHECKPOINTED:
                state = checkpoint(self._stage, stage, state, use_reentrant=False)
            else:
                state = self._stage(stage, state)
        return state["out"]


def build_train_model(factor: int, device, seed: int, channels_last: bool = False,
                      activation_checkpointing: bool = False) -> tuple[FLAVR, TrainNet]:
    """A freshly initialised FLAVR (seeded, identical on every rank) and the net that trains it
    (see `parallelize` for DDP and compilation)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "random weights": that is where training starts
        flavr = build_model(factor, seed=seed)
    flavr = flavr.to(device).train()
    if channels_last:
        to_channels_last(flavr)
    return flavr, TrainNet(flavr, activation_checkpointing)


def parallelize(net: nn.Module, device: torch.device, world: int, compile: bool) -> nn.Module:
    """DDP over the process group when there is more than one process, then torch.compile of
    the whole: compiling the DDP wrapper (not the module inside it) lets the compiler cut the
    graph at DDP's gradient buckets, so all-reduces overlap the backward pass. Weights are always
    saved from the FLAVR module itself, so the wrappers' key prefixes never reach a file."""
    if world > 1:
        net = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
        if compile and getattr(net.module, "activation_checkpointing", False):
            # The compiler's DDP graph splitting refuses checkpointed regions (higher-order ops):
            # fall back to one gradient bucket for the whole graph rather than to eager mode.
            torch._dynamo.config.optimize_ddp = False
    return torch.compile(net) if compile else net


# L1 (the FLAVR paper's) predicts each pixel's median: sharp, but where the inputs cannot say
# where things will be it commits to one guess. L2 predicts the mean, which is what PSNR rewards.
LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss}


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor,
               targets: torch.Tensor, precision: str, grad_clip: float = 0.0,
               loss: str = "l1") -> torch.Tensor:
    """Forward, loss (LOSSES), backward, optimizer step; returns the loss (a device scalar, no
    sync)."""
    with autocast(precision, inputs.device):
        out = net(inputs)
    loss = LOSSES[loss](out.float(), targets)  # FLAVR's output is fp32 already; so is the loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    optimizer.step()
    return loss.detach()


def make_optimizer(params, lr: float, betas=(0.9, 0.99), eps: float = 1e-8,
                   weight_decay: float = 0.0, device_type: str = "cpu") -> torch.optim.Adam:
    """Adam: one fused kernel for all parameters on CUDA; the multi-tensor (foreach) path on CPU."""
    kind = {"fused": True} if device_type == "cuda" else {"foreach": True}
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), eps=eps,
                            weight_decay=weight_decay, **kind)


def lr_factor(step: int, warmup: int, total: int, final_fraction: float) -> float:
    """Linear warm-up to 1 over `warmup` steps, then cosine down to final_fraction at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


def make_schedule(optimizer, warmup: int, total: int, final_fraction: float,
                  rewarm_from: int | None = None, rewarm_steps: int = 0):
    """LambdaLR over lr_factor. rewarm_from: a run that restarted Adam's moments at that step
    (weights-only resume) ramps the rate up again over rewarm_steps, as at the very start: fresh
    moments make the first updates full-size whatever the gradient's scale."""
    def factor(s: int) -> float:
        f = lr_factor(s, warmup, total, final_fraction)
        if rewarm_from is not None and rewarm_steps > 0:
            f *= min(1.0, (s - rewarm_from + 1) / rewarm_steps)
        return f

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
