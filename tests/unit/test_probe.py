"""What probe says a stream is: the codec, whichever decoder FFmpeg picked to open it."""
from __future__ import annotations

import av
import pytest

from pipeline.media.probe import codec_name


@pytest.mark.parametrize("decoder, codec", [("libdav1d", "av1"), ("libaom-av1", "av1"),
                                            ("libvpx-vp9", "vp9"), ("h264", "h264")])
def test_a_stream_is_named_by_its_codec_not_by_the_decoder_ffmpeg_picked(decoder, codec):
    try:
        found = av.codec.Codec(decoder, "r")
    except Exception:  # noqa: BLE001 - UnknownCodecError: this FFmpeg build lacks it
        pytest.skip(f"this PyAV build has no {decoder} decoder")
    assert codec_name(found) == codec
