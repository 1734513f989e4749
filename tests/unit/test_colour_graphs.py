"""The NV12 converter's parts that do not need a GPU: its switch, and the eager path it keeps on
the CPU (tests/gpu/test_colour_graphs_gpu.py holds the graphs to the same bits)."""
import pytest
import torch

from pipeline.media.colour import nv12_to_rgb, yuv_to_rgb
from pipeline.media.colour_graphs import GRAPHS_ENV, NV12ToRGB, graphs_wanted
from pipeline.media.probe import Colour


def test_graphs_are_on_unless_turned_off(monkeypatch):
    monkeypatch.delenv(GRAPHS_ENV, raising=False)
    assert graphs_wanted()
    monkeypatch.setenv(GRAPHS_ENV, "off")
    assert not graphs_wanted()
    monkeypatch.setenv(GRAPHS_ENV, "fast")
    with pytest.raises(ValueError, match="FLAVR_COLOUR_GRAPHS='fast'"):
        graphs_wanted()


def test_nv12_planes_are_the_stacked_surface_read_as_y_over_interleaved_cb_cr():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 256, (3, 4, 6), generator=g, dtype=torch.uint8)
    u = torch.randint(0, 256, (3, 2, 3), generator=g, dtype=torch.uint8)
    v = torch.randint(0, 256, (3, 2, 3), generator=g, dtype=torch.uint8)
    nv12 = torch.cat([y, torch.stack([u, v], -1).flatten(-2)], 1)  # (3, 6, 6)
    colour = Colour("bt709", False)
    assert torch.equal(nv12_to_rgb(nv12, 4, 6, colour), yuv_to_rgb(y, u, v, colour))


def test_on_the_cpu_the_converter_is_the_eager_conversion():
    surfaces = list(torch.randint(0, 256, (2, 12, 8), dtype=torch.uint8))
    convert = NV12ToRGB(torch.device("cpu"))
    assert not convert.graphed
    out = convert(surfaces, 8, 8, Colour("bt601", True))
    assert torch.equal(out, nv12_to_rgb(torch.stack(surfaces), 8, 8, Colour("bt601", True)))
    assert convert.graphs == 0
