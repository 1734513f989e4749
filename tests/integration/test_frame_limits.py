"""A clip over `videos.max_pixels`, or smaller than the model takes, fails its own request in a real
run on the CPU (real clips, real decode worker, real FLAVR at native resolution), and the pools
and runners are sized only for the clips within the limits."""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import config_from_dict
from pipeline.media.synthetic import write_clip
from pipeline.serving.orchestrator import RunOptions, run


def test_an_oversized_and_a_too_small_clip_fail_alone_and_size_nothing(tmp_path):
    folder = tmp_path / "clips"
    # 8-frame VP9 clips of a few kB. 64x64 is over the cap set below (40x40 = 1600 pixels), 6x6
    # under FLAVR's 8x8; listed first so that no warm-up or pool may be sized from them.
    big, tiny, ok_a, ok_b = (
        write_clip(folder / name, width=w, height=h, frames=8, fps=24, codec="vp9", seed=i)
        for i, (name, w, h) in enumerate([("big.webm", 64, 64), ("tiny.webm", 6, 6),
                                          ("a.webm", 32, 32), ("b.webm", 32, 32)]))
    assert all(p.stat().st_size < 20_000 for p in (big, tiny, ok_a, ok_b))
    cfg = config_from_dict({
        "name": "limits", "device": "cpu",
        "videos": {"paths": [str(p) for p in (big, tiny, ok_a, ok_b)], "max_pixels": 40 * 40},
        "frames_per_request": 4,
        "model": {"factor": 2, "precision": "fp32"},  # native resolution: sized from the clips
        "pipeline": [{"name": "decode", "kind": "decode", "gpus": [0]},
                     {"name": "flavr", "kind": "model", "stages": ["stem", "head"], "gpus": [0]}]})
    opts = RunOptions(mean_interval_ms=0, videos=8, warmup=0, queue_size=16, progress=False,
                      cpu_threads=1, logs_root=str(tmp_path / "logs"), start_timeout_s=240,
                      stall_timeout_s=120)
    result = run(cfg, opts)

    assert result.error is None, result.error
    status = {}
    for row in result.rows:
        status.setdefault(Path(row["video"]).name, set()).add((row["status"], row["error"] or ""))
    assert {s for s, _ in status["a.webm"] | status["b.webm"]} == {"ok"}
    [(state, reason)] = status["big.webm"]
    assert state == "error" and "big.webm" in reason
    assert "frames of 64x64 are over videos.max_pixels (4096 > 1600 pixels)" in reason
    [(state, reason)] = status["tiny.webm"]
    assert state == "error" and "tiny.webm" in reason
    assert "frames of 6x6 are smaller than the flavr model takes (at least 8x8)" in reason
    # The runners and pools were sized for the 32x32 clips only.
    assert json.loads((result.run_dir / "run.json").read_text())["frame_sizes"] == [[32, 32]]
    assert any("clips that will fail their requests" in n for n in result.notices)
