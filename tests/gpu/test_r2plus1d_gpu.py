"""R(2+1)D-18 on a CUDA GPU: bf16, channels-last, split in two stages, with no host sync."""
import copy

import pytest
import torch
from r2plus1d_helpers import clips, initial_state, random_model


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_channels_last_runs_split_in_two_without_host_synchronisation():
    model = copy.deepcopy(random_model()).to("cuda").for_inference("bf16", channels_last=True)
    x = clips(batch=4, size=(112, 112))
    state = initial_state(x.cuda())
    model.run_stages(state)  # warm-up: cuDNN heuristics and allocator growth happen here
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation in forward now raises
    try:
        whole = model(state["frames"])
        front = model.run_stages(state, "stem", "layer1")
        split = model.run_stages(front, "layer2", "head")["out"]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert front["x1"].dtype == torch.bfloat16
    assert front["x1"].shape == model.state_shapes(4, 112, 112)["layer1"]["x1"][0]
    assert whole.shape == (4, 400) and whole.dtype == torch.float32
    torch.testing.assert_close(split, whole, rtol=0, atol=0)
    ref = random_model()(x)  # fp32 on the CPU
    assert ((whole.cpu() - ref).norm() / ref.norm()).item() < 2e-2


@pytest.mark.gpu2
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpus_split_in_two_stages_equals_one_gpu():
    x = clips(batch=2, size=(112, 112))
    gpu0 = copy.deepcopy(random_model()).to("cuda:0").for_inference("bf16", channels_last=True)
    gpu1 = copy.deepcopy(random_model()).to("cuda:1").for_inference("bf16", channels_last=True)
    with torch.inference_mode():
        whole = gpu0(x.to("cuda:0"))
        front = gpu0.run_stages(initial_state(x.to("cuda:0")), "stem", "layer1")
        handed = {"x1": front["x1"].to("cuda:1"), "size": front["size"]}
        split = gpu1.run_stages(handed, "layer2", "head")["out"]
    torch.testing.assert_close(split.cpu(), whole.cpu(), rtol=1e-2, atol=1e-2)
