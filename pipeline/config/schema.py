"""The schema, declared once: the run config (`Config`, from a YAML/JSON file) and the run
settings (`RunSettings`, from command-line flags), plus what a sweep and a capacity search add.

Every field is a `setting(...)` (fields.py) carrying its doc, bounds, choices and, for run
settings, its flags. Loading, defaults, range and choice checks, `--set`, the run folder's copy
and the argparse flags of benchmark.py and of the sweep are all derived from these declarations;
adding a field here is the whole change. Checks that relate several fields (stage coverage,
per-GPU queue consumers, GPU ids against the machine) are explicit functions in validate.py.

Why stdlib dataclasses and not pydantic: no extra dependency for a package that already pins
torch and DALI; the same style as torchtitan's config (dataclasses with field docs); and the
error text is ours, so every message names the dotted field (`pipeline[2].gpus[1]`) or the flag
(`-v/--videos`) in one line, as the rest of the project does.

Bounds are generous for real use and stop inputs that would exhaust memory or never end; each
field's doc says why its limit is where it is.
"""
from __future__ import annotations

from dataclasses import dataclass

from models.registry import MODEL_NAMES  # names only: no torch import
from pipeline.config.fields import setting
from pipeline.serving.launch import LAUNCHERS
from pipeline.serving.mps import MODES as MPS_MODES

DEVICES = ("auto", "cuda", "cpu")
FACTORS = (2, 4, 8)
PRECISIONS = ("fp32", "bf16", "fp16")
STEP_KINDS = ("decode", "model", "sleep")
QUEUES = ("global", "per_gpu")
SYNTHETIC_CODECS = ("vp8", "vp9", "h264", "hevc")
# pipeline.media.decode.BACKENDS plus "auto" (kept here so that building a parser does not import
# torch and DALI; a unit test keeps the two lists equal).
DECODE_BACKENDS = ("auto", "dali-gpu", "dali-cpu", "pyav", "pynvvideocodec")
ON_FULL = ("stop", "block")

SEED_MAX = 2**32 - 1  # numpy's generators take seeds below 2**32
SIDE_MAX = 8192  # widest or tallest frame anything here is asked to make or resize to
MAX_PIXELS_DEFAULT = 3840 * 2160  # 4K UHD
VIDEOS_MAX = 100_000  # measured requests in one run: the main process keeps a record of each
MIN_FOR_P99 = 100  # pipeline.analysis.statistics.MIN_FOR_P99 (a unit test keeps them equal)


# --------------------------------------------------------------------------------------------
# The run config (a YAML or JSON file)
# --------------------------------------------------------------------------------------------

@dataclass(kw_only=True)
class SyntheticSpec:
    """Generated test clips (made once and cached by pipeline/media/synthetic.py)."""

    count: int = setting(4, doc="clips in the set (each is generated and kept on disk)",
                         ge=1, le=10_000)
    width: int = setting(256, doc="frame width, even (4:2:0 video)", ge=16, le=SIDE_MAX)
    height: int = setting(256, doc="frame height, even (4:2:0 video)", ge=16, le=SIDE_MAX)
    frames: int = setting(16, doc="frames per clip (at least frames_per_request)", ge=2, le=1000)
    fps: float = setting(24.0, doc="frame rate written into the clips", gt=0, le=1000)
    codec: str = setting("vp9", doc="codec of the clips", choices=SYNTHETIC_CODECS)
    seed: int = setting(0, doc="seed of the clips' content", ge=0, le=SEED_MAX)
    moving_fraction: float | None = setting(
        None, doc="static-camera clips instead: this fraction of the frame moves (a seeded "
                  "rectangle) and the rest is still (pipeline/media/moving_fraction.py); 0: "
                  "nothing moves; none: the usual clips, which move everywhere", ge=0, le=1)
    truth_factor: int | None = setting(
        None, doc="also write each clip's true frames at F times its frame rate beside it "
                  "(CLIP.truth.npz), which --check-outputs scores the model against; a multiple "
                  "of model.factor; at most 64 (the truth holds F frames per frame)", ge=1, le=64)


@dataclass(kw_only=True)
class StreamsSpec:
    """Requests as streams: long videos whose consecutive segments arrive as requests."""

    count: int = setting(4, doc="streams; stream s plays clip s mod (clips in the set) from its "
                                "first frame, looping, and each of its requests is its next "
                                "frames_per_request frames; a stream stays on one decode worker "
                                "(s mod workers) with its decoder open (at most 10,000: each "
                                "open stream holds a decoder)", ge=1, le=10_000)


@dataclass(kw_only=True)
class VideoSetConfig:
    """Where request clips come from: files/globs, or a synthetic set. Exactly one of the two."""

    paths: list[str] = setting(doc="clip files or globs; relative ones are looked up next to the "
                                   "config file, then in the working directory",
                               factory=list, max_items=10_000, min_len=1)
    synthetic: SyntheticSpec | None = setting(None, doc="a generated set instead of paths")
    streams: StreamsSpec | None = setting(
        None, doc="play the clips as streams (segments as requests, arrivals Poisson per stream "
                  "and in all) instead of one clip per request")
    max_pixels: int = setting(
        MAX_PIXELS_DEFAULT,
        doc="largest frame (width x height) a clip may have: a larger clip fails its own request "
            "before it is decoded, and pools and runners are sized only for clips within it "
            "(one 8000x8000 clip otherwise drives a decode worker past 7 GB); 8x8 to 8192x8192",
        ge=64, le=SIDE_MAX * SIDE_MAX)


@dataclass(kw_only=True)
class ChangeBasedSpec:
    """Change-based inference (models/flavr/change_based.py): run FLAVR only on the tiles whose
    neighbourhood changed, copy the centre frames elsewhere. Defaults and bounds are ChangeConfig's;
    pipeline/config/change.py turns this into one."""

    threshold: float = setting(0.04, doc="an 8x8 block changed if its mean pixel change (0..1) "
                                         "exceeds this", ge=0, le=0.999)
    tile: int = setting(64, doc="side of a tile's own output square in pixels, a multiple of 8",
                        ge=8, le=SIDE_MAX)
    halo: int = setting(16, doc="context around a tile and how far a change spreads, pixels, a "
                                "multiple of 8", ge=0, le=SIDE_MAX)
    feather: int | None = setting(None, doc="blend band into copied neighbours in pixels, at most "
                                            "halo; none: halo / 2", ge=0, le=SIDE_MAX)
    fallback: float = setting(0.5, doc="run a window whole when its tiles, halos included, would "
                                       "cover more than this fraction of the frame", ge=0, le=100)
    refresh: int = setting(16, doc="run a stream's window whole at least every this many windows "
                                   "(renews the gate attention its tiles use)", ge=1, le=1_000_000)
    gates: str = setting("cached", doc="the gate attention tiles use: cached (the stream's last "
                                       "whole window) or own (each tile's own average)",
                         choices=("cached", "own"))
    check: bool = setting(False, doc="fidelity run: the full model also runs every window, after "
                                     "the timed work, and requests.csv gets the PSNR of the "
                                     "change-based output against it (later batches wait for it)")


@dataclass(kw_only=True)
class ModelConfig:
    name: str = setting("flavr", doc="which model the steps run (a name of models/registry.py)",
                        choices=MODEL_NAMES)
    factor: int = setting(2, doc="frames out per frame in (the released FLAVR models)",
                          choices=FACTORS)
    checkpoint: str | None = setting(
        None, doc="weights file; none: the weights the project ships for the model (weights/), "
                  "random ones where it ships none; `random`: untrained weights (timing only)",
        min_len=1)
    trust_checkpoint: bool = setting(
        False, doc="allow full unpickling of a torch.save checkpoint that holds more than "
                   "weights (it can run code from the file); without it such a file is refused")
    precision: str = setting("fp32", doc="compute precision", choices=PRECISIONS)
    resolution: tuple[int, int] | None = setting(
        None, doc="resize every clip to [height, width]; none: each clip's own size",
        form="[height, width]", ge=1, le=SIDE_MAX)
    channels_last: bool = setting(False, doc="channels-last memory format")
    compile: bool = setting(False, doc="torch.compile inside each runner")
    cuda_graphs: bool = setting(False, doc="capture the model in CUDA graphs")
    memory_limit_gib: float | None = setting(
        None, doc="cap on each model runner's memory in GiB (GPU: its caching allocator; CPU: its "
                  "address space)", gt=0, le=65_536)
    # A step hands each output on as soon as the stage that finishes it has run (a split's early
    # U-Net skips cross to the next GPU while the encoder still computes); false: all at the end.
    early_handoff: bool = setting(True, doc="hand each output on as soon as it is final")
    change_based: ChangeBasedSpec | None = setting(
        None, doc="compute only the tiles that changed (FLAVR only); none: the full model")


@dataclass(kw_only=True)
class StepConfig:
    name: str = setting(doc="step name; prefixes the CSV columns and names its queues",
                        min_len=1, max_len=64)
    kind: str = setting(doc="decode (first step only), model, or sleep (a test step)",
                        choices=STEP_KINDS)
    gpus: list[int | str] = setting(
        doc="one replica per entry (repeat an id for several on one GPU); at most 64 replicas, "
            "ids up to 1023; with launcher ray an entry may name a node: \"node1:0\" is GPU 0 of "
            "the Ray node that offers the custom resource node1",
        ge=0, le=1023, max_items=64)
    queue: str = setting("global", doc="placement of this step's OUTPUT queue", choices=QUEUES)
    stages: tuple[str, str] | None = setting(None, doc="first and last model stage (kind model)",
                                             form="[first, last] stage names")
    # TEST step (kind sleep): sleep this long per request instead of running the model, so
    # capacity searches and queueing tests can run against a service time that is known exactly.
    sleep_ms: float | None = setting(None, doc="TEST step: sleep this long per request (kind sleep)",
                                     gt=0, le=60_000)
    pool_slots: int = setting(4, doc="output buffers each replica owns (each sized for the largest "
                                     "request it can make)", ge=1, le=64)


@dataclass(kw_only=True)
class RayConfig:
    address: str | None = setting(
        None, doc="the Ray cluster to join (e.g. ray://head:10001 or head:6379); none: a Ray "
                  "instance on this machine, started for the run", min_len=1, max_len=300)


def split_gpu(entry: int | str) -> tuple[str | None, int]:
    """(node, GPU id) of a gpus entry: 3 -> (None, 3); "node1:3" -> ("node1", 3). The entry is
    one that validation accepted."""
    if isinstance(entry, int):
        return None, entry
    node, _, gpu = entry.rpartition(":")
    return node, int(gpu)


@dataclass(kw_only=True)
class Config:
    name: str = setting(doc="names the run folders; defaults to the config file's name",
                        min_len=1, max_len=100)
    device: str = setting("auto", doc="auto | cuda | cpu (cpu: GPU ids become logical devices)",
                          choices=DEVICES)
    launcher: str = setting("local", doc="how the run's processes are started "
                                         "(pipeline/serving/launch/)", choices=LAUNCHERS)
    ray: RayConfig = setting(doc="the Ray launcher's cluster", factory=RayConfig)
    videos: VideoSetConfig = setting(doc="the clips requests are made of")
    frames_per_request: int = setting(
        8, doc="input frames per request; every window of 4 is one model input (each slot holds "
               "a request's windows, so this bounds pool memory)", ge=2, le=128)
    model: ModelConfig = setting(doc="the model the steps run", factory=ModelConfig)
    steps: list[StepConfig] = setting(doc="decode first, then model or sleep steps", key="pipeline",
                                      max_items=16)
    source: str | None = setting(None, doc="the file it was loaded from", in_file=False)


# --------------------------------------------------------------------------------------------
# The run settings (command-line flags; the same for every config of a sweep)
# --------------------------------------------------------------------------------------------

@dataclass(kw_only=True)
class RunSettings:
    """How one run of a config is driven. benchmark.py and the sweep build their flags from
    these declarations and turn them back into this object the same way (config/cli.py)."""

    mean_interval_ms: float = setting(
        50.0, doc="mean gap of the Poisson arrivals in ms; 0 sends every request at once "
                  "(saturation); at most an hour", ge=0, le=3_600_000,
        flags=("-mi", "--mean_interval_ms"))
    batch: int = setting(
        1, doc="requests a runner may batch into one model call (it never waits to fill a "
               "batch: it takes what is queued, up to this many; each runner warms up every "
               "batch size, so at most 64)", ge=1, le=64, flags=("-b", "--batch_size"))
    videos: int = setting(20, doc="measured requests (clips cycle through the video set)",
                          ge=1, le=VIDEOS_MAX, flags=("-v", "--videos"))
    queue_size: int = setting(64, doc="bound of every queue between steps", ge=1, le=10_000,
                              flags=("-qs", "--queue_size"))
    per_gpu: bool = setting(False, doc="force per-GPU queues between all steps (RnB's -p)",
                            flags=("-p", "--per_gpu_queue"))
    warmup: int = setting(2, doc="extra requests issued first, excluded from statistics",
                          ge=0, le=10_000, flags=("--warmup",))
    seed: int = setting(0, doc="seed of the arrival times (a sweep's repeat k uses seed + k)",
                        ge=0, le=SEED_MAX, flags=("--seed",))
    on_full: str = setting("stop", doc="a full queue stops admitting requests (RnB) or makes "
                                       "producers wait", choices=ON_FULL, flags=("--on-full",))
    device: str | None = setting(None, doc="override the config's device; cpu runs any placement "
                                           "on the CPU, GPU ids becoming logical devices",
                                 choices=DEVICES, flags=("--device",))
    launcher: str | None = setting(None, doc="override the config's launcher",
                                   choices=LAUNCHERS, flags=("--launcher",))
    ray_address: str | None = setting(None, doc="override the config's ray.address: the Ray "
                                                "cluster to join (launcher ray)",
                                      min_len=1, max_len=300, flags=("--ray-address",))
    decode_backend: str = setting(
        "auto", doc="force a decoder instead of choosing by device and codec (auto: on GPUs "
                    "NVDEC through PyNvVideoCodec, one decoder reconfigured per clip, else "
                    "through DALI (dali-gpu), and PyAV for a codec the GPU's NVDEC lacks; DALI "
                    "or PyAV on the CPU); env FLAVR_DECODE_BACKEND",
        choices=DECODE_BACKENDS, env="FLAVR_DECODE_BACKEND", flags=("--decode-backend",))
    mps: str = setting(
        "auto", doc="CUDA MPS control daemon for the run: without it, processes sharing a GPU "
                    "time-slice it (measured: the model ~9% slower beside two decode processes "
                    "on one H200, 0.5% with MPS); auto starts a private daemon where a GPU hosts "
                    "more than one process; on requires it; a running daemon is reused",
        choices=MPS_MODES, flags=("--mps",))
    logs_root: str = setting("logs", doc="root folder of the per-run log folders", min_len=1,
                             flags=("--logs",))
    save_outputs: bool = setting(False, doc="encode each request's interpolated clip into the "
                                            "run's logs folder", flags=("--save-outputs",))
    save_tensors: bool = setting(False, doc="with --save-outputs: raw output tensors instead of "
                                            "videos", flags=("--save-tensors",))
    check_outputs: bool = setting(False, doc="check every output value is finite, and score "
                                             "the outputs of clips with ground truth beside them "
                                             "(pipeline/media/truth.py): PSNR and SSIM next to "
                                             "averaging and repeating frames (costs time in the "
                                             "sink)", flags=("--check-outputs",))
    progress: bool = setting(True, doc="progress bars", flags=("--progress",))
    cpu_threads: int | None = setting(None, doc="torch threads per CPU model process (default: "
                                                "cores / replicas)", ge=1, le=1024,
                                      flags=("--cpu-threads",))
    video_cache: str | None = setting(None, doc="folder of generated synthetic clips (default "
                                                "<repo>/videos/synthetic)", min_len=1,
                                      flags=("--video-cache",))
    start_timeout_s: float = setting(600.0, doc="seconds for every replica's model build and "
                                                "warm-up", gt=0, le=86_400,
                                     flags=("--start-timeout",))
    stall_timeout_s: float = setting(300.0, doc="stop when no request finished for this many "
                                                "seconds", gt=0, le=86_400,
                                     flags=("--stall-timeout",))
    heartbeat_timeout_s: float = setting(
        30.0, doc="seconds a process may stay silent once started (stuck in a GPU or decoder "
                  "call, stopped) before the run ends, naming it; a known long call (a first "
                  "compile, a large CPU batch) is allowed longer", gt=0, le=86_400,
        flags=("--heartbeat-timeout",), metavar="S")


# --------------------------------------------------------------------------------------------
# What a sweep and a capacity search add
# --------------------------------------------------------------------------------------------

@dataclass(kw_only=True)
class SweepSettings:
    repeats: int = setting(3, doc="runs per config and load, each with its own seed (--seed + k)",
                           ge=1, le=100, flags=("--repeats",))


@dataclass(kw_only=True)
class CapacitySettings:
    slo_p99_ms: float = setting(doc="bound on p99 latency, ms", gt=0, le=3_600_000,
                                flags=("--slo-p99-ms",))
    lo: float | None = setting(None, doc="a rate (req/s) expected to meet the SLO (halved until "
                                         "one does)", gt=0, le=100_000, flags=("--lo",))
    hi: float | None = setting(None, doc="a rate (req/s) expected to fail the SLO (doubled until "
                                         "one does)", gt=0, le=100_000, flags=("--hi",))
    start: float = setting(1.0, doc="first rate tried when neither --lo nor --hi is given",
                           gt=0, le=100_000, flags=("--start",))
    rel_tol: float = setting(0.05, doc="stop when the failing rate is within this fraction above "
                                       "the passing one", gt=0, le=1, flags=("--rel-tol",))
    max_probes: int = setting(16, doc="runs per config at most", ge=1, le=100,
                              flags=("--max-probes",))
    min_requests: int = setting(
        MIN_FOR_P99, doc=f"measured requests per probe; below {MIN_FOR_P99} the p99 is flagged as "
                         "not meaningful", ge=1, le=VIDEOS_MAX, flags=("--min-requests",))
    min_duration_s: float = setting(0.0, doc="also make each probe's schedule at least this many "
                                             "seconds long", ge=0, le=86_400,
                                    flags=("--min-duration",), metavar="S")
