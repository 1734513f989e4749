"""A GPU whose NVDEC lacks a codec (AV1 on an H200): the default choice decodes that clip, and
every later one of the codec, with PyAV onto the GPU and says so once; a backend asked for by name
raises. On the CPU, with a fake NVDEC backend that decodes nothing (tests/nvdec_fakes.py) in
place of PyNvVideoCodec, and PyAV keeping its frames on the CPU."""
from __future__ import annotations

import pytest
import torch
from nvdec_fakes import CAUSE, NvdecWithoutCodecs
from video_helpers import video_clip

from pipeline.errors import CodecUnsupportedError, VideoError
from pipeline.media.backends import REGISTRY
from pipeline.media.decode import FrameDecoder


@pytest.fixture
def nvdec_lacks_everything(monkeypatch):
    monkeypatch.setitem(REGISTRY, "pynvvideocodec", "nvdec_fakes:NvdecWithoutCodecs")
    monkeypatch.setitem(REGISTRY, "pyav", "nvdec_fakes:PyAvOnTheCpu")
    monkeypatch.setattr(NvdecWithoutCodecs, "asked", [])
    return NvdecWithoutCodecs.asked


def pyav(clip, n=None):
    return FrameDecoder("cpu", backend="pyav").decode(clip, n)


def fallback_reason(codec: str) -> str:
    return (f"{codec}: this GPU's NVDEC does not decode it ({CAUSE}): PyAV on the CPU, frames "
            f"copied to cuda:0")


def test_a_clip_whose_codec_nvdec_lacks_is_decoded_by_pyav_and_said_once(
        tmp_path_factory, nvdec_lacks_everything):
    first = video_clip(tmp_path_factory, "h264", frames=6, seed=1)
    second = video_clip(tmp_path_factory, "h264", frames=6, seed=2)
    decoder = FrameDecoder("cuda:0")
    assert torch.equal(decoder.decode(first, 4), pyav(first, 4))
    assert (decoder.last_backend, decoder.last_reason) == ("pyav", fallback_reason("h264"))
    assert decoder.take_notices() == [fallback_reason("h264")]
    # later clips of the codec go straight to PyAV, and nothing more is said
    assert torch.equal(decoder.decode(second), pyav(second))
    assert decoder.last_backend == "pyav" and decoder.take_notices() == []
    assert nvdec_lacks_everything == [first]


def test_what_is_remembered_is_the_codec(tmp_path_factory, nvdec_lacks_everything):
    h264 = video_clip(tmp_path_factory, "h264", frames=4)
    vp9 = video_clip(tmp_path_factory, "vp9", frames=4)
    decoder = FrameDecoder("cuda:0")
    decoder.decode(h264)
    decoder.decode(vp9)  # not known yet: NVDEC is asked, and lacks it too
    decoder.decode(h264)
    assert nvdec_lacks_everything == [h264, vp9]
    assert decoder.take_notices() == [fallback_reason("h264"), fallback_reason("vp9")]


def test_a_stream_opened_on_nvdec_goes_on_with_pyav_from_its_first_frame(
        tmp_path_factory, nvdec_lacks_everything):
    clip = video_clip(tmp_path_factory, "h264", frames=10)
    decoder = FrameDecoder("cuda:0")
    source = decoder.open(clip, 4)
    frames = torch.cat([source.read(4), source.read(4), source.read(4)])
    source.close()
    assert torch.equal(frames, pyav(clip))
    assert decoder.last_backend == "pyav" and decoder.take_notices() == [fallback_reason("h264")]
    decoder.open(clip, 4).close()  # reopened (a looping stream): NVDEC is not asked again
    assert nvdec_lacks_everything == [clip]


def test_chunks_on_nvdec_go_on_with_pyav_from_the_first(tmp_path_factory,
                                                        nvdec_lacks_everything):
    clip = video_clip(tmp_path_factory, "h264", frames=10)
    decoder = FrameDecoder("cuda:0")
    chunks = list(decoder.iter_chunks(clip, 4))
    assert [c.shape[0] for c in chunks] == [4, 4, 2]
    assert torch.equal(torch.cat(chunks), pyav(clip))
    assert decoder.take_notices() == [fallback_reason("h264")]


def test_a_backend_asked_for_by_name_raises_naming_the_file(tmp_path_factory,
                                                            nvdec_lacks_everything):
    clip = video_clip(tmp_path_factory, "h264", frames=6)
    decoder = FrameDecoder("cuda:0", backend="pynvvideocodec")
    for attempt in (lambda: decoder.decode(clip), lambda: decoder.open(clip, 4).read(4),
                    lambda: next(iter(decoder.iter_chunks(clip, 4)))):
        with pytest.raises(CodecUnsupportedError) as err:
            attempt()
        assert isinstance(err.value, VideoError) and str(clip) in str(err.value)
        assert f"NVDEC on cuda:0 does not decode h264 ({CAUSE})" in str(err.value)
    assert decoder.take_notices() == [] and decoder.last_backend == "pynvvideocodec"
