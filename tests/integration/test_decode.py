"""Decoding real files on the CPU: backend choice, colour agreement between backends, errors."""
import av
import numpy as np
import pytest
import torch
from video_helpers import (
    corrupt_middle,
    cut_in_half,
    ffv1_clip,
    grey_levels,
    truth_frames,
    video_clip,
)

from pipeline.errors import VideoError
from pipeline.media.backends.dali import DaliBackend
from pipeline.media.backends.pynvc import PyNvVideoCodecBackend
from pipeline.media.decode import FrameDecoder, choose_backend, iter_frame_chunks
from pipeline.media.encode import encoder_available
from pipeline.media.probe import Colour, probe

# DALI's CPU decoder and PyAV decode the same VP9 bitstream (both libavcodec) and we convert
# both with the stream's BT.709 matrix; what remains is DALI's 8-bit rounding of its own BT.601
# RGB before our 3x3 correction: well under half a grey level on average per channel.
BACKEND_TOLERANCE = 0.5


@pytest.mark.parametrize("device, codec, backend", [
    ("cpu", "vp9", "dali-cpu"),
    ("cpu", "vp8", "dali-cpu"),
    ("cpu", "h264", "pyav"),
    ("cpu", "hevc", "pyav"),
    ("cpu", "av1", "pyav"),
])
def test_choose_backend_per_device_and_codec(device, codec, backend):
    name, reason = choose_backend(device, codec)
    assert name == backend and reason


@pytest.fixture
def gpu_libraries(monkeypatch):
    """`present(pynvvideocodec=..., dali=...)`: which GPU decode libraries import, as far as
    choose_backend can tell (their backends' unavailable()); the decoders themselves never run."""
    def present(pynvvideocodec: bool, dali: bool) -> None:
        for cls, here, library in ((PyNvVideoCodecBackend, pynvvideocodec, "PyNvVideoCodec"),
                                   (DaliBackend, dali, "nvidia.dali")):
            why = None if here else f"ModuleNotFoundError: No module named '{library}'"
            monkeypatch.setattr(cls, "unavailable", classmethod(lambda c, why=why: why))
    return present


@pytest.mark.parametrize("codec", ["h264", "hevc", "vp9", "av1"])
@pytest.mark.parametrize("dali", [True, False])
def test_a_gpu_decodes_nvdec_codecs_with_pynvvideocodec_where_it_imports(gpu_libraries, codec,
                                                                         dali):
    gpu_libraries(pynvvideocodec=True, dali=dali)
    name, reason = choose_backend("cuda:1", codec)
    assert name == "pynvvideocodec"
    assert reason.startswith(f"{codec} on cuda:1: NVDEC through PyNvVideoCodec")


@pytest.mark.parametrize("codec", ["h264", "hevc", "vp9", "av1"])
def test_a_gpu_without_pynvvideocodec_decodes_with_dali_on_nvdec(gpu_libraries, codec):
    gpu_libraries(pynvvideocodec=False, dali=True)
    name, reason = choose_backend("cuda:1", codec)
    assert name == "dali-gpu" and "device_id=1" in reason
    assert "PyNvVideoCodec does not import (ModuleNotFoundError" in reason


def test_a_gpu_without_either_nvdec_library_refuses_and_names_both(gpu_libraries):
    gpu_libraries(pynvvideocodec=False, dali=False)
    with pytest.raises(RuntimeError, match="needs pynvvideocodec or nvidia-dali") as err:
        choose_backend("cuda:0", "h264")
    assert "No module named 'PyNvVideoCodec'" in str(err.value)
    assert "No module named 'nvidia.dali'" in str(err.value)


@pytest.mark.parametrize("pynvvideocodec", [True, False])
def test_vp8_on_a_gpu_stays_on_dalis_cpu_decoder(gpu_libraries, pynvvideocodec):
    gpu_libraries(pynvvideocodec=pynvvideocodec, dali=True)
    name, reason = choose_backend("cuda:0", "vp8")
    assert name == "dali-cpu" and "not sent to NVDEC" in reason


def test_vp8_on_a_gpu_without_dali_is_decoded_by_pyav(gpu_libraries):
    gpu_libraries(pynvvideocodec=True, dali=False)
    name, reason = choose_backend("cuda:0", "vp8")
    assert name == "pyav" and "nvidia-dali does not import" in reason


def test_choose_backend_rejects_codec_it_cannot_decode():
    with pytest.raises(ValueError, match="unsupported codec 'ffv1'"):
        choose_backend("cpu", "ffv1")


def test_dali_cpu_and_pyav_agree_on_vp9_colour_and_frame_order(tmp_path_factory):
    clip = video_clip(tmp_path_factory, "vp9", frames=10)
    dali = FrameDecoder("cpu", backend="dali-cpu").decode(clip)
    pyav = FrameDecoder("cpu", backend="pyav").decode(clip)
    assert dali.shape == pyav.shape == (10, 3, 64, 64)
    assert (grey_levels(dali, pyav) < BACKEND_TOLERANCE).all(), grey_levels(dali, pyav)
    # no frame offset: each DALI frame is far closer to PyAV's same frame than to its neighbours
    for i in range(1, 9):
        same = grey_levels(dali[i:i + 1], pyav[i:i + 1]).mean()
        for j in (i - 1, i + 1):
            assert grey_levels(dali[i:i + 1], pyav[j:j + 1]).mean() > 4 * same + 1.0


def test_library_default_conversions_differ_and_ours_match_the_truth(tmp_path_factory):
    """Why the conversion is ours: PyAV's plain rgb24 (swscale's fast path) is biased."""
    clip = video_clip(tmp_path_factory, "h264", frames=4, truth_factor=1, crf=0)  # lossless
    truth, _ = truth_frames(clip)
    ours = FrameDecoder("cpu").decode(clip) * 255.0
    with av.open(str(clip)) as c:
        default = torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1)
                               for f in c.decode(video=0)]).float()
    ours_err = (ours - truth).mean(dim=(0, 2, 3)).abs()       # systematic (signed) error
    default_err = (default - truth).mean(dim=(0, 2, 3)).abs()
    assert (ours_err < 0.5).all(), ours_err
    assert default_err.max() > 2 * ours_err.max() + 0.5, (default_err, ours_err)


def test_h264_decodes_with_pyav_on_cpu(tmp_path_factory):
    clip = video_clip(tmp_path_factory, "h264", frames=8, truth_factor=1)
    decoder = FrameDecoder("cpu")
    frames = decoder.decode(clip)
    assert decoder.last_backend == "pyav"
    assert frames.dtype == torch.float32 and frames.shape == (8, 3, 64, 64)
    assert 0.0 <= frames.min() and frames.max() <= 1.0
    truth, _ = truth_frames(clip)
    assert grey_levels(frames, truth / 255.0).mean() < 6.0


@pytest.mark.skipif(encoder_available("av1") is None, reason="this PyAV build has no AV1 encoder")
def test_av1_is_probed_as_av1_and_decodes_with_pyav_on_cpu(tmp_path_factory):
    clip = video_clip(tmp_path_factory, "av1", frames=8, truth_factor=1)
    assert probe(clip).codec == "av1"  # whichever decoder (libdav1d, libaom) FFmpeg opens it with
    decoder = FrameDecoder("cpu")
    frames = decoder.decode(clip)
    assert decoder.last_backend == "pyav" and frames.shape == (8, 3, 64, 64)
    truth, _ = truth_frames(clip)
    bias = (frames * 255.0 - truth).mean(dim=(0, 2, 3)).abs()
    assert (bias < 1.0).all(), bias


def test_a_decoder_keeps_one_backend_per_kind_across_clips(tmp_path_factory):
    decoder = FrameDecoder("cpu")
    decoder.decode(video_clip(tmp_path_factory, "vp9", frames=4))
    decoder.decode(video_clip(tmp_path_factory, "h264", frames=4))
    first = dict(decoder._backends)
    decoder.decode(video_clip(tmp_path_factory, "vp9", frames=4, seed=2))
    decoder.decode(video_clip(tmp_path_factory, "h264", frames=4, seed=2))
    assert sorted(first) == ["dali-cpu", "pyav"]
    assert all(decoder._backends[name] is first[name] for name in first)


def test_decode_range_returns_min_of_asked_and_available(tmp_path_factory):
    clip = video_clip(tmp_path_factory, "vp9", frames=10)
    full = FrameDecoder("cpu").decode(clip)
    part = FrameDecoder("cpu").decode(clip, n_frames=4, start=3)
    assert torch.allclose(part, full[3:7])
    assert FrameDecoder("cpu").decode(clip, n_frames=50, start=6).shape[0] == 4


def test_resize_to_asked_resolution(tmp_path_factory):
    clip = video_clip(tmp_path_factory, "h264", frames=8)
    frames = FrameDecoder("cpu", resolution=(32, 48)).decode(clip, 3)
    assert frames.shape == (3, 3, 32, 48)
    full = FrameDecoder("cpu").decode(clip, 3)
    # antialiased downscale keeps the mean colour
    assert torch.allclose(frames.mean(dim=(2, 3)), full.mean(dim=(2, 3)), atol=0.02)


@pytest.mark.parametrize("codec, backend", [("vp9", "dali-cpu"), ("vp9", "pyav"),
                                            ("h264", "pyav")])
def test_chunks_stream_the_same_frames_as_one_decode(tmp_path_factory, codec, backend):
    clip = video_clip(tmp_path_factory, codec, frames=10)
    chunks = list(iter_frame_chunks(clip, "cpu", 4, backend=backend))
    assert [c.shape[0] for c in chunks] == [4, 4, 2]
    whole = FrameDecoder("cpu", backend=backend).decode(clip)
    assert torch.equal(torch.cat(chunks), whole)


def test_dali_pipeline_survives_a_bad_file_and_an_abandoned_stream(tmp_path_factory, tmp_path):
    clip = video_clip(tmp_path_factory, "vp9", frames=10)
    other = video_clip(tmp_path_factory, "vp9", frames=10, seed=5)
    decoder = FrameDecoder("cpu", backend="dali-cpu")
    stream = iter(decoder.iter_chunks(clip, 3))
    next(stream)
    stream.close()  # stopped early: its leftover frames must not show up for the next file
    first = next(iter(decoder.iter_chunks(other, 3)))
    assert torch.equal(first, decoder.decode(other, 3))
    with pytest.raises(VideoError):
        decoder.decode(cut_in_half(clip, tmp_path / "half.webm"))
    assert decoder.decode(clip).shape[0] == 10


def test_colour_defaults_follow_size_when_untagged():
    assert Colour.for_stream(2, 0, 1920, 1080) == Colour("bt709", False)
    assert Colour.for_stream(None, None, 720, 576) == Colour("bt601", False)
    assert Colour.for_stream(2, 2, 640, 480) == Colour("bt601", True)
    assert Colour.for_stream(5, 0, 1920, 1080, "yuvj420p") == Colour("bt601", True)


# ---- errors: each names the file ----------------------------------------------------------

def _expect_error(path, match):
    with pytest.raises(VideoError, match=match) as err:
        FrameDecoder("cpu").decode(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    _expect_error(tmp_path / "nope.mp4", "no such file")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.touch()
    _expect_error(path, "empty file")


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    _expect_error(path, "not a video")


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "tone.m4a"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate = 16000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    _expect_error(path, "no video stream")


def test_unsupported_codec(tmp_path):
    _expect_error(ffv1_clip(tmp_path / "lossless.mkv"), "unsupported codec 'ffv1'")


def test_single_frame_clip(tmp_path_factory):
    _expect_error(video_clip(tmp_path_factory, "vp9", frames=1), "at least 2")


@pytest.mark.parametrize("codec", ["vp9", "h264"])
def test_truncated_file(tmp_path_factory, tmp_path, codec):
    clip = video_clip(tmp_path_factory, codec, frames=12)
    _expect_error(cut_in_half(clip, tmp_path / f"half{clip.suffix}"), "truncated|not a video")


@pytest.mark.parametrize("codec, backend", [("vp9", "dali-cpu"), ("vp9", "pyav"),
                                            ("h264", "pyav")])
def test_corrupt_middle(tmp_path_factory, tmp_path, codec, backend):
    clip = video_clip(tmp_path_factory, codec, frames=12)
    bad = corrupt_middle(clip, tmp_path / f"bad{clip.suffix}")
    with pytest.raises(VideoError, match="corrupt|truncated|damaged") as err:
        FrameDecoder("cpu", backend=backend).decode(bad)
    assert str(bad) in str(err.value)
