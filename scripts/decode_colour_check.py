"""Where do the decoders disagree? Decode generated clips (known true frames) with every backend
this machine has and print, per backend, the mean signed difference against the true frames in
RGB grey levels and in the stream's YCbCr code values (8-bit, limited range).

    python scripts/decode_colour_check.py [--device cuda:0] [--size 1280x720]
"""
import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.media.colour import rgb_to_yuv_matrix  # noqa: E402
from pipeline.media.decode import FrameDecoder  # noqa: E402
from pipeline.media.probe import probe  # noqa: E402
from pipeline.media.synthetic import truth_path, write_clip  # noqa: E402


def ycc_codes(rgb: torch.Tensor, matrix: str) -> torch.Tensor:
    """(T,3,H,W) RGB in [0,1] -> mean Y, Cb, Cr in 8-bit limited-range code values."""
    m = rgb_to_yuv_matrix(matrix).to(rgb.device, torch.float32)
    ycc = torch.einsum("ij,tjhw->tihw", m, rgb)
    return torch.stack([16 + 219 * ycc[:, 0], 128 + 224 * ycc[:, 1], 128 + 224 * ycc[:, 2]], 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", default="1280x720")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    backends = ["pyav", "dali-cpu"] + (["dali-gpu"] if args.device.startswith("cuda") else [])
    with tempfile.TemporaryDirectory() as tmp:
        for codec in ("h264", "vp9"):
            clip = write_clip(Path(tmp) / f"c.{'mp4' if codec == 'h264' else 'webm'}", width=w,
                              height=h, frames=6, codec=codec, seed=3, truth_factor=1, crf=4)
            truth = torch.from_numpy(np.load(truth_path(clip))["frames"]).permute(0, 3, 1, 2)
            truth = truth.float().div(255).to(args.device)
            matrix = probe(clip).colour.matrix
            for backend in backends:
                try:
                    out = FrameDecoder(args.device, backend=backend).decode(clip)
                except Exception as exc:  # a backend this build or codec lacks
                    print(f"{codec:5s} {backend:9s} unavailable: {str(exc)[:90]}")
                    continue
                d_rgb = ((out - truth) * 255).mean(dim=(0, 2, 3)).tolist()
                d_ycc = (ycc_codes(out, matrix) - ycc_codes(truth, matrix)).mean(dim=(0, 2, 3)).tolist()
                print(f"{codec:5s} {backend:9s} RGB bias " + " ".join(f"{v:+.2f}" for v in d_rgb)
                      + "   YCbCr bias " + " ".join(f"{v:+.2f}" for v in d_ycc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
