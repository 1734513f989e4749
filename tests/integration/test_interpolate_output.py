"""`interpolate`'s output: refused up front when it is the input or cannot be written, and
written under a name of its own until complete, so an interrupted run leaves the folder as it
was."""
import os
import shutil
import signal

import pytest
from video_helpers import corrupt_middle, signal_when, start_interpolate, video_clip

from pipeline.cli.interpolate import main
from pipeline.media.encode import VideoWriter
from pipeline.media.probe import probe

pytestmark = pytest.mark.filterwarnings("ignore:FLAVR has random weights")  # small, fast runs


def _main(capsys, *args) -> tuple[int, str]:
    """The command's main() in this process (no interpreter start-up): exit code and stderr."""
    try:
        code = main([*map(str, args), "--quiet"])
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    return code, capsys.readouterr().err


def _one_error_line(err: str, *names) -> str:
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert all(str(name) in errors[0] for name in names), err
    return errors[0]


@pytest.fixture
def own_clip(tmp_path_factory, tmp_path):
    """A copy of a small clip in the test's folder, where it may be pointed at by links."""
    return shutil.copy(video_clip(tmp_path_factory, "h264", frames=6, fps=12), tmp_path / "in.mp4")


@pytest.mark.parametrize("spelling", ["same", "other-spelling", "symlink", "hardlink"])
def test_an_output_that_is_the_input_is_refused_and_the_input_kept(capsys, tmp_path, own_clip,
                                                                  spelling):
    before = own_clip.read_bytes()
    out = {"same": own_clip,
           "other-spelling": tmp_path / "." / ".." / tmp_path.name / own_clip.name,
           "symlink": tmp_path / "link.mp4",
           "hardlink": tmp_path / "hard.mp4"}[spelling]
    if spelling == "symlink":
        out.symlink_to(own_clip)
    elif spelling == "hardlink":
        os.link(own_clip, out)
    code, err = _main(capsys, own_clip, "-o", out, "--checkpoint", "random", "--device", "cpu")
    assert code == 2
    assert "is the input video" in _one_error_line(err, out, own_clip)
    assert own_clip.read_bytes() == before


@pytest.mark.parametrize("name, codec, named", [
    ("o.txt", "auto", "extension '.txt'"),
    ("no_extension", "auto", "has no extension"),
    ("x.webm", "h264", "cannot hold h264"),
    ("x.mp4", "vp8", "vp8"),  # MP4 holds no VP8 (or this build has no VP8 encoder)
])
def test_an_output_the_encoder_cannot_write_is_refused_up_front(capsys, tmp_path, own_clip,
                                                                name, codec, named):
    out = tmp_path / name
    code, err = _main(capsys, own_clip, "-o", out, "--codec", codec, "--checkpoint", "random",
                      "--device", "cpu")
    assert code == 2
    assert named in _one_error_line(err, out)
    assert "decode:" not in err  # refused before the clip was opened
    assert sorted(os.listdir(tmp_path)) == ["in.mp4"]


def test_an_output_that_is_a_folder_is_refused(capsys, tmp_path, own_clip):
    folder = tmp_path / "videos"
    folder.mkdir()
    code, err = _main(capsys, own_clip, "-o", folder, "--checkpoint", "random", "--device", "cpu")
    assert code == 2
    assert "is a folder" in _one_error_line(err, folder)
    assert os.listdir(folder) == []


def test_an_output_that_cannot_be_created_is_named(capsys, tmp_path, own_clip):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where the output's folder would be\n")
    out = blocker / "o.mp4"
    # Before the weights load: the output is refused although the checkpoint is missing too.
    code, err = _main(capsys, own_clip, "-o", out, "--checkpoint", tmp_path / "none.safetensors",
                      "--device", "cpu")
    assert code == 2
    assert "cannot be written" in _one_error_line(err, out)


def test_weights_that_do_not_load_leave_no_output_behind(capsys, tmp_path, own_clip):
    out = tmp_path / "new" / "deeper" / "o.mp4"
    missing = tmp_path / "none.safetensors"
    code, err = _main(capsys, own_clip, "-o", out, "--checkpoint", missing, "--device", "cpu")
    assert code == 2
    assert "no such checkpoint" in _one_error_line(err, missing)
    assert sorted(os.listdir(tmp_path)) == ["in.mp4"]  # neither a partial video nor its folders


def test_an_interrupted_run_leaves_an_existing_output_as_it_was(capsys, monkeypatch, tmp_path,
                                                                own_clip):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier result\n")
    real_write = VideoWriter.write

    def write_then_interrupt(self, frames):  # Ctrl-C once the encoder has started writing
        real_write(self, frames)
        raise KeyboardInterrupt

    monkeypatch.setattr(VideoWriter, "write", write_then_interrupt)
    code, err = _main(capsys, own_clip, "-o", out, "--checkpoint", "random", "--device", "cpu",
                      "--batch", 1)
    assert code == 130 and "interrupted" in err
    assert out.read_bytes() == b"an earlier result\n"
    assert sorted(os.listdir(tmp_path)) == ["in.mp4", "out.mp4"]  # no partial video


def test_a_finished_run_replaces_an_existing_output_and_leaves_nothing_else(capsys, tmp_path,
                                                                            own_clip):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier result\n")
    code, err = _main(capsys, own_clip, "-o", out, "--checkpoint", "random", "--device", "cpu")
    assert code == 0, err
    assert probe(out).frames == (6 - 1) * 2 + 1
    assert sorted(os.listdir(tmp_path)) == ["in.mp4", "out.mp4"]


def test_sigterm_mid_run_removes_the_partial_video_and_the_folders_made_for_it(tmp_path_factory,
                                                                               tmp_path):
    """`timeout` and job schedulers stop a run with SIGTERM: it cleans up as Ctrl-C does."""
    clip = video_clip(tmp_path_factory, "h264", frames=24, fps=12)
    kept = tmp_path / "kept"  # there before the run: stays, empty as it was
    kept.mkdir()
    out = kept / "new" / "deeper" / "out.mp4"
    err = tmp_path / "stderr.txt"
    child = start_interpolate(clip, "-o", out, "--checkpoint", "random", "--device", "cpu",
                              "--batch", 1, stderr=err)
    # the model is running once the partial video is there
    code = signal_when(child, lambda: list(out.parent.glob(".out.*.partial.mp4")),
                       signal.SIGTERM, "partial video", err)
    text = err.read_text()
    assert code == 128 + signal.SIGTERM and "Traceback" not in text, text
    assert text.splitlines()[-1] == "interrupted (SIGTERM)"
    assert sorted(os.listdir(tmp_path)) == ["kept", "stderr.txt"]
    assert os.listdir(kept) == []


def test_a_failed_run_removes_the_folders_it_made_for_the_output(capsys, tmp_path_factory,
                                                                 tmp_path):
    # A clip whose damage the probe misses and decoding finds, after the partial video was
    # claimed (more damage is found up front, before anything is made).
    clip = video_clip(tmp_path_factory, "h264", frames=12)
    bad = corrupt_middle(clip, tmp_path / "corrupt.mp4", fraction=0.02)
    out = tmp_path / "new" / "deeper" / "o.mp4"
    code, err = _main(capsys, bad, "-o", out, "--checkpoint", "random", "--device", "cpu")
    assert code == 2 and "decode:" in err  # failed once the run had started
    _one_error_line(err, bad)
    assert sorted(os.listdir(tmp_path)) == ["corrupt.mp4"]
