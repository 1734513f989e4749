"""`interpolate`'s output: refused up front when it is the input or cannot be written, and
written under a name of its own until complete, so an interrupted run leaves the folder as it
was."""
import os
import shutil

import pytest
from video_helpers import video_clip

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
    code, err = _main(capsys, own_clip, "-o", out, "--checkpoint", "random", "--device", "cpu")
    assert code == 2
    assert "cannot be written" in _one_error_line(err, out)


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
