"""FLAVR model: architecture, stage splitting, precision switches (CPU, small frames)."""

import copy
from pathlib import Path

import pytest
import torch
from flavr_helpers import ODD, SMALL, frames, initial_state, random_model

from models.flavr.model import BOUNDARIES, FLAVR, STAGE_IO, STAGES, FLAVRConfig

REFERENCE_KEYS = Path(__file__).parents[1] / "data" / "flavr-released-keys.txt"


@pytest.fixture(scope="module")
def model2():
    return random_model(2)


def meta_model(factor):
    with torch.device("meta"):
        return FLAVR(FLAVRConfig(factor))


# ---- hyper-parameters and architecture ---------------------------------------------------------

@pytest.mark.parametrize("factor", [0, 1, 3, 16])
def test_config_rejects_unsupported_factor(factor):
    with pytest.raises(ValueError, match="factor must be 2, 4 or 8"):
        FLAVRConfig(factor)


@pytest.mark.parametrize("factor, params", [(2, 42_061_571), (4, 42_084_297), (8, 42_121_941)])
def test_parameter_count_matches_released_model(factor, params):
    assert sum(p.numel() for p in meta_model(factor).parameters()) == params


def test_2x_state_dict_has_the_released_names_and_shapes():
    if not REFERENCE_KEYS.is_file():
        pytest.skip(f"reference key list not found at {REFERENCE_KEYS}")
    reference = []
    for line in REFERENCE_KEYS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, shape = line.split(" ", 1)
            reference.append((name.removeprefix("module."), [int(n) for n in shape.strip("[]").split(",")]))
    ours = [(k, list(v.shape)) for k, v in meta_model(2).state_dict().items()]
    assert ours == reference


@pytest.mark.parametrize("factor", [4, 8])
def test_4x_and_8x_add_biases_to_stem_and_block_convs(factor):
    extra = set(meta_model(factor).state_dict()) - set(meta_model(2).state_dict())
    assert len(meta_model(factor).state_dict()) == 76
    assert len(extra) == 17
    assert "encoder.stem.0.bias" in extra
    assert all(k.endswith(("conv1.0.bias", "conv2.0.bias")) for k in extra - {"encoder.stem.0.bias"})


def test_encoder_bias_is_decided_per_instance():
    with torch.device("meta"):
        with_bias, without = FLAVR(FLAVRConfig(2, encoder_bias=True)), FLAVR(FLAVRConfig(2))
    assert with_bias.encoder["stem"][0].bias is not None
    assert without.encoder["stem"][0].bias is None


# ---- forward ------------------------------------------------------------------------------------

@pytest.mark.parametrize("factor", [2, 4, 8])
@pytest.mark.parametrize("size", [(32, 32), ODD])
def test_output_is_factor_minus_one_float32_frames_at_input_size(factor, size):
    out = random_model(factor)(frames(batch=2, size=size))
    assert out.shape == (2, factor - 1, 3, *size)
    assert out.dtype == torch.float32


def test_rejects_frames_that_are_not_four_rgb_frames(model2):
    with pytest.raises(ValueError, match=r"\(B, 3, 4, H, W\)"):
        model2(torch.rand(1, 3, 5, *SMALL))


def test_samples_in_a_batch_do_not_affect_each_other(model2):
    a, b = frames(seed=1), frames(seed=2) * 0.5 + 0.3  # different colour means
    together = model2(torch.cat([a, b]))
    torch.testing.assert_close(together, torch.cat([model2(a), model2(b)]), rtol=1e-5, atol=1e-5)


def test_a_colour_offset_shifts_every_output_frame_by_that_offset(model2):
    # The network sees frames minus their per-channel mean, so adding a constant colour to the
    # input moves the output by exactly that colour (up to float rounding).
    x = frames() * 0.5
    offset = torch.tensor([0.1, 0.3, -0.2]).view(1, 3, 1, 1, 1)
    shifted = model2(x + offset)
    torch.testing.assert_close(shifted, model2(x) + offset.view(1, 1, 3, 1, 1), rtol=0, atol=1e-5)


def test_forward_runs_on_the_meta_device_so_it_never_reads_values_on_the_host():
    # .item(), .tolist() or branching on tensor values would fail on meta tensors.
    model = meta_model(4)
    out = model(torch.empty(2, 3, 4, 1080, 1920, device="meta"))
    assert out.shape == (2, 3, 3, 1080, 1920) and out.device.type == "meta"


# ---- stages -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def whole(model2):
    x = frames()
    return x, model2(x)


@pytest.mark.parametrize("cut", range(len(STAGES) - 1), ids=lambda i: f"after_{STAGES[i]}")
def test_two_steps_split_at_any_boundary_equal_the_whole_forward(cut, model2, whole):
    x, expected = whole
    mid = model2.run_stages(initial_state(x), STAGES[0], STAGES[cut])
    out = model2.run_stages(mid, STAGES[cut + 1], STAGES[-1])["out"]
    assert torch.equal(out, expected)


@pytest.mark.parametrize("ranges", [
    [("stem", "layer4"), ("dec0", "head")],
    [("stem", "layer2"), ("layer3", "dec1"), ("dec2", "head")],
    [(s, s) for s in STAGES],
], ids=["encoder|decoder", "three_steps", "every_stage_alone"])
def test_several_steps_in_sequence_equal_the_whole_forward(ranges, model2, whole):
    x, expected = whole
    state = initial_state(x)
    for first, last in ranges:
        state = model2.run_stages(state, first, last)
    assert torch.equal(state["out"], expected)


@pytest.mark.parametrize("first,last", [("stem", "layer4"), ("dec0", "head"), ("stem", "head"),
                                        ("layer2", "dec1"), ("layer3", "layer3")])
def test_output_groups_cover_the_hand_over_once_each_group_final_when_published(first, last):
    groups = FLAVR.output_groups(first, last)
    names = [n for _, ns in groups for n in ns]
    assert sorted(names) == sorted(FLAVR.needed_after(last))
    stages = [s for s, _ in groups]
    assert stages == sorted(stages, key=STAGES.index) and stages[-1] == last
    j = STAGES.index(last)
    for stage, ns in groups:
        later = STAGES[STAGES.index(stage) + 1: j + 1]
        written_later = {t for s in later for t in STAGE_IO[s][1]}
        assert not written_later & set(ns), (stage, ns)


def test_an_encoder_step_hands_each_skip_on_as_soon_as_its_stage_ran():
    assert FLAVR.output_groups("stem", "layer4") == [
        ("stem", ("mean", "x0")), ("layer1", ("x1",)), ("layer2", ("x2",)),
        ("layer3", ("x3",)), ("layer4", ("x4",))]
    assert FLAVR.output_groups("dec0", "head") == [("head", ("out",))]


def test_a_model_step_publishes_its_groups_in_order_and_they_equal_the_whole_forward(whole):
    from pipeline.config import ModelConfig, StepConfig
    from pipeline.serving.steps import ModelStep

    x, expected = whole
    steps = [ModelStep(StepConfig(name=n, kind="model", gpus=[0], stages=r), ModelConfig(),
                       torch.device("cpu")) for n, r in (("enc", ("stem", "layer4")),
                                                         ("dec", ("dec0", "head")))]
    for step in steps:
        step.setup()
    published = []
    steps[0].run({"frames": x}, tuple(x.shape[-2:]), 1,
                 lambda g, t: published.append((g, {k: v.clone() for k, v in t.items()})))
    assert [g for g, _ in published] == [0, 1, 2, 3, 4]
    assert [tuple(t) for _, t in published] == steps[0].output_groups()
    handed = {k: v for _, t in published for k, v in t.items()}
    out = []
    steps[1].run(handed, tuple(x.shape[-2:]), 1, lambda g, t: out.append(t["out"]))
    assert len(out) == 1 and torch.equal(out[0], expected)


def test_without_early_handoff_a_step_publishes_everything_once_at_the_end(whole):
    from pipeline.config import ModelConfig, StepConfig
    from pipeline.serving.steps import ModelStep

    x, _ = whole
    step = ModelStep(StepConfig(name="enc", kind="model", gpus=[0], stages=("stem", "layer4")),
                     ModelConfig(early_handoff=False), torch.device("cpu"))
    step.setup()
    published = []
    step.run({"frames": x}, tuple(x.shape[-2:]), 1, lambda g, t: published.append((g, set(t))))
    assert published == [(0, set(FLAVR.needed_after("layer4")))]


def test_each_stage_hands_over_only_what_later_stages_read(model2):
    state = initial_state(frames())
    for stage in STAGES:
        state = model2.run_stages(state, stage, stage)
        assert set(state) == set(FLAVR.needed_after(stage)) | {"size"}, stage
        assert all(isinstance(v, torch.Tensor) for k, v in state.items() if k != "size")
    assert FLAVR.needed_after("layer4") == ("mean", "x0", "x1", "x2", "x3", "x4")
    assert FLAVR.needed_after("dec3") == ("mean", "d0")
    assert FLAVR.needed_after("head") == ("out",)


def test_a_stage_needs_what_the_previous_stage_handed_over():
    assert FLAVR.needed_by("stem") == ("frames",)
    for before, stage in zip(STAGES, STAGES[1:]):
        assert FLAVR.needed_by(stage) == FLAVR.needed_after(before)


def test_a_state_missing_a_needed_tensor_is_refused_by_name(model2):
    state = model2.run_stages(initial_state(frames()), "stem", "layer1")
    del state["x0"]
    with pytest.raises(KeyError, match="x0"):
        model2.run_stages(state, "layer2", "head")


def test_unknown_or_reversed_stage_ranges_are_refused(model2):
    with pytest.raises(ValueError, match="unknown stage"):
        model2.run_stages(initial_state(frames()), "stem", "layer5")
    with pytest.raises(ValueError, match="comes after"):
        model2.run_stages(initial_state(frames()), "dec0", "layer4")


def actual_state_shapes(model, x):
    shapes = {"input": {"frames": (tuple(x.shape), x.dtype)}}
    state = initial_state(x)
    for stage in STAGES:
        state = model.run_stages(state, stage, stage)
        shapes[stage] = {k: (tuple(v.shape), v.dtype) for k, v in state.items() if k != "size"}
    return shapes


def test_state_shapes_predicts_every_boundary_at_an_odd_size(model2):
    assert list(model2.state_shapes(2, *ODD)) == list(BOUNDARIES)
    assert model2.state_shapes(2, *ODD) == actual_state_shapes(model2, frames(batch=2, size=ODD))


# ---- precision and layout switches --------------------------------------------------------------

@pytest.fixture(scope="module")
def bf16_model(model2):
    return copy.deepcopy(model2).for_inference("bf16")


def test_for_inference_casts_weights_and_freezes_them(bf16_model):
    assert not bf16_model.training
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in bf16_model.parameters())


def test_state_shapes_follow_the_model_precision(bf16_model):
    predicted = bf16_model.state_shapes(1, *SMALL)
    assert predicted == actual_state_shapes(bf16_model, frames())
    assert predicted["layer4"]["x4"][1] == torch.bfloat16
    assert predicted["stem"]["mean"][1] == torch.float32 and predicted["head"]["out"][1] == torch.float32


def test_bf16_output_is_float32_and_close_to_fp32(model2, bf16_model):
    x = frames()
    ref, out = model2(x), bf16_model(x)
    assert out.dtype == torch.float32
    assert ((out - ref).norm() / ref.norm()).item() < 1e-2
    # The colour mean is added in fp32 and dominates the output; the network's own contribution
    # (output minus mean) is where bf16 rounding shows, so hold that to the same bound.
    mean = x.mean(dim=(2, 3, 4))[:, None, :, None, None]
    assert ((out - ref).norm() / (ref - mean).norm()).item() < 1e-2


def test_fp16_activations_are_fp16_and_mean_and_output_stay_fp32():
    shapes = meta_model(2).for_inference("fp16").state_shapes(1, *SMALL)
    assert {dtype for _, dtype in shapes["dec0"].values()} == {torch.float16, torch.float32}
    assert shapes["dec0"]["mean"][1] == torch.float32 and shapes["head"]["out"][1] == torch.float32


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        meta_model(2).for_inference("int8")


def test_channels_last_changes_layout_not_results(model2):
    cl = copy.deepcopy(model2).for_inference("fp32", channels_last=True)
    assert cl.encoder["layer1"][0].conv1[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert cl.feature_fuse.conv[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = frames()
    out = cl(x)
    assert out.is_contiguous()
    torch.testing.assert_close(out, model2(x), rtol=1e-4, atol=1e-5)
