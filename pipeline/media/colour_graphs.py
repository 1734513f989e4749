"""NV12 surfaces to RGB on a GPU in one launch: the conversion's kernels replayed from a CUDA graph.

For a clip request of the shipped configs (8 frames of 256x256) the conversion is about 18 small
element-wise kernels. On the GPU each takes microseconds; launching them from Python took
0.45-0.49 ms of a 3.0 ms clip decode on one H200, 0.08-0.09 ms as a graph (docs/results.md
section 9). So the kernels of `colour.nv12_to_rgb` are captured once per (frames, height, width,
colour) and replayed: the same kernels on the same data, so the same bits as running it eagerly,
which the CPU, large frames and `FLAVR_COLOUR_GRAPHS=off` keep.

A graph reads a fixed input buffer and writes a fixed output buffer: the surfaces are copied
into its input (the one copy out of the decoder's surfaces that is needed anyway) and the output
is cloned, so the frames handed back are the caller's to keep (a stream holds its last frames
across segments) while the next replay overwrites the buffer.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch

from pipeline.media.colour import nv12_to_rgb
from pipeline.media.phases import NO_PHASES, Phases
from pipeline.media.probe import Colour
from pipeline.switches import env_choice

GRAPHS_ENV = "FLAVR_COLOUR_GRAPHS"  # on (default) | off
# Graphs kept per converter, least recently used dropped first: a worker meets one shape per
# config (clip requests) or a few (a stream's first and last segments).
MAX_GRAPHS = 8
# Frames x height x width up to which a shape is graphed. Beyond it the launches are a small
# part of the work (720p: 0.7 of 11 ms) while a graph's memory pool, kept for the worker's
# life, grows with the frames (about four float copies of them).
MAX_PIXELS = 8 * 512 * 512


def graphs_wanted() -> bool:
    return env_choice(GRAPHS_ENV, ("on", "off")) == "on"


@dataclass
class _Graph:
    graph: "torch.cuda.CUDAGraph"
    nv12: torch.Tensor  # its input: (T, H + H/2, W) uint8
    rgb: torch.Tensor  # its output: (T, 3, H, W) float32


class NV12ToRGB:
    """Converts a list of NV12 surfaces (each (H + H/2, W) uint8 on `device`) to float32 RGB
    (T, 3, H, W) in [0, 1], with a captured graph where it pays and eagerly elsewhere."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.graphed = self.device.type == "cuda" and graphs_wanted()
        self._graphs: OrderedDict[tuple, _Graph] = OrderedDict()

    def __call__(self, surfaces: list[torch.Tensor], height: int, width: int, colour: Colour,
                 phases: Phases = NO_PHASES) -> torch.Tensor:
        return self.convert(len(surfaces), height, width, colour,
                            lambda nv12: torch.stack(surfaces, out=nv12), phases)

    def convert(self, frames: int, height: int, width: int, colour: Colour,
                fill: Callable[[torch.Tensor], None], phases: Phases = NO_PHASES) -> torch.Tensor:
        """`fill(nv12)` writes the frames into the (frames, H + H/2, W) uint8 buffer it is given
        (the graph's input, or a new one), on the device's current stream."""
        key = (frames, height, width, colour)
        graph = self._graph(key) if self._wants_graph(key) else None
        nv12 = graph.nv12 if graph is not None else torch.empty(
            (frames, height + height // 2, width), dtype=torch.uint8, device=self.device)
        fill(nv12)
        phases.mark("copy")
        if graph is None:
            return nv12_to_rgb(nv12, height, width, colour)
        graph.graph.replay()
        return graph.rgb.clone()

    @property
    def graphs(self) -> int:
        """How many shapes have a graph now."""
        return len(self._graphs)

    def _wants_graph(self, key: tuple) -> bool:
        frames, height, width, _ = key
        return self.graphed and frames * height * width <= MAX_PIXELS

    def _graph(self, key: tuple) -> _Graph | None:
        graph = self._graphs.get(key)
        if graph is not None:
            self._graphs.move_to_end(key)
            return graph
        try:
            graph = self._capture(*key)
        except RuntimeError as e:  # a driver or a context that cannot capture: eager from now on
            self.graphed = False
            warnings.warn(f"NV12 conversion runs without CUDA graphs on {self.device}: "
                          f"capturing one failed ({' '.join(str(e).split())[:200]})",
                          RuntimeWarning, stacklevel=3)
            return None
        self._graphs[key] = graph
        if len(self._graphs) > MAX_GRAPHS:
            # its last replay may still run: the graph and its buffers go once it has finished
            torch.cuda.current_stream(self.device).synchronize()
            self._graphs.popitem(last=False)
        return graph

    def _capture(self, frames: int, height: int, width: int, colour: Colour) -> _Graph:
        current = torch.cuda.current_stream(self.device)
        nv12 = torch.zeros((frames, height + height // 2, width), dtype=torch.uint8,
                           device=self.device)
        with torch.cuda.device(self.device):
            # One eager run on a side stream first, as capturing asks: kernels and their
            # libraries are loaded outside the graph.
            side = torch.cuda.Stream(self.device)
            side.wait_stream(current)
            with torch.cuda.stream(side):
                nv12_to_rgb(nv12, height, width, colour)
            current.wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: the worker's other threads (heartbeat, hand-off) may call CUDA meanwhile
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                rgb = nv12_to_rgb(nv12, height, width, colour)
        return _Graph(graph, nv12, rgb)
