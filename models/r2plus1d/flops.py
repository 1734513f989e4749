"""R(2+1)D-18's work, counted by arithmetic: multiply-adds per stage of one 16-frame clip.

At 16 x 112 x 112 a clip costs 40,519,080,960 multiply-adds (40.52 GMAC, 81.04 GFLOP), the
figure usually quoted for R(2+1)D-18 (as "40.5 GFLOPs", counting multiply-adds):

    stem       765,434,880  1x7x7 3->45 (16x56x56 x 45 x 147) + 3x1x1 45->64 (16x56x56 x 64 x 135)
    layer1  22,196,256,768  four pairs 64->144->64 at 16x56x56, 5,549,064,192 each
    layer2  10,031,988,736  M = 230 then 288; the first pair strided to 8x28x28; projection 64->128
    layer3   5,015,994,368  M = 460 then 576, down to 4x14x14
    layer4   2,509,201,408  M = 921 then 1152, down to 2x7x7
    head           204,800  fc 512 -> 400 (the pooling is not counted)

Early layers dominate: the time and space resolution halve at each of layer2..4 while the
channels only double, so each layer costs about half the one before it.
"""
from __future__ import annotations

from models.r2plus1d.model import STEM_MID, WIDTHS, down_size, mid_channels

FLOP_CONVENTION = (
    "MACs are multiply-adds of every Conv3d and of the final Linear, FLOP = 2 * MACs. Each "
    "convolution counts its output positions times input channels times kernel taps, zero "
    "padding included, as the GPU computes them; a (2+1)D pair counts its spatial conv (at the "
    "input's frame count) and its temporal conv. Batch norm (foldable into the convs), ReLU, the "
    "residual additions, the input normalisation and the global pooling are not counted.")


def r2plus1d_stage_macs(height: int, width: int, frames: int = 16, num_classes: int = 400,
                        blocks: tuple[int, ...] = (2, 2, 2, 2)) -> dict[str, int]:
    """Multiply-adds of one clip (batch 1) per stage, following models/r2plus1d/model.py."""
    t, h, w = frames, down_size(height, 2), down_size(width, 2)
    c0 = WIDTHS[0]
    macs = {"stem": t * h * w * STEM_MID * 3 * 7 * 7 + t * h * w * c0 * STEM_MID * 3}

    def pair(cin, cout, mid, stride, t, h, w):
        """A (2+1)D pair on a (t, h, w) input; returns its MACs and its output size."""
        ho, wo, to = down_size(h, stride), down_size(w, stride), down_size(t, stride)
        spatial = t * ho * wo * mid * cin * 9  # 1x3x3, strided in H and W only
        temporal = to * ho * wo * cout * mid * 3  # 3x1x1, strided in T
        return spatial + temporal, (to, ho, wo)

    cin = c0
    for i, (cout, n) in enumerate(zip(WIDTHS, blocks)):
        total = 0
        for b in range(n):
            stride = 2 if i > 0 and b == 0 else 1
            block_in = cin if b == 0 else cout
            mid = mid_channels(block_in, cout)
            m1, (to, ho, wo) = pair(block_in, cout, mid, stride, t, h, w)
            m2, _ = pair(cout, cout, mid, 1, to, ho, wo)
            total += m1 + m2
            if stride != 1 or block_in != cout:
                total += to * ho * wo * cout * block_in  # 1x1x1 projection of the shortcut
            t, h, w = to, ho, wo
        macs[f"layer{i + 1}"] = total
        cin = cout
    macs["head"] = WIDTHS[-1] * num_classes
    return macs


def r2plus1d_macs(height: int, width: int, frames: int = 16, num_classes: int = 400) -> int:
    """Multiply-adds of one R(2+1)D-18 forward pass over one clip (batch 1)."""
    return sum(r2plus1d_stage_macs(height, width, frames, num_classes).values())
