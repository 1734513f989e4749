"""R(2+1)D-18 as a served model: a request of T frames is T/16 consecutive, non-overlapping
clips of 16 frames (T must be a multiple of 16: a config with another frames_per_request is
refused, so no frame is silently dropped), frames brought to 112x112 unless the config says
model.resolution, each clip classified into 400 classes. Saved outputs are JSON: per clip the
top-1 and top-5 classes (indices of the weights' label list) with their softmax probabilities."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from models.base import ServedModel
from models.r2plus1d import checkpoint as ckpt
from models.r2plus1d.flops import FLOP_CONVENTION, r2plus1d_stage_macs
from models.r2plus1d.model import (
    CLIP_FRAMES,
    CLIP_SIZE,
    NUM_CLASSES,
    R2Plus1D,
    R2Plus1DConfig,
)

TOP_K = 5


@dataclass
class R2Plus1DServed(ServedModel):
    num_classes: int = NUM_CLASSES

    name = "r2plus1d"
    title = "R(2+1)D-18"
    network = R2Plus1D
    frames_per_row = CLIP_FRAMES
    row_name = "clip"
    output_unit = "clips"
    output_kind = "scores"
    input_size = CLIP_SIZE
    min_size = 1
    flop_convention = FLOP_CONVENTION

    @classmethod
    def from_config(cls, model_cfg) -> "R2Plus1DServed":
        return cls()

    @property
    def config(self) -> R2Plus1DConfig:
        return R2Plus1DConfig(num_classes=self.num_classes)

    def describe(self) -> str:
        return (f"R(2+1)D-18 action recognition, {self.num_classes} classes, clips of "
                f"{CLIP_FRAMES} frames")

    def run_info(self) -> dict:
        return {**super().run_info(), "classes": self.num_classes}

    # ---- requests -----------------------------------------------------------------------------

    def check_request(self, frames: int) -> str | None:
        if frames < CLIP_FRAMES or frames % CLIP_FRAMES:
            return (f"must be a multiple of {CLIP_FRAMES}: R(2+1)D-18 classifies clips of "
                    f"{CLIP_FRAMES} frames (a request of 16k frames is k clips); got {frames}")
        return None

    def rows_per_request(self, frames: int) -> int:
        return frames // CLIP_FRAMES

    def make_rows(self, frames: torch.Tensor) -> torch.Tensor:
        """(T, 3, H, W) -> (T/16, 3, 16, H, W): consecutive clips, one gather-free view."""
        if frames.dim() != 4 or frames.shape[0] % CLIP_FRAMES or frames.shape[0] == 0:
            raise ValueError(f"expected (16k, 3, H, W) frames, got {tuple(frames.shape)}")
        return frames.unflatten(0, (-1, CLIP_FRAMES)).transpose(1, 2)

    def row_shape(self, height: int, width: int) -> tuple[int, ...]:
        return (3, CLIP_FRAMES, height, width)

    def outputs_per_request(self, frames: int) -> int:
        return frames // CLIP_FRAMES

    @property
    def outputs_per_row(self) -> int:
        return 1

    def stage_macs(self, height: int, width: int) -> dict[str, int]:
        return r2plus1d_stage_macs(height, width, CLIP_FRAMES, self.num_classes)

    # ---- weights ------------------------------------------------------------------------------

    def load(self, device="cpu", checkpoint=None, seed: int | None = None,
             trust_checkpoint: bool = False) -> R2Plus1D:
        return ckpt.build_model(self.config, checkpoint, device, seed, trust_checkpoint)

    def check_checkpoint(self, path, trust_checkpoint: bool = False) -> None:
        ckpt.check_checkpoint(path, self.config, trust_checkpoint)

    def save_checkpoint(self, model: R2Plus1D, path) -> Path:
        return ckpt.save_checkpoint(model, path)

    # ---- outputs ------------------------------------------------------------------------------

    def save_output(self, out: torch.Tensor, video: str, frames: int, stem: Path) -> Path:
        path = stem.with_name(f"{stem.name}-{Path(video).stem}.json")
        path.write_text(json.dumps(top_classes(out, video), indent=1) + "\n")
        return path


def top_classes(scores: torch.Tensor, video: str) -> dict:
    """Per clip of one request: top-1 and top-k classes with softmax probabilities."""
    probs = scores.float().softmax(dim=-1)
    p, idx = probs.topk(min(TOP_K, probs.shape[-1]), dim=-1)
    clips = [{"clip": i, "first_frame": i * CLIP_FRAMES, "top1": int(idx[i, 0]),
              f"top{p.shape[-1]}": [{"class": int(c), "p": round(float(q), 6)}
                                    for c, q in zip(idx[i], p[i])]}
             for i in range(probs.shape[0])]
    return {"video": video, "model": "r2plus1d", "classes": probs.shape[-1], "clips": clips}
