"""FLAVR on a CUDA GPU: bf16, channels-last, split at a stage boundary, with no host sync."""
import copy

import pytest
import torch
from flavr_helpers import ODD, frames, initial_state, random_model


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_channels_last_runs_split_without_host_synchronisation():
    model = copy.deepcopy(random_model(4)).to("cuda").for_inference("bf16", channels_last=True)
    x = frames(batch=2, size=ODD)
    state = initial_state(x.cuda())
    model.run_stages(state)  # warm-up: cuDNN heuristics and allocator growth happen here
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation in forward now raises
    try:
        whole = model(state["frames"])
        split = model.run_stages(model.run_stages(state, "stem", "layer4"), "dec0", "head")["out"]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert whole.shape == (2, 3, 3, *ODD) and whole.dtype == torch.float32
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-6)
    ref = random_model(4)(x)
    assert ((whole.cpu() - ref).norm() / ref.norm()).item() < 1e-2
