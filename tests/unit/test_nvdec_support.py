"""Telling "this GPU's NVDEC does not decode the codec" from other GPU decode failures: the
libraries' words and the driver's answer (monkeypatched here: there is no GPU), and the two NVDEC
backends raising CodecUnsupportedError from them. (FrameDecoder's fallback to PyAV:
tests/integration/test_decode_fallback.py.)"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
import torch

from pipeline.errors import CodecUnsupportedError, VideoError
from pipeline.media import nvdec_support
from pipeline.media.backends.dali import DaliCpuBackend, DaliGpuBackend
from pipeline.media.backends.pynvc import PyNvVideoCodecBackend
from pipeline.media.probe import VideoInfo

GPU = torch.device("cuda:0")
CLIP = VideoInfo(Path("/clips/a.mp4"), "av1", 256, 256, 8, Fraction(24))
# as the libraries raised them on an H200 without AV1 decode
PYNVC_SAYS = ("HandleVideoSequence : Error code : 801 Error Type : Codec not supported on this "
              "GPU at /project/src/VideoCodecSDKUtils/helper_classes/NvCodec/NvDecoder.cpp:274")
DALI_SAYS = ("Critical error in pipeline:\nError in MIXED operator `nvidia.dali.fn.decoders."
             "video`\nAssert on \"frames_decoders_[s]->IsValid()\" failed: Failed to create "
             "video decoder for \"\"")


@pytest.fixture
def driver(monkeypatch):
    """`driver(answer)`: what the driver says about NVDEC decoding the codec (None: not asked)."""
    def answer(value):
        monkeypatch.setattr(nvdec_support, "nvdec_decodes", lambda device, codec: value)
    return answer


@pytest.mark.parametrize("text, cause", [
    (PYNVC_SAYS, "Codec not supported on this GPU"),
    ("[frames_decoder_gpu.cc:951] Codec av1 is not supported by NVDEC on this platform.",
     "Codec av1 is not supported by NVDEC"),
    ("Codec configuration not supported on this GPU. Codec: AV1, chroma format: YUV 4:2:0",
     "Codec configuration not supported on this GPU")])
def test_the_libraries_words_say_the_codec_is_missing_where_the_driver_is_not_asked(
        driver, text, cause):
    driver(None)
    err = nvdec_support.codec_unsupported(CLIP.path, "lib", GPU, "av1", text)
    assert isinstance(err, CodecUnsupportedError) and err.cause == f"lib: {cause}"
    assert (err.codec, err.device) == ("av1", "cuda:0")


def test_the_driver_saying_no_turns_dalis_silence_into_the_missing_codec(driver):
    driver(False)
    err = nvdec_support.codec_unsupported(CLIP.path, "DALI", GPU, "av1", DALI_SAYS)
    assert err.cause == "DALI: the driver lists no 8-bit 4:2:0 av1 decoder"


def test_a_codec_the_driver_decodes_is_never_declared_missing(driver):
    driver(True)  # e.g. a 4:4:4 H.264 clip: its configuration, not the codec, is unsupported
    assert nvdec_support.codec_unsupported(CLIP.path, "lib", GPU, "h264", PYNVC_SAYS) is None


def test_other_failures_are_not_a_missing_codec(driver):
    driver(None)
    assert nvdec_support.codec_unsupported(CLIP.path, "DALI", GPU, "av1", DALI_SAYS) is None


def test_the_driver_cannot_be_asked_without_a_gpu():
    assert nvdec_support.nvdec_decodes(torch.device("cpu"), "h264") is None
    assert nvdec_support.nvdec_decodes(GPU, "ffv1") is None


@pytest.mark.parametrize("backend, says", [(PyNvVideoCodecBackend, PYNVC_SAYS),
                                           (DaliGpuBackend, DALI_SAYS)])
def test_the_nvdec_backends_raise_codec_unsupported_naming_the_file(driver, backend, says):
    driver(False)
    err = backend(GPU)._error(CLIP, RuntimeError(says))
    assert isinstance(err, CodecUnsupportedError) and isinstance(err, VideoError)
    assert str(err).startswith("/clips/a.mp4: NVDEC on cuda:0 does not decode av1 (")


@pytest.mark.parametrize("backend, says", [(PyNvVideoCodecBackend, "PyNvVideoCodec could not"),
                                           (DaliGpuBackend, "DALI could not decode it")])
def test_the_nvdec_backends_report_other_failures_as_before(driver, backend, says):
    driver(True)
    err = backend(GPU)._error(CLIP, RuntimeError("Critical error in pipeline:\nboom"))
    assert type(err) is VideoError and says in str(err)


def test_dalis_cpu_decoder_never_blames_nvdec(driver):
    driver(False)
    err = DaliCpuBackend(torch.device("cpu"))._error(CLIP, RuntimeError(PYNVC_SAYS))
    assert type(err) is VideoError
