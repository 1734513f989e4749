"""`python -m pipeline.media.moving_fraction`: bad flags end it in one line, before anything is
written; its lossless .mkv takes any size, its 4:2:0 clips even ones."""
import numpy as np
import pytest

from pipeline.media import moving_fraction
from pipeline.media.truth import truth_path

SMALL = ["--width", "32", "--height", "16", "--frames", "2"]

# A bad flag, the words its one-line error must hold (the flag and the allowed range or rule).
BAD_FLAGS = [
    ("c.mp4", ["--fraction", "1.5"], ["argument --fraction: ", "> 0 and <= 1", "got 1.5"]),
    ("c.mp4", ["--fraction", "-1"], ["argument --fraction: ", "> 0 and <= 1"]),
    ("c.mp4", ["--fraction", "0"], ["argument --fraction: ", "> 0 and <= 1"]),
    ("c.mp4", ["--fraction", "nan"], ["argument --fraction: ", "> 0 and <= 1"]),
    ("c.mp4", ["--fraction", "half"], ["argument --fraction: ", "expected a number"]),
    ("c.mp4", ["--fraction", "0.5", "--width", "33"], ["--width: must be even", ".mkv"]),
    ("c.webm", ["--fraction", "0.5", "--height", "17"], ["--height: must be even"]),
    ("c.mkv", ["--fraction", "0.5", "--width", "8"], ["argument --width: ", ">= 16 and <= 8192"]),
    ("c.mp4", ["--fraction", "0.5", "--frames", "0"], ["argument --frames: ", ">= 2 and <= 1000"]),
    ("c.mp4", ["--fraction", "0.5", "--truth-factor", "-2"],
     ["argument --truth-factor: ", "a positive integer <= 64"]),
    ("c.webm", ["--fraction", "0.5", "--crf", "64"], ["--crf: crf 64 is outside vp9's range 0..63"]),
]


@pytest.mark.parametrize("name, words, expected", BAD_FLAGS,
                         ids=[f"{n} {' '.join(w)}" for n, w, _ in BAD_FLAGS])
def test_command_refuses_a_bad_flag_in_one_line_and_writes_nothing(tmp_path, capsys, name, words,
                                                                     expected):
    with pytest.raises(SystemExit) as info:
        moving_fraction.main([str(tmp_path / name), *SMALL, *words])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert all(w in last for w in expected), last
    assert list(tmp_path.iterdir()) == []


def test_a_lossless_clip_may_have_odd_sides(tmp_path):
    out = tmp_path / "c.mkv"
    assert moving_fraction.main([str(out), "--fraction", "0.5", "--width", "33", "--height", "17",
                                 "--frames", "2", "--truth-factor", "2"]) == 0
    frames = moving_fraction.read_frames(out)
    assert tuple(frames.shape) == (2, 3, 17, 33)
    assert np.load(truth_path(out))["frames"].shape == (3, 17, 33, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mkv", "c.truth.npz"]


def test_a_clip_that_fails_while_written_is_removed_with_its_truth(tmp_path, capsys,
                                                                    monkeypatch):
    def disk_full(path, frames, fps=25.0, codec="auto", crf=None):
        path.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(moving_fraction, "write_lossy", disk_full)
    out = tmp_path / "c.mp4"
    assert moving_fraction.main([str(out), "--fraction", "0.5", *SMALL,
                                 "--truth-factor", "2"]) == 2
    assert capsys.readouterr().err == f"error: {out}: [Errno 28] No space left on device\n"
    assert list(tmp_path.iterdir()) == []
