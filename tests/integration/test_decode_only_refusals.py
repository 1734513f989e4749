"""The decode-only benchmark refuses bad flags before it makes anything: one line naming the
flag, exit 2, no traceback, no output folder (not even logs/), no clip; a run that measured
nothing leaves no empty folder; and a set-up too small to tell from timing noise is a dash,
never a negative figure. On the CPU, with real clips where a run starts."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.bench import decode_only
from pipeline.bench.decode_only import SETUP_NOISE, main, summarise, table
from pipeline.bench.decode_worker import Result
from pipeline.media.backends import backend_class

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--sizes", "32x32", "--workers", "1", "--frames", "4", "--clips", "2", "--distinct",
         "1", "--stream-reads", "1"]
no_gpu = pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is here")


def refused(tmp_path, monkeypatch, capsys, *flags) -> str:
    """main(flags) run in tmp_path (where the default logs/ would go): the error line."""
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    code = main([*SMALL, *flags])
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert sorted(os.listdir(tmp_path)) == before  # no logs/, no out, no clip cache
    return errors[0]


@pytest.mark.parametrize("flags, words", [
    (["--backends", "bogus"], ["flag '--backends'", "unknown backend 'bogus'"]),
    (["--backends", "pyav,pyav"], ["flag '--backends'", "twice"]),
    (["--codecs", "foo"], ["flag '--codecs'", "unknown codec 'foo'"]),
    (["--backends", "dali-cpu", "--codecs", "h264"], ["flag '--codecs'", "nothing to measure"]),
    (["--frames", "1"], ["flag '--frames'", "at least 2 frames"]),
    (["--sizes", "31x32"], ["flag '--sizes'", "even sides"]),
    (["--workers", "0"], ["flag '--workers'", "between 1 and 64"]),
    (["--gpus", "x"], ["flag '--gpus'"]),
    (["--cache", "/dev/null/x"], ["flag '--cache'", "'/dev/null' is a file"]),
])
def test_a_bad_flag_is_refused_naming_it_before_anything_is_made(tmp_path, monkeypatch, capsys,
                                                                  flags, words):
    line = refused(tmp_path, monkeypatch, capsys, "--gpus", "none", *flags)
    for word in words:
        assert word in line, line


def test_an_out_that_is_a_file_or_under_one_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "afile").write_text("kept")
    for out in ("afile", "afile/sub"):
        line = refused(tmp_path, monkeypatch, capsys, "--gpus", "none", "--out", out)
        assert line.startswith("error: flag '--out': ") and "afile' is a file" in line
    assert (tmp_path / "afile").read_text() == "kept"


def test_an_out_that_cannot_be_made_is_refused(tmp_path, monkeypatch, capsys):
    line = refused(tmp_path, monkeypatch, capsys, "--gpus", "none", "--out", "/proc/decode-x")
    assert line.startswith("error: flag '--out': '/proc/decode-x' cannot be made")


@no_gpu
def test_gpu_ids_on_a_machine_without_one_are_refused(tmp_path, monkeypatch, capsys):
    line = refused(tmp_path, monkeypatch, capsys, "--gpus", "0")
    assert line == ("error: flag '--gpus': GPU 0 was asked for but this machine has no GPU "
                    "(use --gpus none to decode on the CPU)")


@pytest.mark.skipif(backend_class("pynvvideocodec").unavailable() is None and
                    __import__("torch").cuda.is_available(), reason="it can run here")
def test_backends_of_which_none_can_run_here_are_refused(tmp_path, monkeypatch, capsys):
    line = refused(tmp_path, monkeypatch, capsys, "--gpus", "none", "--backends",
                   "pynvvideocodec", "--codecs", "h264")
    assert line.startswith("error: flag '--backends': nothing to measure: pynvvideocodec: ")


def test_through_benchmark_py_the_exit_code_is_2(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "benchmark.py"), "--decode-only",
                             "--backends", "bogus"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: flag '--backends'")
    assert "Traceback" not in result.stderr and os.listdir(tmp_path) == []


class PoolLost:
    """Stands in for worker processes that die before the first cell is measured."""

    def __init__(self, devs, per_device, phases=False):
        self.workers = [(f"{d}#{k}", d, None, None) for k in range(per_device) for d in devs]

    def cell(self, cell_for, per_device, n_devices):
        raise decode_only.WorkersLost("decode workers ['cpu#0'] did not answer")

    def close(self):
        pass


def test_a_run_that_measured_nothing_leaves_no_empty_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(decode_only, "Pool", PoolLost)
    code = main([*SMALL, "--gpus", "none", "--backends", "pyav", "--codecs", "vp9",
                 "--cache", str(tmp_path / "clips"), "--out", str(tmp_path / "logs" / "out")])
    assert code == 1 and "did not answer" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()  # out and the logs/ made for it
    assert (tmp_path / "clips").is_dir()  # the clip cache stays: it is made to be kept


# ---- the setup column ------------------------------------------------------------------------

def results(clip_s: float, stream_s: float, frames: int = 4, clips: int = 10) -> dict:
    """One worker's timings: `clips` requests of `frames` in clip_s, as many frames from the
    stream in stream_s."""
    return {"cpu#0": Result(clips_s=(0.0, clip_s), clips=clips, clip_frames=clips * frames,
                            stream_s=(1.0, 1.0 + stream_s), stream_frames=clips * frames)}


@pytest.mark.parametrize("clip_s, stream_s, shown", [
    (1.0, 0.5, "50.00"),  # 100 ms a request, 50 of them decoding: 50 ms set-up
    (0.9, 1.0, "-"),  # the clips came out faster than the stream: -10 ms, noise
    (1.0, 1.0 - SETUP_NOISE / 2, "-"),  # positive, but within the noise
])
def test_setup_is_a_figure_only_where_it_stands_above_the_noise(clip_s, stream_s, shown):
    row = {"backend": "pyav", "codec": "vp9", "size": "32x32", "workers_per_device": 1,
           **summarise(results(clip_s, stream_s), 4, 1, 1)}
    assert table([row]).splitlines()[-1].split()[-1] == shown
    assert (row["setup_ms_per_clip"] is None) == (shown == "-")
    if shown != "-":
        assert row["setup_ms_per_clip"] == pytest.approx(float(shown))
