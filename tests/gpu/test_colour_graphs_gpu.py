"""NV12 -> RGB replayed from CUDA graphs gives the eager conversion's bits, fresh for every
input, in frames the caller keeps; shapes past the cache or the size limit stay correct."""
import pytest
import torch
from video_helpers import video_clip

from pipeline.media import colour_graphs
from pipeline.media.backends import backend_class
from pipeline.media.colour import nv12_to_rgb
from pipeline.media.colour_graphs import MAX_GRAPHS, NV12ToRGB
from pipeline.media.decode import FrameDecoder
from pipeline.media.probe import Colour

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
DEVICE = torch.device("cuda:0")
COLOURS = [Colour("bt709", False), Colour("bt601", True), Colour("bt2020", False)]


def surfaces(frames: int, height: int, width: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    stack = torch.randint(0, 256, (frames, height + height // 2, width), generator=g,
                          dtype=torch.uint8, device=DEVICE)
    return list(stack)


def eager(s: list[torch.Tensor], height: int, width: int, colour: Colour) -> torch.Tensor:
    return nv12_to_rgb(torch.stack(s), height, width, colour)


@pytest.mark.parametrize("colour", COLOURS, ids=lambda c: f"{c.matrix}-{int(c.full_range)}")
@pytest.mark.parametrize("shape", [(8, 256, 256), (3, 64, 96), (1, 2, 2)])
def test_graph_gives_the_eager_bits(colour, shape):
    convert = NV12ToRGB(DEVICE)
    assert convert.graphed
    for seed in range(3):  # the first call captures, the next ones replay on new data
        s = surfaces(*shape, seed)
        assert torch.equal(convert(s, *shape[1:], colour), eager(s, *shape[1:], colour))
    assert convert.graphs == 1


def test_frames_handed_back_are_not_overwritten_by_the_next_replay():
    convert = NV12ToRGB(DEVICE)
    first_in, second_in = surfaces(8, 64, 64, 1), surfaces(8, 64, 64, 2)
    first = convert(first_in, 64, 64, COLOURS[0])
    kept = first.clone()
    second = convert(second_in, 64, 64, COLOURS[0])
    assert torch.equal(first, kept)
    assert first.data_ptr() != second.data_ptr()


def test_least_recently_used_graph_goes_and_every_shape_stays_right():
    convert = NV12ToRGB(DEVICE)
    shapes = [(k + 1, 32, 32) for k in range(MAX_GRAPHS + 3)]
    for shape in shapes + shapes[:2]:
        s = surfaces(*shape, seed=shape[0])
        assert torch.equal(convert(s, 32, 32, COLOURS[0]), eager(s, 32, 32, COLOURS[0]))
    assert convert.graphs == MAX_GRAPHS


def test_large_frames_are_converted_eagerly(monkeypatch):
    monkeypatch.setattr(colour_graphs, "MAX_PIXELS", 4 * 64 * 64)
    convert = NV12ToRGB(DEVICE)
    s = surfaces(8, 64, 64, 0)
    assert torch.equal(convert(s, 64, 64, COLOURS[0]), eager(s, 64, 64, COLOURS[0]))
    assert convert.graphs == 0


@pytest.mark.skipif(backend_class("pynvvideocodec").unavailable() is not None,
                    reason="PyNvVideoCodec does not import here")
def test_pynvvideocodec_decodes_the_same_bits_with_graphs_off(tmp_path_factory, monkeypatch):
    clip = video_clip(tmp_path_factory, "h264", 256, 256, frames=16)
    on = FrameDecoder(DEVICE, backend="pynvvideocodec")
    frames_on = [on.decode(clip, 8) for _ in range(2)]
    monkeypatch.setenv(colour_graphs.GRAPHS_ENV, "off")
    off = FrameDecoder(DEVICE, backend="pynvvideocodec")
    for frames in frames_on:
        assert torch.equal(frames, off.decode(clip, 8))
