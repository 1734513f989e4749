"""R(2+1)D-18: architecture, parameter and work counts, stage splitting, precision (CPU, small
clips)."""
import copy

import pytest
import torch
import torch.nn as nn
from r2plus1d_helpers import SMALL, clips, initial_state, random_model

from models.r2plus1d.flops import r2plus1d_macs, r2plus1d_stage_macs
from models.r2plus1d.model import MEAN, STAGES, STD, R2Plus1D, mid_channels


@pytest.fixture(scope="module")
def model():
    return random_model()


@pytest.fixture(scope="module")
def whole(model):
    x = clips(batch=2)
    return x, model(x)


def meta_model():
    with torch.device("meta"):
        return R2Plus1D()


# ---- architecture and counts -------------------------------------------------------------------

def hand_parameter_count(classes=400) -> int:
    """Derived from the paper's layout: every weight and batch-norm scale and shift, no biases."""
    def pair(cin, cout, mid):  # 1x3x3 conv, BN(mid), 3x1x1 conv
        return cin * mid * 9 + 2 * mid + mid * cout * 3

    def block(cin, cout, project):
        mid = mid_channels(cin, cout)
        n = pair(cin, cout, mid) + 2 * cout + pair(cout, cout, mid) + 2 * cout
        return n + (cin * cout + 2 * cout if project else 0)

    stem = 3 * 45 * 7 * 7 + 2 * 45 + 45 * 64 * 3 + 2 * 64
    layers = sum(block(cin, cout, cin != cout) + block(cout, cout, False)
                 for cin, cout in ((64, 64), (64, 128), (128, 256), (256, 512)))
    return stem + layers + 512 * classes + classes


def test_parameter_count_is_the_usual_31_5_million():
    counted = sum(p.numel() for p in meta_model().parameters())
    assert counted == hand_parameter_count() == 31_505_325


def test_mid_channels_keep_the_3d_convolutions_parameters():
    # floor(t d^2 Nin Nout / (d^2 Nin + t Nout)): the pair has at most the 3x3x3 conv's weights,
    # and one more mid channel would exceed them.
    assert [mid_channels(c, 2 * c if c < 512 else c) for c in (64, 128, 256, 512)] == [230, 460, 921, 1152]
    assert mid_channels(64, 64) == 144
    for cin, cout in ((64, 64), (64, 128), (256, 512)):
        m, full = mid_channels(cin, cout), 27 * cin * cout
        assert 9 * cin * m + 3 * m * cout <= full < 9 * cin * (m + 1) + 3 * (m + 1) * cout


def test_normalisation_constants_are_not_weights():
    keys = meta_model().state_dict().keys()
    assert not any("input_" in k for k in keys)
    assert "fc.weight" in keys and "layer4.1.conv2.1.running_var" in keys


def counted_macs(height, width) -> int:
    """Multiply-adds of every conv and of the fc that a real forward pass runs."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Linear):
            total += module.in_features * module.out_features
        else:  # each output position gathers cin * taps
            total += output[0].numel() * module.weight.shape[1] * module.weight[0, 0].numel()

    m = copy.deepcopy(random_model())
    for mod in m.modules():
        if isinstance(mod, (nn.Conv3d, nn.Linear)):
            mod.register_forward_hook(hook)
    with torch.no_grad():
        m(clips(size=(height, width)))
    return total


def test_macs_at_112_are_the_hand_count():
    # stem 16x56x56 positions: 45 x 3x1x7x7 spatial + 64 x 45x3 temporal
    stem = 16 * 56 * 56 * (45 * 147 + 64 * 45 * 3)
    # layer1: four (2+1)D pairs 64 -> 144 -> 64 at 16x56x56
    layer1 = 4 * 16 * 56 * 56 * (144 * 64 * 9 + 64 * 144 * 3)
    per_stage = r2plus1d_stage_macs(112, 112)
    assert per_stage["stem"] == stem == 765_434_880
    assert per_stage["layer1"] == layer1 == 22_196_256_768
    assert per_stage["head"] == 512 * 400
    assert r2plus1d_macs(112, 112) == 40_519_080_960  # 81.04 GFLOP per clip


@pytest.mark.parametrize("size", [SMALL, (33, 17)])
def test_macs_equal_what_a_forward_pass_runs(size):
    assert r2plus1d_macs(*size) == counted_macs(*size)


# ---- forward ------------------------------------------------------------------------------------

def test_output_is_400_float32_class_scores_per_clip(model):
    out = model(clips(batch=3))
    assert out.shape == (3, 400) and out.dtype == torch.float32


def test_a_112x112_clip_runs_on_the_meta_device_without_reading_values():
    out = meta_model()(torch.empty(2, 3, 16, 112, 112, device="meta"))
    assert out.shape == (2, 400)


def test_rejects_clips_that_are_not_16_rgb_frames(model):
    with pytest.raises(ValueError, match=r"\(B, 3, 16, H, W\)"):
        model(torch.rand(1, 3, 8, *SMALL))


def test_frames_are_normalised_inside_the_model_with_the_kinetics_statistics(model):
    mean = torch.tensor(MEAN).view(1, 3, 1, 1, 1).expand(1, 3, 16, *SMALL)
    std = torch.tensor(STD).view(1, 3, 1, 1, 1)
    assert model._normalise(mean).abs().max() < 1e-6
    torch.testing.assert_close(model._normalise(mean + std), torch.ones(1, 3, 16, *SMALL))


def test_samples_in_a_batch_do_not_affect_each_other(model):
    a, b = clips(seed=1), clips(seed=2)
    torch.testing.assert_close(model(torch.cat([a, b])), torch.cat([model(a), model(b)]),
                               rtol=1e-5, atol=1e-5)


# ---- stages -------------------------------------------------------------------------------------

@pytest.mark.parametrize("cut", range(len(STAGES) - 1), ids=lambda i: f"after_{STAGES[i]}")
def test_two_steps_split_at_any_boundary_equal_the_whole_forward(cut, model, whole):
    x, expected = whole
    mid = model.run_stages(initial_state(x), STAGES[0], STAGES[cut])
    assert set(mid) == {f"x{min(cut, 4)}", "size"}  # one activation crosses each boundary
    assert torch.equal(model.run_stages(mid, STAGES[cut + 1], STAGES[-1])["out"], expected)


def test_every_stage_alone_in_sequence_equals_the_whole_forward(model, whole):
    x, expected = whole
    state = initial_state(x)
    for stage in STAGES:
        state = model.run_stages(state, stage, stage)
    assert torch.equal(state["out"], expected)


def test_a_range_hands_on_its_one_output_once_its_last_stage_ran():
    assert R2Plus1D.output_groups("stem", "layer1") == [("layer1", ("x1",))]
    assert R2Plus1D.output_groups("layer2", "head") == [("head", ("out",))]


def actual_state_shapes(model, x):
    shapes = {"input": {"frames": (tuple(x.shape), x.dtype)}}
    state = initial_state(x)
    for stage in STAGES:
        state = model.run_stages(state, stage, stage)
        shapes[stage] = {k: (tuple(v.shape), v.dtype) for k, v in state.items() if k != "size"}
    return shapes


@pytest.mark.parametrize("size", [SMALL, (33, 17)])
def test_state_shapes_predicts_every_boundary(model, size):
    assert model.state_shapes(2, *size) == actual_state_shapes(model, clips(batch=2, size=size))


# ---- precision and layout -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def bf16_model(model):
    return copy.deepcopy(model).for_inference("bf16")


def test_bf16_keeps_the_normalisation_in_float32_and_outputs_float32(bf16_model):
    assert bf16_model.fc.weight.dtype == torch.bfloat16
    assert bf16_model.input_mean.dtype == torch.float32
    torch.testing.assert_close(bf16_model.input_mean.flatten(), torch.tensor(MEAN), rtol=0, atol=0)
    assert bf16_model.state_shapes(1, *SMALL)["layer2"]["x2"][1] == torch.bfloat16


def test_bf16_scores_are_close_to_fp32(model, bf16_model):
    x = clips(batch=2)
    ref, out = model(x), bf16_model(x)
    assert out.dtype == torch.float32
    assert ((out - ref).norm() / ref.norm()).item() < 2e-2


def test_channels_last_changes_layout_not_results(model, whole):
    cl = copy.deepcopy(model).for_inference("fp32", channels_last=True)
    assert cl.layer1[0].conv1[0][0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    x, expected = whole
    torch.testing.assert_close(cl(x), expected, rtol=1e-4, atol=1e-4)
