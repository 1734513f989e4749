"""Writing videos: codec choice, 8-bit conversion at the writer, colour tags, round trip."""
import av
import pytest
import torch

from pipeline.media.decode import FrameDecoder
from pipeline.media.encode import (
    VideoWriter,
    encoder_available,
    pick_codec,
    rgb_to_yuv420,
)
from pipeline.media.probe import Colour, probe


def _smooth_frames(T=6, h=48, w=64):
    y = torch.linspace(0, 1, h).view(1, 1, h, 1)
    x = torch.linspace(0, 1, w).view(1, 1, 1, w)
    t = torch.arange(T, dtype=torch.float32).view(T, 1, 1, 1) / T
    channels = [0.2 + 0.6 * x * (1 - t), 0.3 + 0.4 * y + 0 * t, 0.5 + 0.3 * (x - y) * t]
    return torch.cat([c.expand(T, 1, h, w) for c in channels], 1)


def test_auto_codec_is_h264_when_available_and_vp9_for_webm(tmp_path):
    assert pick_codec(tmp_path / "a.mp4") == ("h264" if encoder_available("h264") else "vp9")
    assert pick_codec(tmp_path / "a.webm") == "vp9"


@pytest.mark.parametrize("name", ["out.mp4", "out.webm"])
def test_round_trip_keeps_size_count_fps_and_colour(tmp_path, name):
    frames = _smooth_frames()
    with VideoWriter(tmp_path / name, 30, 64, 48) as writer:
        writer.write(frames[:2])          # a batch ...
        for f in frames[2:]:
            writer.write(f)               # ... or one (3,H,W) frame at a time
    info = probe(tmp_path / name)
    assert (info.width, info.height, info.frames, info.fps) == (64, 48, 6, 30.0)
    assert info.codec == writer.codec and info.colour == Colour("bt709", False)
    back = FrameDecoder("cpu").decode(tmp_path / name)
    assert ((back - frames).abs() * 255).mean() < 2.0  # smooth content: near-transparent


def test_writer_clamps_out_of_range_values(tmp_path):
    frames = torch.full((2, 3, 16, 16), 1.7)
    frames[:, 1] = -0.5
    with VideoWriter(tmp_path / "clamp.mp4", 24, 16, 16) as writer:
        writer.write(frames)
    back = FrameDecoder("cpu").decode(tmp_path / "clamp.mp4") * 255
    assert back[:, 0].mean() > 250 and back[:, 1].mean() < 5


def test_yuv_planes_are_rounded_once_to_limited_range():
    white, black = torch.ones(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    y, u, v = rgb_to_yuv420(torch.cat([white, black]), Colour("bt709", False))
    assert y.dtype == torch.uint8 and u.shape == (2, 2, 2)
    assert y[0].unique().tolist() == [235] and y[1].unique().tolist() == [16]
    assert u.unique().tolist() == [128] and v.unique().tolist() == [128]


def test_fractional_fps_is_kept_exact(tmp_path):
    with VideoWriter(tmp_path / "ntsc.mp4", 30000 / 1001, 16, 16) as writer:
        writer.write(torch.rand(3, 3, 16, 16))
    assert probe(tmp_path / "ntsc.mp4").rate == 30000 / 1001 or \
        abs(probe(tmp_path / "ntsc.mp4").fps - 29.97) < 0.01


def test_odd_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="even"):
        VideoWriter(tmp_path / "odd.mp4", 24, 63, 48)


@pytest.mark.parametrize("name, codec, crf", [("a.webm", "vp9", 64), ("a.webm", "vp8", 3),
                                              ("a.mp4", "auto", -1)])
def test_a_crf_the_encoder_refuses_is_named_with_its_range_before_a_file_is_made(tmp_path, name,
                                                                                codec, crf):
    with pytest.raises(ValueError, match=rf"crf {crf} is outside \w+'s range \d+\.\.\d+"):
        VideoWriter(tmp_path / name, 24, 16, 16, codec=codec, crf=crf)
    assert list(tmp_path.iterdir()) == []


def test_stream_carries_colour_tags(tmp_path):
    with VideoWriter(tmp_path / "tags.webm", 24, 32, 32) as writer:
        writer.write(torch.rand(2, 3, 32, 32))
    with av.open(str(tmp_path / "tags.webm")) as c:
        ctx = c.streams.video[0].codec_context
        assert (ctx.colorspace, ctx.color_range) == (1, 1)
