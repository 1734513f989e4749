"""How far a mode's outputs are from a strict fp32 reference on the same inputs.

Two kinds of output (ServedModel.output_kind): "frames", images in [0, 1] like the input
(FLAVR's new frames), judged by relative L2 and PSNR; "scores", class logits (R(2+1)D), judged
by relative L2 and by how often the top class agrees with the reference's."""
from __future__ import annotations

import copy
import math

import torch

from pipeline.bench.timing import cudnn_settings, free_memory
from pipeline.bench.workload import Study


def reference_outputs(study: Study, rows: torch.Tensor) -> torch.Tensor:
    """Strict fp32 (TF32 off), batch 1, contiguous: the yardstick for every mode's error."""
    model = copy.deepcopy(study.base).to(study.device).for_inference("fp32", channels_last=False)
    with cudnn_settings(benchmark=False, allow_tf32=False), torch.inference_mode():
        outs = [model(rows[i:i + 1].to(study.device)).cpu() for i in range(rows.shape[0])]
    del model
    free_memory(study.device)
    return torch.cat(outs)


def accuracy(kind: str, out: torch.Tensor, ref: torch.Tensor, rows: torch.Tensor) -> dict:
    """Error of `out` against the reference `ref` (same shapes, on the CPU) for inputs `rows`."""
    out, ref = out.double(), ref.double()
    diff = out - ref
    ref_norm = ref.norm().item()
    common = {"rel_l2": diff.norm().item() / ref_norm if ref_norm else None,
              "max_abs_err": diff.abs().max().item()}
    if kind == "scores":
        agree = (out.argmax(-1) == ref.argmax(-1)).double().mean().item()
        return {**common, "top1_agreement": agree}
    # FLAVR adds the input's colour mean back at the end, so ||ref|| is mostly that mean; also
    # say how large the error is next to the part the network itself produced.
    mean = rows.double().mean(dim=(2, 3, 4))[:, None, :, None, None]
    detail_norm = (ref - mean).norm().item()
    mse = (out.clamp(0, 1) - ref.clamp(0, 1)).pow(2).mean().item()
    return {**common,
            "rel_l2_detail": diff.norm().item() / detail_norm if detail_norm else None,
            "psnr_db": 10 * math.log10(1.0 / mse) if mse > 0 else None}  # None: identical
