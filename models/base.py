"""The model interface: what the serving pipeline, the benchmarks and the commands ask of a model.

Two halves, one per concern:

  StagedModel  the network, a plain nn.Module whose forward pass is cut into named stages. A
               table says what each stage reads from the "state" (a dict of tensors, plus "size",
               the unpadded (H, W) as python ints) and what it adds; from that table alone follow
               what crosses every boundary, what a range of stages hands on, and when each of its
               outputs is final (so a split can publish early outputs while later ones compute).
  ServedModel  the model as a workload: how a request's decoded frames (T, 3, H, W) become rows
               of model input, the frame size it wants, its work per row, its weights (random or
               from a checkpoint, built for inference), and what an output is once computed.

A new model is a folder under models/ with one subclass of each, plus one line in
models/registry.py.
"""
from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn as nn

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

Shapes = dict[str, tuple[tuple[int, ...], torch.dtype]]  # tensor name -> (shape, dtype)

# The project's own trained weights ship here; a config that names no checkpoint gets them.
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def live_after(stages, stage_io, inputs, outputs) -> dict[str, tuple[str, ...]]:
    """For each boundary ("input", then after each stage): tensors already produced that some
    later stage reads, or that are final outputs after the last stage."""
    produced, live = list(inputs), {}
    for i, boundary in enumerate(("input",) + tuple(stages)):
        if boundary != "input":
            produced += stage_io[boundary][1]
        later_reads = {t for stage in stages[i:] for t in stage_io[stage][0]}
        live[boundary] = tuple(t for t in produced if t in later_reads or
                               (boundary == stages[-1] and t in outputs))
    return live


class StagedModel(nn.Module):
    """A network run as a sequence of named stages; subclasses declare the table and the stages.

    Subclasses set STAGES and STAGE_IO ({stage: (names read, names written)}) and implement
    `stage_forward` and `state_shapes`. BOUNDARIES and LIVE_AFTER are derived once per class.
    """

    STAGES: ClassVar[tuple[str, ...]] = ()
    STAGE_IO: ClassVar[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {}
    INPUTS: ClassVar[tuple[str, ...]] = ("frames",)
    OUTPUTS: ClassVar[tuple[str, ...]] = ("out",)
    # Tensors a caller may hand a stage that starts a run, as keyword arguments of stage_forward,
    # beyond what it reads (FLAVR: "stem" takes a colour mean given by change-based inference).
    OPTIONAL_INPUTS: ClassVar[dict[str, tuple[str, ...]]] = {}
    FP32_BUFFERS: ClassVar[tuple[str, ...]] = ()  # buffers that stay float32 at any precision
    BOUNDARIES: ClassVar[tuple[str, ...]] = ()
    LIVE_AFTER: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.STAGES:
            cls.BOUNDARIES = ("input",) + tuple(cls.STAGES)
            cls.LIVE_AFTER = live_after(cls.STAGES, cls.STAGE_IO, cls.INPUTS, cls.OUTPUTS)

    def __init__(self):
        super().__init__()
        self.channels_last = False

    # ---- what a subclass provides ---------------------------------------------------------------

    def stage_forward(self, stage: str, inputs: list[torch.Tensor], size: tuple[int, int],
                      **optional) -> tuple[torch.Tensor, ...]:
        """Run one stage on the tensors it reads (STAGE_IO order); return what it writes."""
        raise NotImplementedError

    def state_shapes(self, batch: int, height: int, width: int) -> dict[str, Shapes]:
        """Shape and dtype of every tensor alive at every boundary, by arithmetic."""
        raise NotImplementedError

    # ---- performance switches -------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def for_inference(self, precision: str = "fp32", channels_last: bool = False):
        """Eval mode, no autograd, weights in `precision` ("fp32", "bf16", "fp16").

        channels_last stores weights (and the activations the subclass makes) channels-last,
        which cuDNN's tensor-core convolutions prefer; it changes layouts only, never values."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        keep = {name: getattr(self, name).detach().float() for name in self.FP32_BUFFERS}
        self.eval().requires_grad_(False).to(PRECISIONS[precision])
        formats = {5: torch.channels_last_3d, 4: torch.channels_last}
        with torch.no_grad():
            for name, value in keep.items():  # as they were, not rounded through the cast
                getattr(self, name).data = value
            for p in self.parameters():
                if p.dim() in formats:
                    fmt = formats[p.dim()] if channels_last else torch.contiguous_format
                    p.data = p.data.contiguous(memory_format=fmt)
        self.channels_last = channels_last
        return self

    # ---- stage bookkeeping ----------------------------------------------------------------------

    @classmethod
    def needed_after(cls, stage: str) -> tuple[str, ...]:
        """Tensor names alive after `stage` ("input" = before the first), i.e. what a split hands over."""
        if stage not in cls.LIVE_AFTER:
            raise ValueError(f"unknown stage {stage!r}; stages are 'input', {', '.join(cls.STAGES)}")
        return cls.LIVE_AFTER[stage]

    @classmethod
    def needed_by(cls, stage: str) -> tuple[str, ...]:
        """Tensor names the state must hold to run from `stage` on."""
        if stage not in cls.STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(cls.STAGES)}")
        return cls.LIVE_AFTER[cls.BOUNDARIES[cls.STAGES.index(stage)]]

    @classmethod
    def boundary_before(cls, stage: str) -> str:
        return cls.BOUNDARIES[cls.STAGES.index(stage)]

    @classmethod
    def output_groups(cls, first: str, last: str) -> list[tuple[str, tuple[str, ...]]]:
        """What a run of stages first..last hands over, grouped by when it is final: a list of
        (stage, names), in stage order, where `names` are the range's outputs that no later
        stage of the range changes once `stage` has run. Tensors passed through from before
        `first` are final at `first`. A split can hand each group on as soon as it is ready
        (a U-Net's early skips long before its encoder ends) instead of all at the end."""
        i, j = cls.STAGES.index(first), cls.STAGES.index(last)
        made_at = {t: s for s in cls.STAGES[i:j + 1] for t in cls.STAGE_IO[s][1]}
        groups: dict[str, list[str]] = {}
        for name in cls.LIVE_AFTER[last]:
            groups.setdefault(made_at.get(name, first), []).append(name)
        return [(s, tuple(groups[s])) for s in cls.STAGES[i:j + 1] if s in groups]

    def shapes_by_boundary(self, table: Shapes) -> dict[str, Shapes]:
        """Pick, for each boundary, the live tensors out of a table of every tensor's shape."""
        return {b: {t: table[t] for t in self.LIVE_AFTER[b]} for b in self.BOUNDARIES}

    # ---- running --------------------------------------------------------------------------------

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        state = {self.INPUTS[0]: frames, "size": tuple(frames.shape[-2:])}
        return self.run_stages(state)[self.OUTPUTS[0]]

    def run_stages(self, state: dict, first: str | None = None, last: str | None = None) -> dict:
        """Run stages first..last (inclusive; default all); return the tensors later stages
        need, plus "size"."""
        first = self.STAGES[0] if first is None else first
        last = self.STAGES[-1] if last is None else last
        if first not in self.STAGES or last not in self.STAGES:
            raise ValueError(f"unknown stage in {first!r}..{last!r}; stages are {', '.join(self.STAGES)}")
        i, j = self.STAGES.index(first), self.STAGES.index(last)
        if i > j:
            raise ValueError(f"stage {first!r} comes after {last!r}")
        missing = [t for t in self.needed_by(first) + ("size",) if t not in state]
        if missing:
            raise KeyError(f"state for stage {first!r} lacks {missing}")
        size = state["size"]
        live = {t: state[t] for t in self.needed_by(first)}
        # What the caller may hand the first stage beyond its inputs (OPTIONAL_INPUTS).
        extras = {t: state[t] for t in self.OPTIONAL_INPUTS.get(first, ()) if t in state}
        for stage in self.STAGES[i:j + 1]:
            reads, writes = self.STAGE_IO[stage]
            outs = self.stage_forward(stage, [live[t] for t in reads], size,
                                      **(extras if stage == first else {}))
            live.update(zip(writes, outs))
            # Drop dead tensors at once so their memory can be reused by the next stage.
            live = {t: live[t] for t in self.LIVE_AFTER[stage]}
        live["size"] = size
        return live


class ServedModel(ABC):
    """A model as a workload of the serving pipeline, the model benchmark and the commands.

    Instances are small and picklable (hyper-parameters only): the main process hands one to
    every decode worker, runner and sink, each of which builds what it needs from it."""

    name: ClassVar[str]  # registry name, the config's model.name
    title: ClassVar[str]  # for people: "FLAVR", "R(2+1)D-18"
    network: ClassVar[type[StagedModel]]
    frames_per_row: ClassVar[int]  # input frames one row of model input holds
    row_name: ClassVar[str]  # what a row is: "window", "clip"
    output_unit: ClassVar[str]  # what outputs_per_request counts: "frames", "clips"
    output_kind: ClassVar[str]  # "frames" (images like the input) or "scores" (class logits)
    input_size: ClassVar[tuple[int, int] | None] = None  # (H, W) when the config sets none; None: each clip's own
    min_size: ClassVar[int] = 1  # smallest height and width the network accepts
    flop_convention: ClassVar[str] = ""
    # Change-based inference (compute only what changed): models that have it say so and make
    # the wrapper that runs it (change_runner).
    change_based: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def from_config(cls, model_cfg) -> "ServedModel":
        """The model a config's `model` section describes (reads only the fields it uses)."""

    @classmethod
    def from_checkpoint(cls, path, trust: bool = False) -> "ServedModel":
        """The model variant a checkpoint holds (default: the model's defaults, which the
        checkpoint must then fit)."""
        return cls()

    # ---- description --------------------------------------------------------------------------

    @property
    def stages(self) -> tuple[str, ...]:
        return self.network.STAGES

    @abstractmethod
    def describe(self) -> str:
        """One line for people: the model and its variant."""

    def run_info(self) -> dict:
        """What a run's report and logs record about the model."""
        return {"model": self.name, "model_title": self.title, "output_unit": self.output_unit}

    def shipped_weights(self) -> Path | None:
        """The weights the project ships for this model and variant (weights/), or None."""
        return None

    def random_weights_notice(self) -> str:
        return (f"no checkpoint: {self.title} runs with random weights, so timings are real but "
                f"its outputs are not meaningful (set model.checkpoint)")

    # ---- requests -----------------------------------------------------------------------------

    @abstractmethod
    def check_request(self, frames: int) -> str | None:
        """Why a request of `frames` input frames cannot run (None when it can)."""

    @abstractmethod
    def rows_per_request(self, frames: int) -> int:
        """Rows of model input a request of `frames` frames becomes."""

    @abstractmethod
    def make_rows(self, frames: torch.Tensor) -> torch.Tensor:
        """(T, 3, H, W) float frames in [0, 1] -> (rows, *row_shape), on the frames' device."""

    @abstractmethod
    def row_shape(self, height: int, width: int) -> tuple[int, ...]:
        """Shape of one row of model input at frame size (height, width)."""

    def input_spec(self, rows: int, height: int, width: int) -> Shapes:
        """What the decode step hands the first model step."""
        return {self.network.INPUTS[0]: ((rows, *self.row_shape(height, width)), torch.float32)}

    @abstractmethod
    def outputs_per_request(self, frames: int) -> int:
        """What a request of `frames` frames yields, counted in `output_unit`."""

    @property
    @abstractmethod
    def outputs_per_row(self) -> int:
        """Outputs (in `output_unit`) one row of model input yields."""

    # ---- streams ------------------------------------------------------------------------------
    # A stream is a long video whose consecutive segments of N frames arrive as requests. A
    # segment's rows may read frames around it: `stream_behind` before its first frame and
    # `stream_ahead` after its last (the decode worker keeps them), so that the rows of a
    # stream's segments, in order, are exactly the rows of the whole video: no frame dropped or
    # repeated at a boundary. The defaults suit a model whose rows do not overlap (R(2+1)D's
    # clips, with N a multiple of the clip length).
    stream_behind: ClassVar[int] = 0
    stream_ahead: ClassVar[int] = 0

    def check_segment(self, frames: int) -> str | None:
        """Why a stream cannot run in segments of `frames` frames (None when it can)."""
        return self.check_request(frames)

    def rows_per_segment(self, frames: int) -> int:
        """Rows of model input a running stream's segment of `frames` frames becomes."""
        return self.rows_per_request(frames)

    def outputs_per_segment(self, rows: int) -> int:
        """What a segment's `rows` rows yield, counted in `output_unit`."""
        return rows * self.outputs_per_row

    def make_segment_rows(self, frames: torch.Tensor, behind: int, ahead: int) -> torch.Tensor:
        """A segment's rows from (behind + N + ahead, 3, H, W) frames of its stream: `behind`
        is below stream_behind only at the stream's start, `ahead` below stream_ahead only at
        its end."""
        return self.make_rows(frames[behind:frames.shape[0] - ahead])

    # ---- work ---------------------------------------------------------------------------------

    @abstractmethod
    def stage_macs(self, height: int, width: int) -> dict[str, int]:
        """Multiply-adds of one row (batch 1) per stage, by arithmetic (see flop_convention)."""

    def row_macs(self, height: int, width: int) -> int:
        return sum(self.stage_macs(height, width).values())

    # ---- weights ------------------------------------------------------------------------------

    @abstractmethod
    def load(self, device="cpu", checkpoint=None, seed: int | None = None,
             trust_checkpoint: bool = False) -> StagedModel:
        """The network on `device` in float32: the checkpoint's weights, or random ones (fixed by
        `seed`) without one. Raises CheckpointError naming the file."""

    @abstractmethod
    def check_checkpoint(self, path, trust_checkpoint: bool = False) -> None:
        """Raise CheckpointError (one line naming the file) unless `path` holds weights that fit
        this model; as cheap as the format allows, never on a GPU."""

    @abstractmethod
    def save_checkpoint(self, model: StagedModel, path) -> Path:
        """Write the model's weights (.safetensors preferred)."""

    def build(self, device="cpu", precision: str = "fp32", channels_last: bool = False,
              checkpoint=None, seed: int | None = 0, trust_checkpoint: bool = False) -> StagedModel:
        """The network ready for inference: loaded (once), then cast and laid out."""
        model = self.load(device, checkpoint, seed, trust_checkpoint)
        return model.for_inference(precision, channels_last=channels_last)

    def change_runner(self, network: StagedModel, config):
        """The change-based wrapper of `network` (models whose `change_based` is True)."""
        raise NotImplementedError(f"{self.title} has no change-based inference")

    # ---- outputs ------------------------------------------------------------------------------

    @abstractmethod
    def save_output(self, out: torch.Tensor, video: str, frames: int, stem: Path) -> Path:
        """Write one request's output rows (on the CPU) next to `stem` (a path without suffix);
        return the file written."""


_warned: set[str] = set()


def warn_random_weights(title: str, hint: str) -> None:
    """Say once per process and model that its weights are random."""
    if title not in _warned:
        _warned.add(title)
        warnings.warn(f"{title} has random weights: its outputs are not meaningful (timings "
                      f"are). {hint}", stacklevel=3)
