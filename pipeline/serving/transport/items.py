"""What travels through the queues: small, picklable descriptions, never tensors."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Request:
    """One client request: a clip and how many of its frames to interpolate."""

    request_id: int
    video: str
    frames: int
    warmup: bool
    scheduled: float  # clock.now() time the client was due to issue it
    issued: float = 0.0
    t_put: float = 0.0  # when it entered the decode queue
    # A stream's request is its next segment: None for a clip request (segment 0).
    stream_id: int | None = None
    segment: int = 0


@dataclass
class Part:
    """A request's rows inside a batched slot."""

    request_id: int
    start: int
    rows: int
    video: str
    frames: int
    stream_id: int | None = None  # carried from the Request: rows of one stream, in order
    segment: int = 0
    position: int = 0  # the stream's frame the rows start at (a clip's: 0), for truth checks


@dataclass
class Item:
    """A filled slot of a producer's pool, handed to the next step."""

    pool_id: str
    slot: int
    rows: int
    parts: list[Part]
    size: tuple[int, int]  # (H, W) of the unpadded frames
    layout: dict = field(default_factory=dict)  # name -> (shape, stride) of the slot's tensors
    t_put: float = 0.0
    # Change-based inference between split steps: the tile plan of the slot's windows
    # (pipeline/serving/change_step.py: PlanMeta); None otherwise.
    change: object = None

    @property
    def stream_ids(self) -> list[int | None]:
        """The stream of each part (None for a clip request), in the slot's row order."""
        return [p.stream_id for p in self.parts]
