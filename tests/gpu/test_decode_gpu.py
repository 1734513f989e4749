"""NVDEC decoding on a GPU as the default choice makes it (PyNvVideoCodec where it imports, else
DALI), checked against PyAV's decode of the same file.

Tolerance: NVDEC and FFmpeg's H.264 decoder are both bit-exact decoders of the standard, and both
outputs go through the same BT.709 conversion (ours; DALI's BT.601 RGB corrected by one 3x3
matrix), so what remains is DALI's 8-bit rounding (and its rounding of upsampled chroma):
expected about 0.3 grey levels, required < 1 grey level mean absolute difference per channel.
Without the colour correction DALI and PyAV differ by several grey levels on this BT.709 clip.
(Each GPU backend forced in turn: test_decoders_gpu.py.)
"""
import pytest
import torch
from video_helpers import corrupt_middle, grey_levels, truth_frames, video_clip

from pipeline.errors import CodecUnsupportedError, VideoError
from pipeline.media.backends import backend_class
from pipeline.media.decode import FrameDecoder, choose_backend, iter_frame_chunks
from pipeline.media.encode import encoder_available

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
TOLERANCE = 1.0  # grey levels, mean absolute per channel
# the NVDEC backend the default choice takes here
NVDEC = "pynvvideocodec" if backend_class("pynvvideocodec").unavailable() is None else "dali-gpu"


@pytest.fixture(scope="module")
def hd_h264(tmp_path_factory):
    # crf 4: near-transparent (x264's own colour drift stays < 0.3 grey levels) but still a
    # High-profile stream; lossless (crf 0) would be High 4:4:4 Predictive, which NVDEC lacks.
    return video_clip(tmp_path_factory, "h264", width=1280, height=720, frames=8, fps=30,
                      truth_factor=1, crf=4)


def test_h264_goes_to_nvdec():
    assert choose_backend("cuda:0", "h264")[0] == NVDEC


def test_nvdec_h264_720p_matches_pyav_within_one_grey_level(hd_h264):
    decoder = FrameDecoder("cuda:0")
    gpu = decoder.decode(hd_h264)
    assert decoder.last_backend == NVDEC
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    ref = FrameDecoder("cuda:0", backend="pyav").decode(hd_h264)
    assert gpu.shape == ref.shape == (8, 3, 720, 1280)
    per_channel = grey_levels(gpu, ref)
    assert (per_channel < TOLERANCE).all(), per_channel.tolist()


def test_nvdec_frame_zero_is_frame_zero(hd_h264):
    gpu = FrameDecoder("cuda:0").decode(hd_h264)
    ref = FrameDecoder("cuda:0", backend="pyav").decode(hd_h264)
    same = grey_levels(gpu[:1], ref[:1]).mean()
    assert same < TOLERANCE
    assert grey_levels(gpu[:1], ref[1:2]).mean() > 4 * same + 1.0  # not shifted by one
    assert grey_levels(gpu[1:2], ref[:1]).mean() > 4 * same + 1.0


def test_nvdec_colour_has_no_systematic_bias_against_the_truth(hd_h264):
    gpu = FrameDecoder("cuda:0").decode(hd_h264).cpu() * 255.0
    truth, _ = truth_frames(hd_h264)
    bias = (gpu - truth).mean(dim=(0, 2, 3)).abs()
    assert (bias < 1.0).all(), bias.tolist()


def test_nvdec_range_and_resize_on_gpu(hd_h264):
    full = FrameDecoder("cuda:0").decode(hd_h264)
    part = FrameDecoder("cuda:0").decode(hd_h264, n_frames=3, start=4)
    assert torch.allclose(part, full[4:7], atol=1 / 255)
    small = FrameDecoder("cuda:0", resolution=(360, 640)).decode(hd_h264, 2)
    assert small.shape == (2, 3, 360, 640) and small.device.type == "cuda"


def test_nvdec_chunks_equal_one_decode(hd_h264):
    chunks = list(iter_frame_chunks(hd_h264, "cuda:0", 3))
    assert [c.shape[0] for c in chunks] == [3, 3, 2]
    whole = FrameDecoder("cuda:0").decode(hd_h264)
    assert (grey_levels(torch.cat(chunks), whole) < 0.01).all()


def test_nvdec_vp9(tmp_path_factory):
    clip = video_clip(tmp_path_factory, "vp9", width=256, height=256, frames=6)
    gpu = FrameDecoder("cuda:0").decode(clip)
    ref = FrameDecoder("cuda:0", backend="pyav").decode(clip)
    assert (grey_levels(gpu, ref) < TOLERANCE).all()


@pytest.mark.skipif(encoder_available("av1") is None, reason="this PyAV build has no AV1 encoder")
def test_nvdec_av1(tmp_path_factory):
    clip = video_clip(tmp_path_factory, "av1", width=256, height=256, frames=6)
    try:
        gpu = FrameDecoder("cuda:0", backend=NVDEC).decode(clip)
    except CodecUnsupportedError as e:  # e.g. an H200: the fallback is tested below
        pytest.skip(f"this GPU's NVDEC does not decode AV1: {e.cause}")
    ref = FrameDecoder("cuda:0", backend="pyav").decode(clip)
    assert (grey_levels(gpu, ref) < TOLERANCE).all()


@pytest.mark.skipif(encoder_available("av1") is None, reason="this PyAV build has no AV1 encoder")
def test_av1_goes_to_nvdec_or_where_nvdec_lacks_it_to_pyav(tmp_path_factory):
    clips = [video_clip(tmp_path_factory, "av1", width=256, height=256, frames=6, seed=s)
             for s in (0, 1)]
    decoder = FrameDecoder("cuda:0")
    for clip in clips:
        gpu = decoder.decode(clip)
        ref = FrameDecoder("cuda:0", backend="pyav").decode(clip)
        if decoder.last_backend == NVDEC:
            assert (grey_levels(gpu, ref) < TOLERANCE).all()
            continue
        assert decoder.last_backend == "pyav" and gpu.device.type == "cuda"
        assert decoder.last_reason.startswith("av1: this GPU's NVDEC does not decode it (")
        assert torch.equal(gpu, ref)
    notices = decoder.take_notices()
    assert notices == ([] if decoder.last_backend == NVDEC else [decoder.last_reason])


def test_nvdec_corrupt_file_raises_video_error(tmp_path_factory, tmp_path):
    clip = video_clip(tmp_path_factory, "h264", width=256, height=256, frames=12)
    bad = corrupt_middle(clip, tmp_path / "bad.mp4")
    with pytest.raises(VideoError):
        FrameDecoder("cuda:0").decode(bad)
