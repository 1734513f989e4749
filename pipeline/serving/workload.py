"""What a run asks of the pipeline: its requests, in issue order, and when each is due.

Two kinds (the config's `videos.streams` picks):

  clips    RnB's workload: request i is the first frames_per_request frames of clip i mod (clips
           in the set), on the Poisson schedule of loadgen.poisson_offsets.
  streams  request = the next segment of frames_per_request frames of one of `count` streams;
           stream s plays clip s mod (clips) in a loop. Warm-ups take the streams in turn (so that
           with at least `count` warm-ups every stream is open before the measured schedule);
           measured arrivals follow the same Poisson schedule, each marked with a stream drawn
           uniformly (loadgen.stream_marks): Poisson per stream and in all. A stream's segments
           are numbered in issue order and all go to the decode worker that owns the stream
           (`stream_owner`), through that worker's own input queue, so they are decoded in order
           by one decoder that stays open.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.serving.loadgen import WARMUP_STREAM, poisson_offsets, stream_marks


@dataclass
class Workload:
    requests: list[tuple]  # (request id, video, frames, warm-up, stream id or None, segment)
    warmup_offsets: list[float]
    offsets: list[float]
    streams: int  # 0: one clip per request
    rows_per_request: int  # rows of model input one request becomes (a running stream's segment)

    @property
    def kind(self) -> str:
        return "streams" if self.streams else "clips"


def stream_owner(stream_id: int, n_workers: int) -> int:
    """The decode worker (replica index of the decode step) that owns a stream."""
    return stream_id % n_workers


def build_workload(cfg, served, videos: list[str], warmup: int, measured: int,
                   mean_interval_ms: float, seed: int,
                   failing: frozenset[str] = frozenset()) -> Workload:
    """`failing`: clips known to fail their requests, which clip warm-ups skip (a warm-up spent
    on one warms no decoder up); the measured requests take every clip in turn all the same."""
    n_frames = cfg.frames_per_request
    warm = [float(t) for t in poisson_offsets(warmup, mean_interval_ms, seed, WARMUP_STREAM)]
    timed = [float(t) for t in poisson_offsets(measured, mean_interval_ms, seed)]
    spec = cfg.videos.streams
    if spec is None:
        warm_clips = [v for v in videos if str(v) not in failing] or videos
        requests = [(i, warm_clips[i % len(warm_clips)] if i < warmup else videos[i % len(videos)],
                     n_frames, i < warmup, None, 0) for i in range(warmup + measured)]
        return Workload(requests, warm, timed, 0, served.rows_per_request(n_frames))
    marks = [i % spec.count for i in range(warmup)]
    marks += [int(s) for s in stream_marks(measured, spec.count, seed)]
    segments = [0] * spec.count
    requests = []
    for i, s in enumerate(marks):
        requests.append((i, videos[s % len(videos)], n_frames, i < warmup, s, segments[s]))
        segments[s] += 1
    return Workload(requests, warm, timed, spec.count, served.rows_per_segment(n_frames))
