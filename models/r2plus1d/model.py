"""R(2+1)D-18 action recognition (Tran et al., "A Closer Look at Spatiotemporal Convolutions for
Action Recognition", CVPR 2018): the RnB paper's own workload.

A clip of 16 RGB frames, (B, 3, 16, H, W) in [0, 1] (112x112 as trained), becomes class scores
(B, 400) float32, one per Kinetics-400 class (logits: no softmax).

The network is an 18-layer 3D ResNet whose every t x d x d convolution (N_in -> N_out channels)
is factorised into a spatial 1 x d x d convolution to M channels, batch norm and ReLU, then a
temporal t x 1 x 1 convolution to N_out. M = floor(t d^2 N_in N_out / (d^2 N_in + t N_out)) gives
the pair about the parameters of the 3D convolution it replaces, and the extra ReLU doubles the
non-linearities. As in the implementation most results are quoted for, one M per residual block
(from the block's input and output widths) serves both of its convolutions, and the stem's
3x7x7 convolution becomes 1x7x7 to 45 channels, then 3x1x1 to 64: 31,505,325 parameters with 400
classes (an M per convolution instead would give 33,370,839).

    stem    (1x7x7, stride 1x2x2) + (3x1x1)        64 ch, T x H/2 x W/2
    layer1  2 blocks                               64 ch, T x H/2 x W/2
    layer2  2 blocks, the first strided 2 in T,H,W 128 ch, T/2 x H/4 x W/4
    layer3                                         256 ch, T/4 x H/8 x W/8
    layer4                                         512 ch, T/8 x H/16 x W/16
    head    global average pool, fc 512 -> 400

Stages for splitting are these six; each boundary carries one activation. Frames are normalised
with the Kinetics RGB mean and standard deviation inside the model (in float32, at any
precision), so the pipeline hands it the same [0, 1] frames it hands FLAVR.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.base import StagedModel

CLIP_FRAMES = 16  # frames per clip, as trained
CLIP_SIZE = (112, 112)  # (H, W) as trained
NUM_CLASSES = 400  # Kinetics-400
WIDTHS = (64, 128, 256, 512)  # channels of layer1..layer4
STEM_MID = 45  # channels between the stem's spatial and temporal convolutions
# Kinetics-400 RGB statistics of frames in [0, 1]
MEAN = (0.43216, 0.394666, 0.37645)
STD = (0.22803, 0.22145, 0.216989)

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4", "head")
STAGE_IO = {
    "stem": (("frames",), ("x0",)),
    "layer1": (("x0",), ("x1",)),
    "layer2": (("x1",), ("x2",)),
    "layer3": (("x2",), ("x3",)),
    "layer4": (("x3",), ("x4",)),
    "head": (("x4",), ("out",)),
}


@dataclass
class R2Plus1DConfig:
    num_classes: int = NUM_CLASSES
    blocks: tuple[int, int, int, int] = (2, 2, 2, 2)  # residual blocks per layer: 18 layers
    clip_frames: int = CLIP_FRAMES

    def __post_init__(self):
        if self.num_classes < 1 or self.clip_frames < 1 or min(self.blocks) < 1:
            raise ValueError(f"invalid R(2+1)D configuration {self}")


def mid_channels(cin: int, cout: int, t: int = 3, d: int = 3) -> int:
    """Channels between a (2+1)D pair standing in for a t x d x d conv from cin to cout."""
    return (t * d * d * cin * cout) // (d * d * cin + t * cout)


def down_size(n: int, stride: int) -> int:
    """Output length of a stride-s convolution whose padding keeps n at stride 1."""
    return (n - 1) // stride + 1


class Conv2Plus1D(nn.Sequential):
    """Spatial 1 x 3 x 3 conv to `mid` channels, batch norm, ReLU, temporal 3 x 1 x 1 conv."""

    def __init__(self, cin: int, cout: int, mid: int, stride: int):
        super().__init__(
            nn.Conv3d(cin, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, cout, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False),
        )


class BasicBlock(nn.Module):
    """Two (2+1)D convolutions with batch norm, plus the (projected) input."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        mid = mid_channels(cin, cout)
        self.conv1 = nn.Sequential(Conv2Plus1D(cin, cout, mid, stride), nn.BatchNorm3d(cout),
                                   nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(Conv2Plus1D(cout, cout, mid, 1), nn.BatchNorm3d(cout))
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv3d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm3d(cout))

    def forward(self, x):
        out = self.conv2(self.conv1(x))
        out += x if self.downsample is None else self.downsample(x)
        return F.relu(out, inplace=True)


class R2Plus1D(StagedModel):
    STAGES = STAGES
    STAGE_IO = STAGE_IO
    FP32_BUFFERS = ("input_mean", "input_std")

    def __init__(self, config: R2Plus1DConfig | None = None):
        super().__init__()
        self.config = config = config or R2Plus1DConfig()
        c0 = WIDTHS[0]
        self.stem = nn.Sequential(
            nn.Conv3d(3, STEM_MID, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False),
            nn.BatchNorm3d(STEM_MID), nn.ReLU(inplace=True),
            nn.Conv3d(STEM_MID, c0, (3, 1, 1), 1, (1, 0, 0), bias=False),
            nn.BatchNorm3d(c0), nn.ReLU(inplace=True))
        cin = c0
        for i, (cout, n) in enumerate(zip(WIDTHS, config.blocks)):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(cin, cout, stride)] + [BasicBlock(cout, cout, 1) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            cin = cout
        self.fc = nn.Linear(WIDTHS[-1], config.num_classes)
        # Not part of the weights: constants of the input's scale, kept float32.
        self.register_buffer("input_mean", torch.empty(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.empty(1, 3, 1, 1, 1), persistent=False)
        self.reset_constants()
        for m in self.modules():  # He initialisation for the ReLU convs, unit batch norms
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @torch.no_grad()
    def reset_constants(self) -> None:
        """(Re)write the normalisation constants, e.g. after `to_empty` allocated the model."""
        if self.input_mean.device.type != "meta":
            self.input_mean.copy_(torch.tensor(MEAN).view(1, 3, 1, 1, 1))
            self.input_std.copy_(torch.tensor(STD).view(1, 3, 1, 1, 1))

    def state_shapes(self, batch: int, height: int, width: int):
        """Shape and dtype of every tensor in the state at every boundary, by arithmetic."""
        t, act = self.config.clip_frames, self.dtype
        h, w = down_size(height, 2), down_size(width, 2)  # the stem halves H and W, keeps T
        table = {"frames": ((batch, 3, t, height, width), torch.float32),
                 "x0": ((batch, WIDTHS[0], t, h, w), act), "x1": ((batch, WIDTHS[0], t, h, w), act)}
        for i, c in enumerate(WIDTHS[1:], start=2):  # layer2..4 halve T, H and W
            t, h, w = down_size(t, 2), down_size(h, 2), down_size(w, 2)
            table[f"x{i}"] = ((batch, c, t, h, w), act)
        table["out"] = ((batch, self.config.num_classes), torch.float32)
        return self.shapes_by_boundary(table)

    def stage_forward(self, stage: str, ins: list, size: tuple[int, int]) -> tuple:
        (x,) = ins
        if stage == "stem":
            return (self.stem(self._normalise(x)),)
        if stage == "head":
            # fp32 scores whatever the precision: the sink and the accuracy checks read them
            return (self.fc(torch.flatten(F.adaptive_avg_pool3d(x, 1), 1)).float(),)
        return (getattr(self, stage)(x),)

    def _normalise(self, frames: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = frames.shape
        if (c, t) != (3, self.config.clip_frames):
            raise ValueError(f"frames must be (B, 3, {self.config.clip_frames}, H, W), "
                             f"got {tuple(frames.shape)}")
        x = ((frames.float() - self.input_mean) / self.input_std).to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return x
