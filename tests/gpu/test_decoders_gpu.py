"""Every GPU decode backend passes the same checks on a GPU: against PyAV's decode of the same
file (same bitstream, same colour conversion), frame order, ranges, one decoder kept across clips
of other sizes and codecs, a stream read in segments, a decode profiled phase by phase, and a
corrupt file failing alone.

A codec that the GPU's NVDEC does not decode (AV1 on an H200) is skipped, saying so.

Tolerance as in test_decode_gpu.py: < 1 grey level mean absolute per channel. PyNvVideoCodec
hands over NV12 planes converted by colour.yuv_to_rgb exactly like PyAV's, so it is expected to
be far closer (NVDEC and FFmpeg are both exact decoders of the standard).
"""
import pytest
import torch
from video_helpers import corrupt_middle, grey_levels, video_clip

from models.flavr.served import FLAVRServed
from pipeline.errors import CodecUnsupportedError, VideoError
from pipeline.media.backends import backend_class
from pipeline.media.decode import FrameDecoder
from pipeline.media.encode import encoder_available
from pipeline.media.phases import DECODE_PHASES, PhaseClock
from pipeline.media.streams import SegmentReader

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
TOLERANCE = 1.0
GPU_BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(
    backend_class(name).unavailable() is not None, reason=f"{name} does not import here"))
    for name in ("dali-gpu", "pynvvideocodec")]
CODECS = ["h264", "hevc", "vp9", pytest.param("av1", marks=pytest.mark.skipif(
    encoder_available("av1") is None, reason="this PyAV build has no AV1 encoder"))]


def reference(clip):
    return FrameDecoder("cuda:0", backend="pyav").decode(clip)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("codec", CODECS)
def test_a_gpu_backend_matches_pyav(tmp_path_factory, backend, codec):
    clip = video_clip(tmp_path_factory, codec, width=256, height=256, frames=8)
    decoder = FrameDecoder("cuda:0", backend=backend)
    try:
        gpu = decoder.decode(clip)
    except CodecUnsupportedError as e:  # e.g. AV1 on an H200
        pytest.skip(f"this GPU's NVDEC does not decode {codec}: {e.cause}")
    assert gpu.device.type == "cuda" and gpu.shape == (8, 3, 256, 256)
    ref = reference(clip)
    assert (grey_levels(gpu, ref) < TOLERANCE).all(), grey_levels(gpu, ref).tolist()
    same = grey_levels(gpu[:1], ref[:1]).mean()
    assert grey_levels(gpu[1:2], ref[:1]).mean() > 4 * same + 1.0  # frame 0 is frame 0


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_a_gpu_backend_at_720p_matches_pyav(tmp_path_factory, backend):
    clip = video_clip(tmp_path_factory, "h264", width=1280, height=720, frames=8, fps=30,
                      truth_factor=1, crf=4)
    gpu = FrameDecoder("cuda:0", backend=backend).decode(clip)
    assert (grey_levels(gpu, reference(clip)) < TOLERANCE).all()


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_one_decoder_serves_clips_of_other_sizes_and_codecs_in_turn(tmp_path_factory, backend):
    clips = [video_clip(tmp_path_factory, "h264", width=256, height=256, frames=6, seed=1),
             video_clip(tmp_path_factory, "hevc", width=320, height=192, frames=6, seed=2),
             video_clip(tmp_path_factory, "h264", width=1280, height=720, frames=6, seed=3),
             video_clip(tmp_path_factory, "h264", width=256, height=256, frames=6, seed=4)]
    decoder = FrameDecoder("cuda:0", backend=backend)
    for clip in clips + clips:
        assert (grey_levels(decoder.decode(clip, 4), reference(clip)[:4]) < TOLERANCE).all()
    assert list(decoder._backends) == [backend]  # one backend object all along


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_a_profiled_decode_reports_every_phase_and_the_same_frames(tmp_path_factory, backend):
    clip = video_clip(tmp_path_factory, "h264", width=256, height=256, frames=8)
    decoder = FrameDecoder("cuda:0", backend=backend)
    plain = decoder.decode(clip)
    clock = PhaseClock("cuda:0")
    assert torch.equal(decoder.decode(clip, phases=clock), plain)
    assert tuple(clock.seconds) == DECODE_PHASES


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_a_gpu_backend_decodes_a_range(tmp_path_factory, backend):
    clip = video_clip(tmp_path_factory, "h264", width=256, height=256, frames=12)
    part = FrameDecoder("cuda:0", backend=backend).decode(clip, n_frames=4, start=5)
    assert (grey_levels(part, reference(clip)[5:9]) < TOLERANCE).all()


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_a_stream_in_segments_holds_the_rows_of_the_whole_video_on_a_gpu(tmp_path_factory,
                                                                          backend):
    clip = video_clip(tmp_path_factory, "h264", width=256, height=256, frames=11)
    decoder, model = FrameDecoder("cuda:0", backend=backend), FLAVRServed()
    reader = SegmentReader(decoder.open(clip, 4), model.stream_behind, model.stream_ahead)
    rows = []
    for _ in range(3):
        rows.append(model.make_segment_rows(*reader.next(4)))
    reader.close()
    whole = model.make_rows(decoder.decode(clip))
    assert [r.shape[0] for r in rows] == [4, 4, 2]
    assert torch.allclose(torch.cat(rows), whole, atol=1 / 255)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_a_corrupt_clip_fails_alone_and_the_next_decodes(tmp_path_factory, tmp_path, backend):
    clip = video_clip(tmp_path_factory, "h264", width=256, height=256, frames=12)
    decoder = FrameDecoder("cuda:0", backend=backend)
    with pytest.raises(VideoError):
        decoder.decode(corrupt_middle(clip, tmp_path / "bad.mp4"))
    assert decoder.decode(clip).shape[0] == 12
