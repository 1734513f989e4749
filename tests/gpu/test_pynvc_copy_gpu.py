"""PyNvVideoCodec's surfaces copied out of the decoder by the driver, from their addresses, give
the bits that DLPack's import of them gives: clips of every codec this NVDEC decodes, 720p,
ranges and streams, with the colour graphs on and off. A driver that refuses the copies leaves
DLPack to read them; and the copier itself copies blocks in order."""
import pytest
import torch
from video_helpers import video_clip

from pipeline.media import colour_graphs
from pipeline.media.backends import backend_class
from pipeline.media.backends.pynvc import COPY_ENV
from pipeline.media.cuda_driver import AddressCopier, CudaDriverError
from pipeline.media.decode import FrameDecoder

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
DEVICE = torch.device("cuda:0")
needs_pynvc = pytest.mark.skipif(backend_class("pynvvideocodec").unavailable() is not None,
                                 reason="PyNvVideoCodec does not import here")


def copies_made(monkeypatch) -> list[int]:
    """Records the number of surfaces of each copy the driver makes."""
    made, real = [], AddressCopier.copy

    def copy(self, out, sources, nbytes, stream, after=()):
        made.append(len(sources))
        return real(self, out, sources, nbytes, stream, after)

    monkeypatch.setattr(AddressCopier, "copy", copy)
    return made


def every_way(decoder: FrameDecoder, clip) -> list[torch.Tensor]:
    """A clip from its start, a range from frame 5, and the whole file read as a stream."""
    return [decoder.decode(clip, 8), decoder.decode(clip, 8, start=5),
            torch.cat(list(decoder.iter_chunks(clip, 6)))]


@needs_pynvc
@pytest.mark.parametrize("graphs", ["on", "off"])
@pytest.mark.parametrize("codec,size", [("h264", (256, 256)), ("hevc", (256, 256)),
                                        ("vp9", (256, 256)), ("h264", (1280, 720))],
                         ids=lambda v: f"{v[0]}x{v[1]}" if isinstance(v, tuple) else v)
def test_driver_copies_give_the_bits_of_dlpack(tmp_path_factory, monkeypatch, codec, size,
                                               graphs):
    monkeypatch.setenv(colour_graphs.GRAPHS_ENV, graphs)
    clip = video_clip(tmp_path_factory, codec, *size, frames=16)
    made = copies_made(monkeypatch)
    got = every_way(FrameDecoder(DEVICE, backend="pynvvideocodec"), clip)
    assert made == [8, 8, 6, 6, 4], "some surfaces went through DLPack, not the driver"
    monkeypatch.setenv(COPY_ENV, "dlpack")
    want = every_way(FrameDecoder(DEVICE, backend="pynvvideocodec"), clip)
    assert len(made) == 5
    for a, b in zip(got, want):
        assert torch.equal(a, b)


@needs_pynvc
@pytest.mark.gpu2
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_driver_copies_on_a_second_gpu_give_the_bits_of_dlpack(tmp_path_factory, monkeypatch):
    """The copies run in the second GPU's own context, pushed for them, while the first GPU is
    the thread's current device."""
    clip = video_clip(tmp_path_factory, "h264", 256, 256, frames=16)
    second = torch.device("cuda:1")
    torch.cuda.set_device(0)
    made = copies_made(monkeypatch)
    got = every_way(FrameDecoder(second, backend="pynvvideocodec"), clip)
    assert made == [8, 8, 6, 6, 4] and all(t.device == second for t in got)
    monkeypatch.setenv(COPY_ENV, "dlpack")
    want = every_way(FrameDecoder(second, backend="pynvvideocodec"), clip)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


@needs_pynvc
def test_a_driver_that_refuses_the_copies_leaves_them_to_dlpack(tmp_path_factory, monkeypatch):
    clip = video_clip(tmp_path_factory, "h264", 256, 256, frames=16)
    want = FrameDecoder(DEVICE, backend="pynvvideocodec").decode(clip, 8)
    tried = []

    def refuse(self, out, sources, nbytes, stream, after=()):
        tried.append(len(sources))
        raise CudaDriverError("cuMemcpyDtoDAsync failed: CUDA_ERROR_INVALID_VALUE (1)")

    monkeypatch.setattr(AddressCopier, "copy", refuse)
    decoder = FrameDecoder(DEVICE, backend="pynvvideocodec")
    with pytest.warns(RuntimeWarning, match="read through DLPack from now on"):
        assert torch.equal(decoder.decode(clip, 8), want)
    assert torch.equal(decoder.decode(clip, 8), want)
    assert tried == [8]  # asked once, then left alone


def test_the_copier_copies_blocks_from_addresses_in_order():
    blocks = [torch.randint(0, 256, (1000,), dtype=torch.uint8, device=DEVICE) for _ in range(3)]
    out = torch.zeros(3000, dtype=torch.uint8, device=DEVICE)
    stream = torch.cuda.current_stream(DEVICE).cuda_stream
    AddressCopier(DEVICE).copy(out, [b.data_ptr() for b in reversed(blocks)], 1000, stream)
    assert torch.equal(out, torch.cat(blocks[::-1]))


def test_the_copier_waits_for_the_writers_event_on_another_stream():
    """A block written on a side stream is copied once that stream's event has passed: the
    side stream runs a long kernel before the write, so a copy that did not wait would read
    zeros."""
    side = torch.cuda.Stream(DEVICE)
    block = torch.zeros(1 << 20, dtype=torch.uint8, device=DEVICE)
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)  # ~tens of ms of GPU time before the write
        block.fill_(7)
        written = torch.cuda.Event()
        written.record(side)
    out = torch.zeros_like(block)
    stream = torch.cuda.current_stream(DEVICE).cuda_stream
    AddressCopier(DEVICE).copy(out, [block.data_ptr()], block.numel(), stream,
                               after=(written.cuda_event,))
    assert torch.equal(out, torch.full_like(block, 7))


def test_the_copier_refuses_a_buffer_it_would_overrun_or_one_off_the_device():
    copier = AddressCopier(DEVICE)
    block = torch.zeros(100, dtype=torch.uint8, device=DEVICE)
    with pytest.raises(ValueError, match="do not fit"):
        copier.copy(torch.zeros(150, dtype=torch.uint8, device=DEVICE),
                    [block.data_ptr()] * 2, 100, 0)
    with pytest.raises(ValueError, match="contiguous tensor on cuda:0"):
        copier.copy(torch.zeros(200, dtype=torch.uint8), [block.data_ptr()] * 2, 100, 0)
