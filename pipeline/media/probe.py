"""What a video file holds: codec, size, frame rate, frame count and colour standard.

`probe(path)` answers from the container headers plus one pass over the packets (demuxing only, no
decoding), which gives an exact frame count even for containers that do not store one (WebM) and
catches files whose packet data is cut short. Every way a file can be unusable raises
`VideoError` naming the file, so callers (the decode worker, the `interpolate` command) can turn it
into a one-line message.

The colour standard of a stream (`Colour`) lives here too, because both directions of the YUV<->RGB
conversion (decode.py and encode.py) must agree on it: see `Colour.for_stream`.
"""
from __future__ import annotations

import stat
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av

from pipeline.errors import VideoError

# Codecs this project decodes (FFmpeg codec names). Decode backends per codec: decode.py.
SUPPORTED_CODECS = ("h264", "hevc", "vp8", "vp9", "av1")

# Luma weights (Kr, Kb) of the YCbCr matrices, keyed by our name for each standard.
MATRICES = {
    "bt601": (0.299, 0.114),     # BT.601 / BT.470BG / SMPTE 170M (SD)
    "bt709": (0.2126, 0.0722),   # BT.709 (HD)
    "fcc": (0.30, 0.11),
    "smpte240m": (0.212, 0.087),
    "bt2020": (0.2627, 0.0593),  # BT.2020 non-constant luminance (constant treated alike)
}
# FFmpeg's AVColorSpace numbers -> our matrix names (2 = unspecified, 0 = RGB, 8 = YCgCo).
_AV_COLORSPACE = {1: "bt709", 4: "fcc", 5: "bt601", 6: "bt601", 7: "smpte240m", 9: "bt2020",
                  10: "bt2020"}
# ...and back, for tagging what we write.
AV_COLORSPACE_OF = {"bt709": 1, "fcc": 4, "bt601": 6, "smpte240m": 7, "bt2020": 9}
AV_RANGE_TV, AV_RANGE_PC = 1, 2  # AVColorRange: 0 = unspecified, 1 = MPEG (tv), 2 = JPEG (pc)


@dataclass(frozen=True)
class Colour:
    """How a stream's YCbCr samples map to RGB: the matrix and whether the range is full (pc)."""

    matrix: str = "bt709"
    full_range: bool = False

    @property
    def kr_kb(self) -> tuple[float, float]:
        return MATRICES[self.matrix]

    @staticmethod
    def for_stream(colorspace: int | None, color_range: int | None, width: int, height: int,
                   pix_fmt: str | None = None) -> "Colour":
        """The standard a stream declares; when it declares none, the usual convention: BT.709
        for HD (width >= 1280 or height > 576), BT.601 for SD, and limited (tv) range unless the
        stream flags full range (or uses a 'yuvj' pixel format, which means full range)."""
        matrix = _AV_COLORSPACE.get(int(colorspace or 2))
        if matrix is None:
            if colorspace not in (None, 2):
                raise ValueError(f"colour space {colorspace} is not YCbCr")
            matrix = "bt709" if (width >= 1280 or height > 576) else "bt601"
        full = int(color_range or 0) == AV_RANGE_PC or bool(pix_fmt and pix_fmt.startswith("yuvj"))
        return Colour(matrix, full)


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    codec: str          # FFmpeg codec name: h264, hevc, vp8, vp9, av1 (not the decoder's name)
    width: int
    height: int
    frames: int         # exact count of video packets (= frames for these codecs)
    rate: Fraction      # frames per second, exact (30000/1001...)
    colour: Colour = field(default_factory=Colour)

    @property
    def fps(self) -> float:
        return float(self.rate)


def probe(path) -> VideoInfo:
    """Describe the video stream of `path`; raises VideoError (naming the file) when the file is
    missing, empty, not a video, has no video stream, uses a codec outside SUPPORTED_CODECS, or
    its packet data is cut short or unreadable. Results are cached per (path, size, mtime)."""
    path = Path(path)
    try:
        st = path.stat()  # once: a decode worker probes every request's clip
    except (FileNotFoundError, NotADirectoryError):
        raise VideoError(path, "no such file") from None
    if stat.S_ISDIR(st.st_mode):
        raise VideoError(path, "is a directory, not a video file")
    if st.st_size == 0:
        raise VideoError(path, "empty file (0 bytes)")
    return _probe_cached(str(path.resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=256)
def _probe_cached(resolved: str, size: int, mtime_ns: int) -> VideoInfo:
    path = Path(resolved)
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as e:
        raise VideoError(path, f"not a video file, or unreadable ({_why(e)})") from None
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise VideoError(path, f"no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        codec = codec_name(ctx.codec if ctx is not None else stream.codec)
        if codec not in SUPPORTED_CODECS:
            raise VideoError(path, f"unsupported codec '{codec}' (supported: "
                                   f"{', '.join(SUPPORTED_CODECS)})")
        width, height = int(ctx.width), int(ctx.height)
        if width <= 0 or height <= 0:
            raise VideoError(path, "video stream has no frame size")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate or rate <= 0:
            raise VideoError(path, "video stream has no frame rate")
        pix_fmt = ctx.format.name if ctx.format is not None else None
        try:
            colour = Colour.for_stream(ctx.colorspace, ctx.color_range, width, height, pix_fmt)
        except ValueError as e:
            raise VideoError(path, f"unsupported colour format: {e}") from None
        declared = int(stream.frames or 0)
        expected = _frames_by_duration(container, stream, rate)
        frames = _count_packets(container, stream, path, size)
    if declared and frames < declared:
        raise VideoError(path, f"truncated: the container lists {declared} frames but only "
                               f"{frames} are present")
    if expected is not None:
        lasting, slack = expected
        if frames < lasting - slack:
            raise VideoError(path, f"truncated or damaged: the header says {lasting:.0f} frames "
                                   f"({lasting / float(rate):.2f} s) but only {frames} frames "
                                   f"can be read")
    return VideoInfo(path, codec, width, height, frames, Fraction(rate), colour)


def codec_name(codec) -> str:
    """The codec a stream is in, whichever decoder FFmpeg picked for it: an AV1 stream opens
    with libdav1d or libaom-av1, whose names are not the codec's."""
    return getattr(codec, "canonical_name", None) or codec.name


def _frames_by_duration(container, stream, rate) -> tuple[float, float] | None:
    """(frames the header's duration implies, tolerated shortfall), or None when the header has
    no duration that belongs to the video alone. Catches files cut short whose container keeps
    no frame count (WebM/Matroska store the duration up front, the index at the end)."""
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
        return seconds * float(rate), 1.0 + 0.01 * seconds * float(rate)
    if container.duration and len(container.streams) == 1:
        # container-wide duration: only trusted when no other stream can stretch it
        seconds = container.duration / 1_000_000
        return seconds * float(rate), 2.0 + 0.02 * seconds * float(rate)
    return None


def _nal_length_size(codec: str, extradata: bytes | None) -> int | None:
    """Bytes of the NAL length prefix for H.264/HEVC in MP4/MKV ('avcC'/'hvcC' extradata, which
    starts with version 1), or None for Annex-B streams and other codecs."""
    if not extradata or extradata[0] != 1:
        return None
    if codec == "h264" and len(extradata) >= 5:
        return (extradata[4] & 3) + 1
    if codec == "hevc" and len(extradata) >= 22:
        return (extradata[21] & 3) + 1
    return None


def _packet_framing_error(codec: str, data: bytes, nal_len: int | None) -> str | None:
    """Cheap checks of a packet's framing, without decoding: the NAL length prefixes must tile
    an H.264/HEVC packet exactly with valid NAL headers, a VP9 frame must start with its frame
    marker. Damage that overwrites these (most damage spanning whole packets) is found here for
    every backend, NVDEC included; damage inside one frame's entropy-coded payload is not (no
    container here carries checksums, and decoders decode such data as a valid wrong picture)."""
    if codec == "vp9":
        return None if data and data[0] >> 6 == 2 else "bad VP9 frame marker"
    if nal_len is None:
        return None
    pos, end = 0, len(data)
    while pos < end:
        if pos + nal_len > end:
            return "NAL length field cut short"
        length = int.from_bytes(data[pos:pos + nal_len], "big")
        pos += nal_len
        if length == 0 or pos + length > end:
            return "NAL unit size does not fit the packet"
        header = data[pos]
        if header & 0x80:
            return "NAL header forbidden bit set"
        if codec == "h264" and header & 0x1F == 0:
            return "NAL unit type 0"
        pos += length
    return None


def _count_packets(container, stream, path: Path, size: int) -> int:
    """Demux every packet of the stream (no decoding): exact count, and early detection of data
    cut short (a packet reaching past the end of the file), a demuxer error, or broken framing
    (see _packet_framing_error)."""
    n = 0
    codec = codec_name(stream.codec_context.codec)
    nal_len = _nal_length_size(codec, stream.codec_context.extradata)
    check = codec == "vp9" or nal_len is not None
    try:
        for packet in container.demux(stream):
            if packet.size == 0 and packet.dts is None:
                continue  # the demuxer's end-of-stream marker
            if packet.is_corrupt:
                raise VideoError(path, f"corrupt packet at frame {n}")
            if packet.pos is not None and packet.pos >= 0 and packet.pos + packet.size > size:
                raise VideoError(path, f"truncated: frame {n} runs past the end of the file")
            if check:
                problem = _packet_framing_error(codec, bytes(packet), nal_len)
                if problem:
                    raise VideoError(path, f"corrupt data in frame {n} ({problem})")
            n += 1
    except av.FFmpegError as e:
        raise VideoError(path, f"unreadable data after frame {n} ({_why(e)})") from None
    return n


def _why(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e).split(":", 1)[0] or type(e).__name__


if __name__ == "__main__":  # python -m pipeline.media.probe FILE...
    import sys

    for p in sys.argv[1:]:
        try:
            print(probe(p))
        except VideoError as e:
            print(f"error: {e}", file=sys.stderr)
