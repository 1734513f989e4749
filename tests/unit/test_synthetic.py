"""The clip generator: decodable clips of the asked shape, with true in-between frames."""
import subprocess
import sys

import av
import numpy as np
import pytest
from video_helpers import REPO, truth_frames, video_clip

from pipeline.media.decode import FrameDecoder
from pipeline.media.probe import probe
from pipeline.media import synthetic
from pipeline.media.synthetic import (
    ensure_synthetic_set,
    make_scene,
    render,
    truth_path,
)


@pytest.mark.parametrize("codec", ["vp9", "h264"])
def test_generator_writes_clip_of_asked_size_frames_and_fps(tmp_path_factory, codec):
    clip = video_clip(tmp_path_factory, codec, width=96, height=64, frames=9, fps=30)
    info = probe(clip)
    assert (info.codec, info.width, info.height, info.frames, info.fps) == (codec, 96, 64, 9, 30.0)
    assert FrameDecoder("cpu").decode(clip).shape == (9, 3, 64, 96)


def test_generator_tags_bt709_limited_range(tmp_path_factory):
    clip = video_clip(tmp_path_factory, "h264")
    with av.open(str(clip)) as c:
        ctx = c.streams.video[0].codec_context
        assert (ctx.colorspace, ctx.color_range) == (1, 1)  # BT.709, MPEG (tv) range


def test_texture_is_not_flat_and_moves_by_subpixel_steps():
    layers = make_scene(64, 64, 8, seed=3)
    f0, f_half, f1 = (render(layers, t, 64, 64) for t in (0.0, 0.5, 1.0))
    assert f0.std() > 0.05                                  # textured, not a flat colour
    assert 0 < np.abs(f_half - f0).mean() < np.abs(f1 - f0).mean()
    speeds = [abs(v) for layer in layers for v in layer.velocity]
    assert any(0 < s % 1 for s in speeds)                   # sub-pixel speeds


def test_truth_frames_hold_the_clip_frames_and_the_in_betweens(tmp_path_factory):
    clip = video_clip(tmp_path_factory, "vp9", frames=8, truth_factor=4)
    truth, factor = truth_frames(clip)
    assert factor == 4 and truth.shape == ((8 - 1) * 4 + 1, 3, 64, 64)
    assert np.allclose(np.load(truth_path(clip))["times"], np.arange(29) / 4)
    decoded = FrameDecoder("cpu").decode(clip) * 255.0
    # decoded frame i is the truth at t = i (lossy codec: a few grey levels), and clearly not the
    # in-between at t = i + 1/2
    on_time = (decoded - truth[::4]).abs().mean().item()
    half_off = (decoded[:-1] - truth[2::4]).abs().mean().item()
    assert on_time < 6.0
    assert half_off > 2 * on_time


def test_ensure_synthetic_set_reuses_cached_clips(tmp_path):
    first = ensure_synthetic_set(tmp_path, 2, 64, 64, 6, 24, "vp9", seed=1)
    stamps = [p.stat().st_mtime_ns for p in first]
    again = ensure_synthetic_set(tmp_path, 2, 64, 64, 6, 24, "vp9", seed=1)
    assert again == first and [p.stat().st_mtime_ns for p in again] == stamps
    other = ensure_synthetic_set(tmp_path, 1, 64, 64, 6, 24, "vp9", seed=2)
    assert other[0].parent != first[0].parent
    assert probe(first[1]).frames == 6


def test_command_line_writes_clip_and_truth(tmp_path):
    out = tmp_path / "c.webm"
    subprocess.run([sys.executable, "-m", "pipeline.media.synthetic", str(out), "--width", "64",
                    "--height", "48", "--frames", "5", "--fps", "25", "--codec", "vp8",
                    "--seed", "7", "--truth-factor", "2"], cwd=REPO, check=True,
                   capture_output=True)
    info = probe(out)
    assert (info.codec, info.width, info.height, info.frames) == ("vp8", 64, 48, 5)
    assert np.load(truth_path(out))["frames"].shape == (9, 48, 64, 3)


# A bad flag, the words its one-line error must hold (the flag and the allowed range or rule).
BAD_FLAGS = [
    (["--width", "0"], ["argument --width: ", ">= 16 and <= 8192", "got 0"]),
    (["--width", "-5"], ["argument --width: ", ">= 16 and <= 8192"]),
    (["--width", "100000", "--height", "100000"], ["argument --width: ", "<= 8192"]),
    (["--frames", "0"], ["argument --frames: ", ">= 2 and <= 1000"]),
    (["--fps", "0"], ["argument --fps: ", "> 0 and <= 1000"]),
    (["--fps", "nan"], ["argument --fps: ", "finite"]),
    (["--seed", "-1"], ["argument --seed: ", ">= 0"]),
    (["--truth-factor", "-2"], ["argument --truth-factor: ", "a positive integer <= 64"]),
    (["--truth-factor", "0"], ["argument --truth-factor: ", "a positive integer <= 64"]),
    (["--width", "65", "--height", "63"], ["--width: must be even"]),
    (["--height", "63"], ["--height: must be even"]),
    (["--codec", "h264"], ["--codec: ", "cannot hold h264", ".mp4"]),
]


@pytest.mark.parametrize("words, expected", BAD_FLAGS, ids=[" ".join(w) for w, _ in BAD_FLAGS])
def test_command_refuses_a_bad_flag_in_one_line_and_writes_nothing(tmp_path, capsys, words,
                                                                     expected):
    with pytest.raises(SystemExit) as info:
        synthetic.main([str(tmp_path / "c.webm"), "--frames", "3", *words])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("flavr-synthetic: error: ") and all(w in last for w in expected), last
    assert list(tmp_path.iterdir()) == []


def test_a_clip_that_fails_while_written_is_removed_with_its_truth(tmp_path, capsys,
                                                                    monkeypatch):
    def disk_full(clip, frames, factor):
        truth_path(clip).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(synthetic, "write_truth_npz", disk_full)
    out = tmp_path / "c.webm"
    code = synthetic.main([str(out), "--width", "32", "--height", "32", "--frames", "2",
                           "--truth-factor", "2"])
    assert code == 2
    assert capsys.readouterr().err == f"error: {out}: [Errno 28] No space left on device\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["c.txt", "c.avi", "c.mov"])  # .avi/.mov: FFmpeg writes them
def test_an_output_extension_other_than_webm_mp4_mkv_is_refused(tmp_path, capsys, name):
    out = tmp_path / name
    assert synthetic.main([str(out), "--width", "32", "--height", "32", "--frames", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}: extension '{out.suffix}' ") and err.count("\n") == 1
    assert all(ext in err for ext in (".webm", ".mp4", ".mkv")), err
    assert list(tmp_path.iterdir()) == []


def test_help_names_the_console_script(capsys):
    with pytest.raises(SystemExit) as info:
        synthetic.main(["--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: flavr-synthetic ")
