"""The parts of PyNvVideoCodec's copy out of the decoder that need no GPU: its switch, and the
converter's fill seam that both ways of copying write through (tests/gpu/test_pynvc_copy_gpu.py
holds the driver's copies to DLPack's bits)."""
import pytest
import torch

from pipeline.media.backends.pynvc import COPY_ENV, driver_copies_wanted
from pipeline.media.colour import nv12_to_rgb
from pipeline.media.colour_graphs import NV12ToRGB
from pipeline.media.phases import PhaseClock
from pipeline.media.probe import Colour


def test_driver_copies_are_on_unless_turned_off(monkeypatch):
    monkeypatch.delenv(COPY_ENV, raising=False)
    assert driver_copies_wanted()
    monkeypatch.setenv(COPY_ENV, "dlpack")
    assert not driver_copies_wanted()
    monkeypatch.setenv(COPY_ENV, "memcpy")
    with pytest.raises(ValueError, match="FLAVR_PYNVC_COPY='memcpy'"):
        driver_copies_wanted()


def test_the_converter_converts_what_the_fill_wrote_and_times_the_fill_as_copy():
    stack = torch.randint(0, 256, (3, 12, 8), dtype=torch.uint8)
    given = []

    def fill(nv12: torch.Tensor) -> None:
        given.append(nv12.shape)
        nv12.copy_(stack)

    phases = PhaseClock("cpu")
    out = NV12ToRGB(torch.device("cpu")).convert(3, 8, 8, Colour("bt709", False), fill, phases)
    assert given == [(3, 12, 8)]
    assert torch.equal(out, nv12_to_rgb(stack, 8, 8, Colour("bt709", False)))
    assert set(phases.seconds) == {"copy"}
