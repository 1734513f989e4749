"""The `interpolate` command end to end, as a user runs it, and its one-line errors."""
import signal

import pytest
from video_helpers import (
    corrupt_middle,
    cut_in_half,
    ffv1_clip,
    odd_clip,
    run_interpolate,
    signal_when,
    start_interpolate,
    video_clip,
)

from pipeline.media.decode import FrameDecoder
from pipeline.media.encode import encoder_available
from pipeline.media.probe import probe


@pytest.mark.parametrize("factor, codec", [(2, "vp9"), (4, "h264")])
def test_output_has_all_frames_at_factor_times_fps(tmp_path_factory, tmp_path, factor, codec):
    clip = video_clip(tmp_path_factory, codec, frames=6, fps=12)
    out = tmp_path / "out.mp4"
    result = run_interpolate(clip, "-o", out, "--factor", factor, "--device", "cpu",
                             "--batch", 2, "--chunk", 3)
    assert result.returncode == 0, result.stderr
    info = probe(out)
    assert info.frames == (6 - 1) * factor + 1
    assert info.fps == 12 * factor
    assert (info.width, info.height) == (64, 64)
    # input frame i sits at output position i * factor (after a second lossy encode: a few
    # grey levels), and nearer to it than to its neighbours
    inp = FrameDecoder("cpu").decode(clip)
    got = FrameDecoder("cpu").decode(out)[::factor]
    assert ((got - inp).abs() * 255).mean() < 6.0
    for i in range(1, 5):
        here = (got[i] - inp[i]).abs().mean()
        assert here < (got[i] - inp[i - 1]).abs().mean() and \
            here < (got[i] - inp[i + 1]).abs().mean()


def test_resolution_flag_resizes(tmp_path_factory, tmp_path):
    clip = video_clip(tmp_path_factory, "vp9", frames=6, fps=12)
    out = tmp_path / "small.webm"
    result = run_interpolate(clip, "-o", out, "--factor", 2, "--device", "cpu",
                             "--resolution", "32x48")
    assert result.returncode == 0, result.stderr
    info = probe(out)
    assert (info.height, info.width, info.frames, info.codec) == (32, 48, 11, "vp9")


def _assert_clear_error(result, name, out):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in result.stderr
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and str(name) in errors[0], result.stderr
    assert not out.exists()  # no half-written output left behind


@pytest.mark.skipif(encoder_available("av1") is None,
                    reason="this PyAV build has no AV1 encoder (libsvtav1 or libaom-av1)")
def test_codec_av1_writes_an_av1_webm(tmp_path_factory, tmp_path):
    clip = video_clip(tmp_path_factory, "vp9", frames=3, fps=12)
    out = tmp_path / "out.webm"
    result = run_interpolate(clip, "-o", out, "--codec", "av1", "--checkpoint", "random",
                             "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "Svt[" not in result.stderr  # the encoder's own chatter stays out of the way
    info = probe(out)
    assert (info.codec, info.frames, info.width, info.height) == ("av1", 5, 64, 64)


def test_a_clip_of_odd_size_is_padded_for_the_encoder_and_says_so(tmp_path):
    clip = odd_clip(tmp_path / "odd.webm", width=47, height=33, frames=6, fps=12)
    out = tmp_path / "out.mp4"
    result = run_interpolate(clip, "-o", out, "--factor", 2, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "notice: frame size 47x33 is odd; the output is 48x34" in result.stderr
    info = probe(out)
    assert (info.width, info.height, info.frames) == (48, 34, 11)
    frames = FrameDecoder("cpu").decode(out)

    def step(a, b):  # mean difference between two columns or rows, in grey levels
        return float((a - b).abs().mean() * 255)

    # the added column and row repeat the last ones (up to the encoder's loss), where any two
    # neighbours of this noise-like clip differ a lot
    assert step(frames[..., 47], frames[..., 46]) < step(frames[..., 46], frames[..., 45]) / 4
    assert step(frames[..., 33, :], frames[..., 32, :]) < step(frames[..., 32, :],
                                                                 frames[..., 31, :]) / 4


def test_an_odd_resolution_is_taken_and_padded_alike(tmp_path_factory, tmp_path):
    clip = video_clip(tmp_path_factory, "vp9", frames=4, fps=12)
    out = tmp_path / "odd.webm"
    result = run_interpolate(clip, "-o", out, "--device", "cpu", "--resolution", "31x45")
    assert result.returncode == 0, result.stderr
    assert (probe(out).width, probe(out).height) == (46, 32)


def test_missing_file(tmp_path):
    out = tmp_path / "o.mp4"
    _assert_clear_error(run_interpolate(tmp_path / "missing.mp4", "-o", out),
                        "missing.mp4", out)


def test_zero_byte_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    out = tmp_path / "o.mp4"
    _assert_clear_error(run_interpolate(empty, "-o", out), empty, out)


def test_text_file_named_mp4(tmp_path):
    text = tmp_path / "readme.mp4"
    text.write_text("plain text, not a video\n" * 50)
    out = tmp_path / "o.mp4"
    _assert_clear_error(run_interpolate(text, "-o", out), text, out)


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damaged_file(tmp_path_factory, tmp_path, damage):
    clip = video_clip(tmp_path_factory, "h264", frames=12)
    bad = tmp_path / f"{damage}.mp4"
    (cut_in_half if damage == "truncated" else corrupt_middle)(clip, bad)
    out = tmp_path / "o.mp4"
    _assert_clear_error(run_interpolate(bad, "-o", out, "--device", "cpu"), bad, out)


def test_corrupt_vp9_found_while_streaming(tmp_path_factory, tmp_path):
    clip = video_clip(tmp_path_factory, "vp9", frames=12)
    bad = corrupt_middle(clip, tmp_path / "corrupt.webm")
    out = tmp_path / "o.webm"
    _assert_clear_error(run_interpolate(bad, "-o", out, "--device", "cpu"), bad, out)


def test_unsupported_codec(tmp_path):
    path = ffv1_clip(tmp_path / "lossless.mkv")
    out = tmp_path / "o.mp4"
    result = run_interpolate(path, "-o", out)
    _assert_clear_error(result, path, out)
    assert "ffv1" in result.stderr


def test_clip_of_one_frame(tmp_path_factory, tmp_path):
    clip = video_clip(tmp_path_factory, "vp9", frames=1)
    out = tmp_path / "o.mp4"
    result = run_interpolate(clip, "-o", out)
    _assert_clear_error(result, clip, out)
    assert "at least 2" in result.stderr


def test_checkpoint_of_the_wrong_factor(tmp_path_factory, tmp_path):
    import warnings

    from models.flavr.checkpoint import build_model, save_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights: fine for a file of the wrong factor
        ckpt = save_checkpoint(build_model(factor=2, seed=0), tmp_path / "flavr_2x.pt")
    clip = video_clip(tmp_path_factory, "vp9", frames=6, fps=12)
    out = tmp_path / "o.mp4"
    result = run_interpolate(clip, "-o", out, "--factor", 4, "--checkpoint", ckpt,
                             "--device", "cpu")
    _assert_clear_error(result, ckpt.name, out)


def test_a_checkpoint_that_is_a_folder_is_named_as_one(tmp_path_factory, tmp_path):
    clip = video_clip(tmp_path_factory, "vp9", frames=6, fps=12)
    folder = tmp_path / "weights"
    folder.mkdir()
    out = tmp_path / "o.mp4"
    result = run_interpolate(clip, "-o", out, "--checkpoint", folder, "--device", "cpu")
    _assert_clear_error(result, folder, out)
    assert "is a folder" in result.stderr and "weights file" in result.stderr


def test_eval_scores_the_recovered_frames_against_the_baselines(tmp_path_factory):
    clip = video_clip(tmp_path_factory, "h264", 64, 48, frames=9)
    result = run_interpolate(clip, "--eval")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("4 frames recovered at 2x")  # gaps 0-2, 2-4, 4-6, 6-8
    rows = {ln.split()[0]: [float(v) for v in ln.split()[1:]] for ln in lines[2:5]}
    assert set(rows) == {"model", "nearest", "average"}
    assert all(10 < psnr < 100 and 0 < s <= 1 for psnr, s in rows.values())
    assert "flavr-2x.safetensors" in result.stderr  # the shipped weights, by default


def test_eval_refuses_an_output_it_would_not_write(tmp_path_factory, tmp_path):
    clip = video_clip(tmp_path_factory, "h264", 64, 48, frames=9)
    out = tmp_path / "o.mp4"
    result = run_interpolate(clip, "--eval", "-o", out)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    last = result.stderr.splitlines()[-1]
    assert "-o/--output" in last and "--eval" in last, result.stderr
    assert not out.exists()


def test_eval_stopped_by_ctrl_c_says_interrupted(tmp_path_factory, tmp_path):
    clip = video_clip(tmp_path_factory, "h264", 64, 48, frames=41)
    err = tmp_path / "stderr.txt"
    child = start_interpolate(clip, "--eval", "--batch", 1, stderr=err)
    # the command has started once it names its weights; the model is next
    code = signal_when(child, lambda: "weights:" in err.read_text(), signal.SIGINT,
                       "weights line", err)
    text = err.read_text()
    assert code == 130 and "Traceback" not in text, text
    assert text.splitlines()[-1] == "interrupted"


def test_eval_needs_enough_frames(tmp_path_factory):
    clip = video_clip(tmp_path_factory, "h264", 64, 48, frames=5)
    result = run_interpolate(clip, "--eval")
    assert result.returncode == 2 and "needs at least 7" in result.stderr


def test_a_clip_smaller_than_the_model_takes_is_named_with_the_minimum(tmp_path_factory, tmp_path):
    clip = video_clip(tmp_path_factory, "h264", 6, 4, frames=4)
    out = tmp_path / "o.mp4"
    result = run_interpolate(clip, "-o", out, "--checkpoint", "random", "--device", "cpu")
    _assert_clear_error(result, clip, out)
    assert "6x4" in result.stderr and "at least 8x8" in result.stderr


@pytest.mark.parametrize("flag, value, bound", [("--batch", 0, ">= 1"), ("--chunk", 0, ">= 1"),
                                                ("--resolution", "4x64", "at least 8")])
def test_a_flag_out_of_bounds_is_refused_at_parsing(tmp_path_factory, tmp_path, flag, value, bound):
    clip = video_clip(tmp_path_factory, "h264", frames=6, fps=12)
    out = tmp_path / "o.mp4"
    result = run_interpolate(clip, "-o", out, flag, value)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"argument {flag}: " in result.stderr and bound in result.stderr
    assert not out.exists()


def test_half_precision_on_the_cpu_warns_and_fp32_is_the_default(tmp_path_factory, tmp_path):
    from pipeline.cli.interpolate import build_parser

    assert build_parser().parse_args(["in.mp4", "-o", "out.mp4"]).precision == "fp32"
    clip = video_clip(tmp_path_factory, "h264", 16, 16, frames=3)
    out = tmp_path / "o.mp4"
    result = run_interpolate(clip, "-o", out, "--checkpoint", "random", "--device", "cpu",
                             "--precision", "bf16")
    assert result.returncode == 0, result.stderr  # an explicit choice is kept
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "bf16" in warnings[0] and "slower than fp32" in warnings[0]
    fp32 = run_interpolate(clip, "-o", out, "--checkpoint", "random", "--device", "cpu")
    assert fp32.returncode == 0 and "warning:" not in fp32.stderr, fp32.stderr
