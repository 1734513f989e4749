"""Per-request records: what the processes of a run report about each request, and the one table,
requests.csv, that those reports become. The contract between the pipeline, the report and the
sweep and compare tools.

What the processes report (typed, sent to the main process as it happens):

    Admission   the client: when the request was due, when it began to issue it, when it was in
                the first queue
    StepStamps  a decode worker or a runner: its handling of the request, as host clock times and
                device durations
    Outcome     the sink (ok, or an output check failed) or whoever failed or dropped the request

The main process keeps one RequestState per request and turns it into one RequestRow at the end
(`timeline.attribute` divides the request's time into the per-step columns). All times are seconds;
absolute times are on `pipeline.clock.now()` (CLOCK_MONOTONIC, shared by the processes of one
machine) and are stored relative to the run's t0 (the start of the measured schedule).

Columns of requests.csv (one row per request, in request-id order):

    request_id         int    0..n-1; warm-ups first
    video              str    path of the clip (of a stream: the file it plays)
    stream             int    the stream a segment request belongs to; empty for a clip request
    segment            int    the segment's number in its stream (0, 1, ...); empty for a clip
    frames             int    input frames used (asked for, where the request failed early)
    output_frames      int    the model's outputs for the request, in its output unit: FLAVR
                              the frames of the interpolated sequence, (frames-1)*factor+1;
                              R(2+1)D the clips classified, frames/16
    warmup             0/1    warm-up requests are excluded from statistics
    status             str    ok | error | dropped (never admitted: a full queue) | unfinished
    error              str    reason, empty when ok
    scheduled_s        float  when the client was due to issue it (latency counts from here)
    issued_s           float  when it was in the first step's queue (after any blocking put)
    done_s             float  when its last device work completed: the last step's batch holding
                              it, observed complete by that step's runner (per GPU, in the order
                              its stream completes work; the host clock on the CPU)
    latency_s          float  done_s - scheduled_s
    computed_fraction  float  change-based inference (model.change_based): of the tiles of the
                              request's windows, the share the model computed (a window run whole
                              counts all its tiles); empty when it is off
    windows_whole      int    change-based: the request's windows that ran whole (a stream's
                              first or refresh window, or too much motion for tiles)
    psnr_vs_full_db    float  change-based fidelity run (model.change_based.check): PSNR of the
                              request's new frames against the full model's on the same windows,
                              outputs clamped to [0, 1]; identical outputs read 100
    truth_frames       int    --check-outputs, a clip with ground truth (media/truth.py): new
                              frames scored against their truth (empty: none). Means over them,
                              8-bit rounded as in `interpolate --eval` (analysis/quality.py):
    truth_psnr_db, truth_ssim      float  the model's frames (PSNR capped at 100)
    avg_psnr_db, avg_ssim          float  averaging the two input frames around each gap
    nearest_psnr_db, nearest_ssim  float  repeating the nearer input frame
    client.lag_s       float  scheduled -> the client began to issue it (the client behind schedule)
    client.put_s       float  -> it was in the first queue (a full queue under --on-full block)
    <step>.device      str    e.g. cuda:1 or cpu:0 (logical GPU id on CPU runs)
    <step>.replica     int    replica index within the step
    <step>.batch       int    requests that shared the step's call
    <step>.queue_wait_s      float  its input ready (the previous step's work complete and the item
                                    in this step's queue) -> this step took it
    <step>.handoff_exposed_s float  bringing the inputs onto this step's device, the part the
                                    request waited for: gathering a batch on the host, and of a
                                    peer copy, from when the step could have started (producer
                                    done, its stream free) until the last byte landed
    <step>.slot_wait_s       float  waiting for a free slot of the step's own output pool (the
                                    next step, or the sink, has not given one back yet)
    <step>.stream_wait_s     float  launched -> its device work began: the batch queued on its
                                    GPU stream behind earlier batches (0 where work is synchronous)
    <step>.compute_s         float  the step's own work on the batch holding the request: GPU
                                    time (CUDA events) of its stages; host time on the CPU and for
                                    decode (decoding and making windows)
    <step>.publish_s         float  writing its outputs into its slot for the next step, plus
                                    handing the slot on where that outlasted the work (a blocking
                                    put under --on-full block)
    <step>.handoff_s         float  the peer copies' own time (the link busy), all groups: overlaps
                                    the columns above and is not part of the sum below

`<step>` is a step name from the config (the decode step, then the model steps).

The columns add up. Along a request's path each interval is counted once, in path order, by the
first column whose phase had not ended by then: work that overlaps (a runner takes an item while the
producer's GPU is still writing it; a put returns before the GPU work it hands on is done) counts
where it is first. So for every ok request, up to the CSV's microsecond rounding,

    latency_s = client.lag_s + client.put_s
                + sum over steps of (queue_wait_s + handoff_exposed_s + slot_wait_s
                                     + stream_wait_s + compute_s + publish_s)

A step's device work is placed on the host clock by its runner, which waits for each batch's end
event in launch order (they complete in that order on its stream) and stamps when it saw it; the
work began compute_s + publish_s earlier. The observation's own delay (microseconds) shows in
stream_wait_s. Empty cells mean "not reached" (or logs written before the column existed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

SINK = "sink"  # the pipeline's final collector, in queues and process names; no step may take it
CLIENT = "client"  # the prefix of the client's columns

# The columns that add up to the latency, in path order: the client's, then each step's.
CLIENT_TIMES = ("lag_s", "put_s")
PATH_TIMES = ("queue_wait_s", "handoff_exposed_s", "slot_wait_s", "stream_wait_s", "compute_s",
              "publish_s")
STEP_FIELDS = ("device", "replica", "batch") + PATH_TIMES + ("handoff_s",)
TRUTH_COLUMNS = ("truth_frames", "truth_psnr_db", "truth_ssim", "avg_psnr_db", "avg_ssim",
                 "nearest_psnr_db", "nearest_ssim")
BASE_COLUMNS = (
    "request_id", "video", "stream", "segment", "frames", "output_frames", "warmup", "status", "error",
    "scheduled_s", "issued_s", "done_s", "latency_s",
    "computed_fraction", "windows_whole", "psnr_vs_full_db",
) + TRUTH_COLUMNS
FINAL = ("ok", "error", "dropped")


# --------------------------------------------------------------------------------------------
# What the processes report
# --------------------------------------------------------------------------------------------

class _Report:
    """Pickled as its class and its values in field order, without the field names: a run sends
    one report per request and step through the control queue."""

    def __reduce__(self):
        return type(self), tuple(getattr(self, f.name) for f in fields(self))


@dataclass
class Admission(_Report):
    """The client's part: when the request was due, sent and in the first queue."""

    scheduled: float
    sent: float  # the client began to issue it (>= scheduled)
    issued: float | None  # it was in the first queue; None: a full queue refused it


@dataclass
class StepStamps(_Report):
    """One step's handling of one request (the batch holding it): host clock times, in the order
    they happen, and the durations of its device work."""

    step: str
    device: str
    replica: int
    batch: int  # requests in the call
    taken: float  # took it from the queue (for a later frame-size group of one take: its turn)
    gathered: float  # its inputs are on this device (or their copies issued)
    slot_held: float  # a free output slot in hand: the work is launched from here
    finished: float  # the work, device work included, observed complete
    compute_s: float
    publish_s: float  # writing the outputs into the slot (device time on a GPU)
    handed_on: float | None = None  # the output item was in the next queue
    handoff_s: float = 0.0  # peer copies' own time
    handoff_exposed_s: float = 0.0  # of a peer copy, the part past when the step could start


@dataclass
class ChangeCounts(_Report):
    """Change-based inference: what the step that plans the tiles decided for the request's
    windows."""

    tiles: int  # tiles computed, all of a window's when it ran whole
    tiles_total: int
    windows: int
    windows_whole: int


@dataclass
class Fidelity(_Report):
    """Change-based fidelity run: the request's output against the full model's."""

    psnr_db: float


@dataclass
class TruthScores(_Report):
    """--check-outputs on a clip with ground truth: the request's frames against the truth (the
    columns of the same names)."""

    truth_frames: int
    truth_psnr_db: float
    truth_ssim: float
    avg_psnr_db: float
    avg_ssim: float
    nearest_psnr_db: float
    nearest_ssim: float


@dataclass
class Outcome(_Report):
    """How a request ended, from whoever decided it."""

    status: str  # ok | error | dropped | unfinished
    error: str = ""
    frames: int | None = None  # input frames really used (a clip may be shorter than asked)
    output_frames: int | None = None


# --------------------------------------------------------------------------------------------
# One row of requests.csv
# --------------------------------------------------------------------------------------------

@dataclass
class StepTimes:
    """A request's columns for one step (see the module docstring)."""

    device: str | None = None
    replica: int | None = None
    batch: int | None = None
    queue_wait_s: float | None = None
    handoff_exposed_s: float | None = None
    slot_wait_s: float | None = None
    stream_wait_s: float | None = None
    compute_s: float | None = None
    publish_s: float | None = None
    handoff_s: float | None = None

    def path_s(self) -> float | None:
        """The step's share of the latency: its path columns summed (None if any is missing)."""
        values = [getattr(self, f) for f in PATH_TIMES]
        return None if any(v is None for v in values) else math.fsum(values)


@dataclass
class RequestRow:
    """One request as requests.csv holds it (times relative to t0)."""

    request_id: int
    video: str | None = None
    frames: int | None = None
    output_frames: int | None = None
    warmup: bool = False
    status: str = "unfinished"
    error: str = ""
    scheduled_s: float | None = None
    issued_s: float | None = None
    done_s: float | None = None
    latency_s: float | None = None
    lag_s: float | None = None  # client.lag_s
    put_s: float | None = None  # client.put_s
    steps: dict[str, StepTimes] = field(default_factory=dict)
    stream: int | None = None  # a stream's segment: which stream, and which segment of it
    segment: int | None = None
    computed_fraction: float | None = None  # change-based inference (see the module docstring)
    windows_whole: int | None = None
    psnr_vs_full_db: float | None = None
    truth_frames: int | None = None  # against ground truth (see the module docstring)
    truth_psnr_db: float | None = None
    truth_ssim: float | None = None
    avg_psnr_db: float | None = None
    avg_ssim: float | None = None
    nearest_psnr_db: float | None = None
    nearest_ssim: float | None = None

    def accounted_s(self) -> float | None:
        """The sum of the columns that add up to the latency; None where one is missing."""
        parts = [self.lag_s, self.put_s] + [s.path_s() for s in self.steps.values()]
        return None if not self.steps or any(p is None for p in parts) else math.fsum(parts)

    def cells(self) -> dict:
        """The row as requests.csv columns (the one conversion; `from_cells` is its inverse)."""
        out = {k: getattr(self, k) for k in BASE_COLUMNS}
        out["warmup"] = int(self.warmup)
        out[f"{CLIENT}.lag_s"], out[f"{CLIENT}.put_s"] = self.lag_s, self.put_s
        for name, times in self.steps.items():
            for f in STEP_FIELDS:
                out[f"{name}.{f}"] = getattr(times, f)
        return out

    @classmethod
    def from_cells(cls, cells: dict, step_names) -> "RequestRow":
        """A row from requests.csv cells (strings, or values as `cells` gives them); times are
        rounded to the microsecond the CSV keeps, so a live row and its CSV row are equal."""
        get = lambda key: cell_value(key, cells.get(key))
        row = cls(request_id=int(get("request_id") or 0), video=get("video"),
                  frames=get("frames"), output_frames=get("output_frames"),
                  warmup=bool(get("warmup") or 0), status=get("status") or "unfinished",
                  error=get("error") or "", scheduled_s=get("scheduled_s"),
                  issued_s=get("issued_s"), done_s=get("done_s"), latency_s=get("latency_s"),
                  lag_s=get(f"{CLIENT}.lag_s"), put_s=get(f"{CLIENT}.put_s"),
                  stream=get("stream"), segment=get("segment"),
                  computed_fraction=get("computed_fraction"), windows_whole=get("windows_whole"),
                  psnr_vs_full_db=get("psnr_vs_full_db"),
                  **{k: get(k) for k in TRUTH_COLUMNS})
        if row.latency_s is None and row.done_s is not None and row.scheduled_s is not None:
            row.latency_s = round(row.done_s - row.scheduled_s, 6)
        for name in step_names:
            row.steps[name] = StepTimes(**{f: get(f"{name}.{f}") for f in STEP_FIELDS})
        return row


_INT_FIELDS = {"request_id", "stream", "segment", "frames", "output_frames", "warmup", "replica",
               "batch", "windows_whole", "truth_frames"}
_FLOAT_FIELDS = {"computed_fraction", "psnr_vs_full_db", *TRUTH_COLUMNS[1:]}


def cell_value(key: str, value):
    """A cell as the row holds it: None for empty/NaN, times rounded to the microsecond."""
    if value is None or value == "":
        return None
    short = key.rsplit(".", 1)[-1]
    if short in _INT_FIELDS:
        return int(float(value))
    if short.endswith("_s") or short in _FLOAT_FIELDS:
        value = float(value)
        return None if math.isnan(value) else round(value, 6)
    return value


def columns(step_names) -> list[str]:
    """requests.csv's header for a run of these steps."""
    cols = list(BASE_COLUMNS) + [f"{CLIENT}.{f}" for f in CLIENT_TIMES]
    for name in step_names:
        cols += [f"{name}.{f}" for f in STEP_FIELDS]
    return cols


# --------------------------------------------------------------------------------------------
# Collecting the reports of a run
# --------------------------------------------------------------------------------------------

@dataclass
class RequestState:
    """What the main process knows of one request so far."""

    request_id: int
    video: str
    frames: int
    warmup: bool
    stream: int | None = None
    segment: int | None = None
    admission: Admission | None = None
    steps: dict[str, StepStamps] = field(default_factory=dict)
    outcome: Outcome | None = None
    change: ChangeCounts | None = None
    fidelity: Fidelity | None = None
    truth: TruthScores | None = None

    def apply(self, record) -> None:
        if isinstance(record, Admission):
            self.admission = record
        elif isinstance(record, StepStamps):
            self.steps[record.step] = record
        elif isinstance(record, ChangeCounts):
            self.change = record
        elif isinstance(record, Fidelity):
            self.fidelity = record
        elif isinstance(record, TruthScores):
            self.truth = record
        elif isinstance(record, Outcome):
            # A failure recorded earlier is the first cause; later reports must not overwrite it.
            if self.outcome is None or self.outcome.status not in ("error", "dropped"):
                self.outcome = record
        else:
            raise TypeError(f"request {self.request_id}: not a record: {record!r}")

    def status(self, last_step: str) -> str:
        """ok only once the sink has it *and* the last step's completion is known (the two
        reports travel separately)."""
        if self.outcome is None:
            return "unfinished"
        if self.outcome.status == "ok" and last_step not in self.steps:
            return "unfinished"
        return self.outcome.status


@dataclass
class RecordTable:
    """Merges the reports of a run into one state per request. `requests`: (request_id, video,
    frames, warmup[, stream, segment]) of every request the run plans."""

    step_names: list[str]
    requests: list[tuple] = field(default_factory=list)
    rows: dict[int, RequestState] = field(default_factory=dict)

    def __post_init__(self):
        for rid, video, frames, warmup, *stream in self.requests:
            self.rows[rid] = RequestState(rid, video, frames, bool(warmup), *stream)

    def update(self, request_id: int, record) -> None:
        self.rows[request_id].apply(record)

    def status(self, request_id: int) -> str:
        return self.rows[request_id].status(self.step_names[-1])

    def row(self, request_id: int, t0: float) -> RequestRow:
        """One request's row, times relative to t0, the latency divided into its columns."""
        from pipeline.analysis.timeline import to_row  # timeline builds on this module

        return to_row(self.rows[request_id], self.step_names, t0)

    def finish(self, t0: float) -> list[RequestRow]:
        """Every row, in id order (see `row`)."""
        return [self.row(rid, t0) for rid in sorted(self.rows)]

    def columns(self) -> list[str]:
        return columns(self.step_names)


assert {f.name for f in fields(StepTimes)} == set(STEP_FIELDS)
