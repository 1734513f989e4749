"""FLAVR's work, counted by arithmetic: multiply-adds per stage of one 4-frame window."""
from __future__ import annotations

from models.flavr.model import N_INPUTS, WIDTHS, padded_size

FLOP_CONVENTION = (
    "MACs are multiply-adds of every Conv3d/ConvTranspose3d/Conv2d, FLOP = 2 * MACs. Convolutions "
    "count every output position of the padded frame (H, W rounded up to a multiple of 8) times the "
    "full kernel, zero padding included, as the GPU computes them. Transposed convolutions count "
    "each input position times kernel taps times output channels (the products actually formed); "
    "counting them on the output side over the zero-inserted grid would give 1.58x more in total. "
    "The gates' 1x1x1 convs on pooled vectors are included; pointwise ops, pooling and padding are not.")


def flavr_stage_macs(height: int, width: int, factor: int = 2) -> dict[str, int]:
    """Multiply-adds of one window (batch 1) per stage, following models/flavr/model.py layer by layer."""
    hp, wp = padded_size(height, width)
    t = N_INPUTS
    c0, c1, c2, c3 = WIDTHS
    # positions (T * H * W) at full, 1/2, 1/4 and 1/8 of the padded resolution
    p1, p2, p4, p8 = (t * (hp // d) * (wp // d) for d in (1, 2, 4, 8))
    k3 = 3 * 3 * 3
    kup = 3 * 4 * 4  # ConvTranspose3d kernel (3, 4, 4)

    def block(cin: int, cout: int, stride: int, p_out: int) -> int:
        macs = p_out * cout * cin * k3 + p_out * cout * cout * k3  # conv1, conv2
        macs += cout * cout  # gate: 1x1x1 conv on the (C, 1, 1, 1) mean
        if stride != 1 or cin != cout:
            macs += p_out * cout * cin  # 1x1x1 projection of the shortcut
        return macs

    def layer(cin: int, cout: int, stride: int, p_out: int) -> int:
        return block(cin, cout, stride, p_out) + block(cout, cout, 1, p_out)

    return {
        "stem": p2 * c0 * 3 * (3 * 7 * 7),
        "layer1": layer(c0, c0, 1, p2),
        "layer2": layer(c0, c1, 2, p4),
        "layer3": layer(c1, c2, 2, p8),
        "layer4": layer(c2, c3, 1, p8),
        "dec0": p8 * c2 * c3 * k3 + c2 * c2,                 # conv 512 -> 256 at 1/8
        "dec1": p8 * (2 * c2) * c1 * kup + c1 * c1,          # upconv 512 -> 128, 1/8 -> 1/4
        "dec2": p4 * (2 * c1) * c0 * kup + c0 * c0,          # upconv 256 -> 64, 1/4 -> 1/2
        "dec3": p2 * (2 * c0) * c0 * k3 + c0 * c0,           # conv 128 -> 64 at 1/2
        "dec4": p2 * (2 * c0) * c0 * kup + c0 * c0,          # upconv 128 -> 64, 1/2 -> 1
        # feature_fuse 1x1 (4*64 -> 64) and the 7x7 output conv (64 -> 3 per output frame)
        "head": hp * wp * (t * c0) * c0 + hp * wp * (3 * (factor - 1)) * c0 * 7 * 7,
    }


def flavr_macs(height: int, width: int, factor: int = 2) -> int:
    """Multiply-adds of one FLAVR forward pass over one window of 4 frames (batch 1)."""
    return sum(flavr_stage_macs(height, width, factor).values())
