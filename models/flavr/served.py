"""FLAVR as a served model: a request of T frames is T-1 sliding windows of 4 (the boundary
windows repeat the first/last frame), each window yields factor-1 new frames, and the output is
the clip with the new frames between the old ones, (T-1)*factor+1 frames. Any frame size runs
(padded inside the model to a multiple of 8)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from models.base import WEIGHTS_DIR, ServedModel
from models.flavr import checkpoint as ckpt
from models.flavr.flops import FLOP_CONVENTION, flavr_stage_macs
from models.flavr.model import FLAVR, N_INPUTS, PAD_MULTIPLE, FLAVRConfig
from models.flavr.windows import (
    interleave_tensor,
    make_windows,
    output_frame_count,
    segment_window_indices,
)


@dataclass
class FLAVRServed(ServedModel):
    factor: int = 2

    name = "flavr"
    title = "FLAVR"
    network = FLAVR
    frames_per_row = N_INPUTS
    row_name = "window"
    output_unit = "frames"
    output_kind = "frames"
    input_size = None  # each clip's own size unless the config says model.resolution
    min_size = PAD_MULTIPLE
    flop_convention = FLOP_CONVENTION
    # A segment's windows start at each of its frames: the one before it and the two after it
    # are read too (the gap after a segment's last frame needs frames of the next segment).
    stream_behind = 1
    stream_ahead = 2
    change_based = True

    def __post_init__(self):
        FLAVRConfig(self.factor)  # refuses a factor other than 2, 4 or 8

    @classmethod
    def from_config(cls, model_cfg) -> "FLAVRServed":
        return cls(factor=model_cfg.factor)

    @classmethod
    def from_checkpoint(cls, path, trust: bool = False) -> "FLAVRServed":
        return cls(factor=ckpt.infer_factor(ckpt.load_state(path, trust), str(path)))

    def describe(self) -> str:
        return f"FLAVR x{self.factor}"

    def run_info(self) -> dict:
        return {**super().run_info(), "factor": self.factor}

    def shipped_weights(self) -> Path | None:
        path = WEIGHTS_DIR / f"flavr-{self.factor}x.safetensors"
        return path if path.is_file() else None

    def random_weights_notice(self) -> str:
        return ("FLAVR runs with random weights, so timings are real but the interpolated frames "
                "are not meaningful (set model.checkpoint to a weights file"
                + ("" if self.factor == 2 else "; the project ships trained weights for factor 2 only")
                + ")")

    # ---- requests -----------------------------------------------------------------------------

    def check_request(self, frames: int) -> str | None:
        if frames < 2:
            return f"must be >= 2 (interpolation needs two frames), got {frames}"
        return None

    def rows_per_request(self, frames: int) -> int:
        return frames - 1

    def make_rows(self, frames: torch.Tensor) -> torch.Tensor:
        return make_windows(frames)

    def row_shape(self, height: int, width: int) -> tuple[int, ...]:
        return (3, N_INPUTS, height, width)

    # A running stream's segment of N frames is the N gaps that start at its frames: window g
    # interpolates between frames g and g+1, so the segment outputs each of its frames followed
    # by its factor-1 new frames (N*factor), and segments 0..k-1 output exactly the whole
    # video's frames 0..kN-1 with their new frames.
    def check_segment(self, frames: int) -> str | None:
        if frames < 1:
            return f"must be >= 1, got {frames}"
        return None

    def rows_per_segment(self, frames: int) -> int:
        return frames

    def outputs_per_segment(self, rows: int) -> int:
        return rows * self.factor

    def make_segment_rows(self, frames: torch.Tensor, behind: int, ahead: int) -> torch.Tensor:
        count = frames.shape[0] - behind - ahead
        return make_windows(frames, segment_window_indices(frames.shape[0], behind, count))

    def outputs_per_request(self, frames: int) -> int:
        return output_frame_count(frames, self.factor)

    @property
    def outputs_per_row(self) -> int:
        return self.factor - 1

    def stage_macs(self, height: int, width: int) -> dict[str, int]:
        return flavr_stage_macs(height, width, self.factor)

    # ---- weights ------------------------------------------------------------------------------

    def load(self, device="cpu", checkpoint=None, seed: int | None = None,
             trust_checkpoint: bool = False) -> FLAVR:
        return ckpt.build_model(self.factor, checkpoint, device, seed, trust_checkpoint)

    def check_checkpoint(self, path, trust_checkpoint: bool = False) -> None:
        ckpt.check_checkpoint(path, self.factor, trust_checkpoint)

    def save_checkpoint(self, model: FLAVR, path) -> Path:
        return ckpt.save_checkpoint(model, path)

    def change_runner(self, network: FLAVR, config):
        from models.flavr.change_based import ChangeBasedFLAVR

        return ChangeBasedFLAVR(network, config)

    # ---- outputs ------------------------------------------------------------------------------

    def save_output(self, out: torch.Tensor, video: str, frames: int, stem: Path) -> Path:
        """Interleave the clip's input frames with the new ones and encode them at factor x fps."""
        # Media I/O only where outputs are saved: the decoders are heavy to import.
        from pipeline.media.decode import FrameDecoder
        from pipeline.media.encode import VideoWriter
        from pipeline.media.probe import probe

        h, w = out.shape[-2:]
        inputs = FrameDecoder("cpu", resolution=(h, w)).decode(video, frames)
        path = stem.with_name(f"{stem.name}-{Path(video).stem}.mp4")
        with VideoWriter(path, probe(video).fps * self.factor, w, h) as writer:
            writer.write(interleave_tensor(inputs, out))
        return path
