"""Streams read segment by segment with real decoders on the CPU: no frame dropped or repeated at
a boundary (a stream interpolated in segments equals it interpolated whole), looping, several
streams read in turns, order; and a stream config run through the pipeline with its streams kept
on their decode workers."""
from __future__ import annotations

import pytest
import torch
from video_helpers import video_clip

from models.flavr.served import FLAVRServed
from models.flavr.windows import interleave_tensor
from pipeline.analysis.requests_csv import read_rows
from pipeline.config import config_from_dict
from pipeline.errors import VideoError
from pipeline.media.decode import FrameDecoder
from pipeline.media.streams import LoopingSource, SegmentReader, StreamSet
from pipeline.serving.orchestrator import RunOptions, run

BACKENDS = [("h264", "pyav"), ("vp9", "dali-cpu"), ("vp9", "pyav")]
N = 4  # frames per segment


def segment_rows(decoder, clip, model, n=N) -> list[torch.Tensor]:
    """The rows of every segment of a stream that plays `clip` once."""
    reader = SegmentReader(decoder.open(clip, n), model.stream_behind, model.stream_ahead)
    rows = []
    while True:
        try:
            frames, behind, ahead = reader.next(n)
        except EOFError:
            reader.close()
            return rows
        rows.append(model.make_segment_rows(frames, behind, ahead))


@pytest.mark.parametrize("codec, backend", BACKENDS)
def test_a_streams_segments_hold_the_rows_of_the_whole_video(tmp_path_factory, codec, backend):
    clip = video_clip(tmp_path_factory, codec, width=32, height=32, frames=11)
    decoder, model = FrameDecoder("cpu", backend=backend), FLAVRServed()
    rows = segment_rows(decoder, clip, model)
    assert [r.shape[0] for r in rows] == [4, 4, 2]  # the last frame starts no gap
    assert torch.equal(torch.cat(rows), model.make_rows(decoder.decode(clip)))


def test_interpolating_a_stream_in_segments_equals_interpolating_it_whole(tmp_path_factory):
    clip = video_clip(tmp_path_factory, "h264", width=32, height=32, frames=10)
    decoder, served = FrameDecoder("cpu"), FLAVRServed()
    net = served.build("cpu", checkpoint=None, seed=0)
    frames = decoder.decode(clip)
    with torch.inference_mode():
        whole = interleave_tensor(frames, net(served.make_rows(frames)))
        pieces = [net(rows) for rows in segment_rows(decoder, clip, served, n=3)
                  if rows.shape[0]]  # the stream's last frame alone starts no gap
    # a segment outputs each of its frames with its new frames; the stream's end adds its last
    streamed = torch.cat([interleave_tensor(frames[k * 3:k * 3 + p.shape[0] + 1], p)[:-1]
                          for k, p in enumerate(pieces)] + [frames[-1:]])
    assert streamed.shape == whole.shape == (19, 3, 32, 32)
    assert torch.allclose(streamed, whole, atol=1e-5, rtol=0)


def test_a_looping_stream_goes_on_with_the_files_first_frame(tmp_path_factory):
    clip = video_clip(tmp_path_factory, "h264", width=32, height=32, frames=6)
    decoder = FrameDecoder("cpu")
    whole = decoder.decode(clip)
    source = LoopingSource(lambda: decoder.open(clip, 4))
    frames = torch.cat([source.read(4) for _ in range(4)])  # 16 frames of a 6-frame file
    source.close()
    assert torch.equal(frames, torch.cat([whole, whole, whole[:4]])) and source.loops == 2


@pytest.mark.parametrize("codec, backend", BACKENDS)
def test_streams_read_in_turns_keep_their_own_positions(tmp_path_factory, codec, backend):
    a = video_clip(tmp_path_factory, codec, width=32, height=32, frames=12, seed=1)
    b = video_clip(tmp_path_factory, codec, width=32, height=32, frames=12, seed=2)
    decoder, model = FrameDecoder("cpu", backend=backend), FLAVRServed()
    streams = StreamSet(decoder, model.stream_behind, model.stream_ahead, N, loop=False)
    got = {0: [], 1: []}
    for segment in range(2):
        for sid, clip in ((0, a), (1, b)):
            got[sid].append(model.make_segment_rows(*streams.segment(sid, clip, segment, N)))
    streams.close()
    for sid, clip in ((0, a), (1, b)):
        assert torch.equal(torch.cat(got[sid]), model.make_rows(decoder.decode(clip))[:2 * N])


def test_a_segment_out_of_order_fails_naming_its_stream(tmp_path_factory):
    clip = video_clip(tmp_path_factory, "h264", width=32, height=32, frames=12)
    streams = StreamSet(FrameDecoder("cpu"), 1, 2, N)
    streams.segment(3, clip, 1, N)
    with pytest.raises(VideoError, match="stream 3: segment 1 arrived after segment 1"):
        streams.segment(3, clip, 1, N)
    streams.close()


def test_a_stream_config_runs_with_each_stream_on_one_decode_worker_in_order(tmp_path):
    cfg = config_from_dict({
        "name": "streams", "device": "cpu", "frames_per_request": N,
        "videos": {"synthetic": {"count": 2, "width": 16, "height": 16, "frames": 10, "fps": 24,
                                 "codec": "h264", "seed": 1}, "streams": {"count": 5}},
        "model": {"factor": 2, "precision": "fp32", "resolution": [16, 16]},
        "pipeline": [{"name": "decode", "kind": "decode", "gpus": [0, 0, 1]},
                     {"name": "flavr", "kind": "model", "stages": ["stem", "head"], "gpus": [0]}]})
    opts = RunOptions(mean_interval_ms=30, videos=20, warmup=5, queue_size=32, progress=False,
                      logs_root=str(tmp_path / "logs"), cpu_threads=1, start_timeout_s=240,
                      stall_timeout_s=120, video_cache=str(tmp_path / "videos"))
    result = run(cfg, opts)
    rows = read_rows(result.run_dir / "requests.csv")
    assert len(rows) == 25 and {r.status for r in rows} == {"ok"}
    assert all(r.output_frames == 2 * N and r.frames == N for r in rows)
    by_stream: dict[int, list] = {}
    for r in rows:
        by_stream.setdefault(r.stream, []).append(r)
    assert sorted(by_stream) == [0, 1, 2, 3, 4]
    for stream, segs in by_stream.items():
        assert {r.steps["decode"].replica for r in segs} == {stream % 3}  # its owner, only
        segs.sort(key=lambda r: r.segment)
        assert [r.segment for r in segs] == list(range(len(segs)))
        taken = [r.issued_s + r.steps["decode"].queue_wait_s for r in segs]
        assert taken == sorted(taken)  # decoded in segment order
