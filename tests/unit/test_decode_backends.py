"""The decode-backend seam: the registry, what each backend says it decodes, and the checks of a
forced backend. (Decoding real clips with each backend: tests/integration/test_decode.py.)"""
from __future__ import annotations

import pytest
import torch

from pipeline.media.backends import BACKENDS, backend_class
from pipeline.media.backends.base import DecodeBackend
from pipeline.media.decode import FrameDecoder, check_backend
from pipeline.media.probe import SUPPORTED_CODECS


def test_every_registered_backend_is_a_decode_backend_under_its_own_name():
    assert BACKENDS == ("dali-gpu", "dali-cpu", "pyav", "pynvvideocodec")
    for name in BACKENDS:
        cls = backend_class(name)
        assert issubclass(cls, DecodeBackend) and cls.name == name
        assert set(cls.codecs) <= set(SUPPORTED_CODECS)
        assert set(cls.devices) <= {"cpu", "cuda"}


def test_an_unknown_backend_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown backend 'nvcodec' \\(choose from auto, dali-gpu"):
        backend_class("nvcodec")
    with pytest.raises(ValueError, match="unknown backend 'nvcodec'"):
        FrameDecoder("cpu", backend="nvcodec")


@pytest.mark.parametrize("name, device, codec", [
    ("dali-gpu", "cpu", "h264"), ("dali-gpu", "cuda:0", "vp8"), ("dali-cpu", "cpu", "h264"),
    ("dali-cpu", "cpu", "av1")])
def test_a_forced_backend_refuses_what_it_cannot_decode(name, device, codec):
    with pytest.raises(ValueError, match=f"{name} decodes .* not {codec} onto {device}"):
        check_backend(name, torch.device(device), codec)


def test_pyav_takes_every_supported_codec_onto_either_device():
    for codec in SUPPORTED_CODECS:
        for device in ("cpu", "cuda:0"):
            check_backend("pyav", torch.device(device), codec)


@pytest.mark.skipif(backend_class("pynvvideocodec").unavailable() is None,
                    reason="PyNvVideoCodec imports here")
def test_pynvvideocodec_says_why_it_cannot_run_where_it_does_not_import():
    with pytest.raises(RuntimeError, match="backend pynvvideocodec cannot run here: "):
        check_backend("pynvvideocodec", torch.device("cuda:0"), "h264")


def test_pynvvideocodec_decodes_nvdec_codecs_onto_gpus_only():
    cls = backend_class("pynvvideocodec")
    assert cls.devices == ("cuda",) and cls.codecs == ("h264", "hevc", "vp9", "av1")
    with pytest.raises(ValueError, match="pynvvideocodec decodes .* not h264 onto cpu"):
        check_backend("pynvvideocodec", torch.device("cpu"), "h264")
