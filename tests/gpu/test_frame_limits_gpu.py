"""On a GPU, with NVDEC decode: a clip over `videos.max_pixels`, or smaller than FLAVR takes, fails
its own request before it reaches the decoder, and the runners' pools are sized for the clips
within the limits only."""
import json
from pathlib import Path

import pytest
import torch

from pipeline.config import config_from_dict
from pipeline.media.synthetic import write_clip
from pipeline.serving.orchestrator import RunOptions, run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_out_of_limit_clips_fail_alone_on_the_gpu(tmp_path):
    folder = tmp_path / "clips"
    # H.264 goes to NVDEC. 256x256 is over the cap set below; 6x6 is under FLAVR's 8x8 (and
    # under NVDEC's own minimum, which must never be reached: the probe refuses it first).
    big, tiny, ok = (
        write_clip(folder / name, width=w, height=h, frames=8, fps=24, codec="h264", seed=i)
        for i, (name, w, h) in enumerate([("big.mp4", 256, 256), ("tiny.mp4", 6, 6),
                                          ("ok.mp4", 64, 64)]))
    cfg = config_from_dict({
        "name": "limits-gpu", "device": "cuda",
        "videos": {"paths": [str(p) for p in (big, tiny, ok)], "max_pixels": 128 * 128},
        "frames_per_request": 4,
        "model": {"factor": 2, "precision": "bf16"},  # native resolution: sized from the clips
        "pipeline": [{"name": "decode", "kind": "decode", "gpus": [0]},
                     {"name": "flavr", "kind": "model", "stages": ["stem", "head"], "gpus": [0]}]})
    opts = RunOptions(mean_interval_ms=0, videos=6, warmup=0, progress=False, mps="off",
                      logs_root=str(tmp_path / "logs"), start_timeout_s=300, stall_timeout_s=120)
    result = run(cfg, opts)

    assert result.error is None, result.error
    by_clip = {}
    for row in result.rows:
        by_clip.setdefault(Path(row["video"]).name, []).append(row)
    assert {r["status"] for r in by_clip["ok.mp4"]} == {"ok"}
    assert all(r["status"] == "error" and "over videos.max_pixels" in r["error"]
               for r in by_clip["big.mp4"])
    assert all(r["status"] == "error" and "smaller than the flavr model takes" in r["error"]
               for r in by_clip["tiny.mp4"])
    assert {r["decode.device"] for r in by_clip["ok.mp4"]} == {"cuda:0"}
    assert json.loads((result.run_dir / "run.json").read_text())["frame_sizes"] == [[64, 64]]
