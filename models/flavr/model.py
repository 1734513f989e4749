"""FLAVR: flow-free video frame interpolation with a 3D U-Net (UNet_3D_3D, unet_18 encoder).

Four input frames (B, 3, 4, H, W) in [0, 1] become factor-1 frames between the 2nd and 3rd,
returned as (B, factor-1, 3, H, W) float32.

The forward pass is cut into named stages (STAGES) so that a pipeline step, possibly in another
process on another GPU, can run any contiguous range of them (models/base.py: StagedModel). Between
stages the activations live in a "state": a dict of tensors plus "size" = (H, W) of the unpadded
frames as python ints, so reading it never waits on a GPU. `run_stages` hands over only the tensors
that later stages still read; `state_shapes` tells a pipeline what those tensors look like so it
can allocate its buffers once.

Module names follow the released checkpoints (FLAVR_2x/4x/8x.pth, minus their 'module.' prefix),
so those files load without any renaming. The one-element Sequentials below exist only for that.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.base import StagedModel

N_INPUTS = 4  # FLAVR always looks at four frames
WIDTHS = (64, 128, 256, 512)  # channels of stem/layer1, layer2, layer3, layer4
PAD_MULTIPLE = 8  # three 2x spatial downsamplings (stem, layer2, layer3)
LEAKY_SLOPE = 0.2

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4",
          "dec0", "dec1", "dec2", "dec3", "dec4", "head")

# What each stage reads from the state and what it adds. Everything about hand-over (what a state
# must hold at each boundary) is derived from this table, so it cannot drift from the code.
#   x0..x4: encoder outputs (stem, layer1..4), kept as U-Net skips
#   d3..d0: decoder output already joined with its skip (channel concat, decoder output first)
#   feat:   last decoder output at full padded resolution; mean: per-sample colour mean (fp32)
STAGE_IO = {
    "stem": (("frames",), ("mean", "x0")),
    "layer1": (("x0",), ("x1",)),
    "layer2": (("x1",), ("x2",)),
    "layer3": (("x2",), ("x3",)),
    "layer4": (("x3",), ("x4",)),
    "dec0": (("x4", "x3"), ("d3",)),
    "dec1": (("d3", "x2"), ("d2",)),
    "dec2": (("d2", "x1"), ("d1",)),
    "dec3": (("d1", "x0"), ("d0",)),
    "dec4": (("d0",), ("feat",)),
    "head": (("feat", "mean"), ("out",)),
}
OUTPUTS = ("out",)


@dataclass
class FLAVRConfig:
    factor: int = 2  # frame-rate multiplier: 2, 4 or 8
    # Bias on the stem and residual-block convs. None means as released: the 2x model has none,
    # the 4x and 8x models have one. Decided per instance so models of both kinds can coexist.
    encoder_bias: bool | None = None

    def __post_init__(self):
        if self.factor not in (2, 4, 8):
            raise ValueError(f"FLAVR factor must be 2, 4 or 8, got {self.factor!r}")
        if self.encoder_bias is None:
            self.encoder_bias = self.factor != 2

    @property
    def n_outputs(self) -> int:
        return self.factor - 1


class Gate(nn.Module):
    """Channel gating: scale each channel by sigmoid(conv(global average over T, H, W))."""

    def __init__(self, channels: int):
        super().__init__()
        self.attn_layer = nn.Sequential(nn.Conv3d(channels, channels, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.attn_layer(x.mean(dim=(2, 3, 4), keepdim=True))


class BasicBlock(nn.Module):
    """3D residual block without batch norm: conv-relu-conv-gate, plus the (projected) input."""

    def __init__(self, cin: int, cout: int, stride: int, bias: bool):
        super().__init__()
        stride3 = (1, stride, stride)  # time is never strided: all four frames survive to the head
        self.conv1 = nn.Sequential(nn.Conv3d(cin, cout, 3, stride3, 1, bias=bias), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(nn.Conv3d(cout, cout, 3, 1, 1, bias=bias))
        self.fg = Gate(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv3d(cin, cout, 1, stride3, bias=False))

    def forward(self, x):
        out = self.fg(self.conv2(self.conv1(x)))
        out += x if self.downsample is None else self.downsample(x)
        return F.relu(out, inplace=True)


def _layer(cin: int, cout: int, stride: int, bias: bool) -> nn.Sequential:
    return nn.Sequential(BasicBlock(cin, cout, stride, bias), BasicBlock(cout, cout, 1, bias))


def _gated(name: str, conv: nn.Module, cout: int) -> nn.Sequential:
    # The released files call a decoder entry's body "conv" or "upconv"; keep that name.
    return nn.Sequential(OrderedDict([(name, nn.Sequential(conv, Gate(cout)))]))


def _up(cin: int, cout: int) -> nn.Module:
    # Doubles H and W, keeps T: (T-1)*1 - 2 + 3 = T and (H-1)*2 - 2 + 4 = 2H.
    return nn.ConvTranspose3d(cin, cout, (3, 4, 4), (1, 2, 2), 1)


def padded_size(height: int, width: int) -> tuple[int, int]:
    """The frame size the network computes at: padded up to a multiple of PAD_MULTIPLE."""
    return height + -height % PAD_MULTIPLE, width + -width % PAD_MULTIPLE


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflection-pad H and W of (B, C, T, H, W) up to a multiple (padding on the bottom/right)."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return x
    # Reflect padding takes at most the last two dims of a 4D tensor here: fold C and T together.
    b, c, t = x.shape[:3]
    return F.pad(x.reshape(b, c * t, h, w), (0, pw, 0, ph), mode="reflect").reshape(b, c, t, h + ph, w + pw)


class FLAVR(StagedModel):
    STAGES = STAGES
    STAGE_IO = STAGE_IO
    OUTPUTS = OUTPUTS
    OPTIONAL_INPUTS = {"stem": ("mean",)}

    def __init__(self, config: FLAVRConfig | None = None):
        super().__init__()
        self.config = config = config or FLAVRConfig()
        bias = config.encoder_bias
        c0, c1, c2, c3 = WIDTHS
        self.encoder = nn.ModuleDict({
            "stem": nn.Sequential(nn.Conv3d(3, c0, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=bias),
                                  nn.ReLU(inplace=True)),
            "layer1": _layer(c0, c0, 1, bias),
            "layer2": _layer(c0, c1, 2, bias),
            "layer3": _layer(c1, c2, 2, bias),
            "layer4": _layer(c2, c3, 1, bias),
        })
        # Input channels of dec1..dec4 are doubled by the skip joined to the previous output.
        self.decoder = nn.ModuleList([
            _gated("conv", nn.Conv3d(c3, c2, 3, 1, 1), c2),
            _gated("upconv", _up(2 * c2, c1), c1),
            _gated("upconv", _up(2 * c1, c0), c0),
            _gated("conv", nn.Conv3d(2 * c0, c0, 3, 1, 1), c0),
            _gated("upconv", _up(2 * c0, c0), c0),
        ])
        # Time folded into channels: the 2D head sees all four frames' features at once.
        self.feature_fuse = nn.Sequential(OrderedDict(
            conv=nn.Sequential(nn.Conv2d(N_INPUTS * c0, c0, 1, bias=False))))
        self.outconv = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(c0, 3 * config.n_outputs, 7))

    # The colour mean and its re-addition stay fp32 at any precision (that is where the output's
    # absolute level comes from); the network proper runs in the model's precision; the output
    # is always float32 (StagedModel.for_inference sets the precision).

    def state_shapes(self, batch: int, height: int, width: int
                     ) -> dict[str, dict[str, tuple[tuple[int, ...], torch.dtype]]]:
        """Shape and dtype of every tensor in the state at every boundary, by arithmetic."""
        hp, wp = padded_size(height, width)
        act, f32 = self.dtype, torch.float32
        c0, c1, c2, c3 = WIDTHS

        def a(channels, down):  # an activation at 1/down of the padded resolution
            return (batch, channels, N_INPUTS, hp // down, wp // down), act

        return self.shapes_by_boundary({
            "frames": ((batch, 3, N_INPUTS, height, width), f32),
            "mean": ((batch, 3), f32),
            "x0": a(c0, 2), "x1": a(c0, 2), "x2": a(c1, 4), "x3": a(c2, 8), "x4": a(c3, 8),
            "d3": a(2 * c2, 8), "d2": a(2 * c1, 4), "d1": a(2 * c0, 2), "d0": a(2 * c0, 2),
            "feat": a(c0, 1),
            "out": ((batch, self.config.n_outputs, 3, height, width), f32),
        })

    # ---- running --------------------------------------------------------------------------------

    def stage_forward(self, stage: str, ins: list, size: tuple[int, int], mean=None) -> tuple:
        if stage == "stem":
            # A given colour mean (B, 3) replaces the frames' own: change-based inference runs
            # tiles with their whole frame's mean (models/flavr/change_based.py).
            return self._stem(ins[0], size, mean)
        if stage == "head":
            return (self._head(*ins, size),)
        if stage.startswith("layer"):
            return (self.encoder[stage](ins[0]),)
        # dec0..dec4: gated (up)conv, LeakyReLU, then join the skip if the stage has one
        y = F.leaky_relu(self.decoder[int(stage[3:])](ins[0]), LEAKY_SLOPE, inplace=True)
        return (torch.cat([y, ins[1]], dim=1) if len(ins) > 1 else y,)

    def _stem(self, frames: torch.Tensor, size: tuple[int, int], mean: torch.Tensor | None = None):
        b, c, t, h, w = frames.shape
        if (c, t) != (3, N_INPUTS) or (h, w) != tuple(size):
            raise ValueError(f"frames must be (B, 3, {N_INPUTS}, H, W) with (H, W) = size {tuple(size)}, "
                             f"got {tuple(frames.shape)}")
        if h < PAD_MULTIPLE or w < PAD_MULTIPLE:
            raise ValueError(f"frames must be at least {PAD_MULTIPLE}x{PAD_MULTIPLE}, got {h}x{w}")
        # The network sees colour relative to the clip's own mean; the mean is added back to the
        # outputs in the head. Kept in fp32 because it carries the frames' absolute level.
        frames = frames.float()
        if mean is None:
            mean = frames.mean(dim=(2, 3, 4))
        x = _pad_to_multiple(frames - mean[:, :, None, None, None], PAD_MULTIPLE).to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return mean, self.encoder["stem"](x)

    def _head(self, feat: torch.Tensor, mean: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h, w = size
        x = torch.cat(feat.unbind(dim=2), dim=1)  # (B, 64, T, H, W) -> (B, T*64, H, W), time-major
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = F.leaky_relu(self.feature_fuse(x), LEAKY_SLOPE, inplace=True)
        y = self.outconv(x).unflatten(1, (self.config.n_outputs, 3))  # frames in time order
        out = y[..., :h, :w].float() + mean[:, None, :, None, None]
        return out.contiguous()


BOUNDARIES = FLAVR.BOUNDARIES  # "input" is the state before stem; the others follow their stage
LIVE_AFTER = FLAVR.LIVE_AFTER
