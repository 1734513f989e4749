"""Which clip frame sizes a run takes: at most `videos.max_pixels`, and at least what the model can
take. A clip outside these fails its own request, found by probing before anything is decoded;
slot pools and runners are sized only for clips inside them, so one oversized clip can neither
exhaust a decode worker nor make every runner allocate for it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.errors import VideoError

if TYPE_CHECKING:  # PyAV is imported where clips are probed, not with the config
    from pipeline.media.probe import VideoInfo


def model_min_side(model_name: str) -> int:
    """The smallest frame height and width the model computes on."""
    # torch comes with the model: imported where a limit is first needed, not with the config.
    from models.registry import model_class

    return model_class(model_name).min_size


@dataclass(frozen=True)
class FrameLimits:
    max_pixels: int
    min_side: int
    model_name: str
    resized: bool  # frames are resized to model.resolution: the model never sees a clip's own size

    @classmethod
    def of(cls, cfg) -> "FrameLimits":
        return cls(cfg.videos.max_pixels, model_min_side(cfg.model.name), cfg.model.name,
                   cfg.model.resolution is not None)

    def problem(self, width: int, height: int) -> str | None:
        """Why a clip of width x height cannot be served, or None."""
        if width * height > self.max_pixels:
            return (f"frames of {width}x{height} are over videos.max_pixels "
                    f"({width * height} > {self.max_pixels} pixels)")
        if not self.resized and min(width, height) < self.min_side:
            return (f"frames of {width}x{height} are smaller than the {self.model_name} model takes "
                    f"(at least {self.min_side}x{self.min_side})")
        return None

    def check(self, path) -> "VideoInfo":
        """The clip's description; VideoError naming it when it is unreadable or out of limits."""
        # PyAV loads only where clips are probed: the training command imports the config
        # package on machines without it.
        from pipeline.media.probe import probe

        info = probe(path)
        problem = self.problem(info.width, info.height)
        if problem:
            raise VideoError(path, problem)
        return info
