"""Ground truth beside a clip (pipeline/media/truth.py): where it is found, which of its frames
stands for each new frame of a request (clips, stream segments, the loop's seam), the pair
`decimate` makes from a video, truth from the moving-fraction clips and synthetic sets, and the
truth files a run refuses."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import config_from_dict
from pipeline.config.files import resolve_videos
from pipeline.errors import VideoError
from pipeline.media.decode import FrameDecoder
from pipeline.media.moving_fraction import render_clip
from pipeline.media.synthetic import ensure_synthetic_set, write_clip
from pipeline.media.truth import (
    TruthInfo,
    describe_truth,
    find_truth,
    gap_targets,
    main,
    truth_path,
    truth_video_path,
    truths_for,
    write_truth_npz,
)


def small_clip(path, frames: int = 5, truth_factor=None, codec: str = "vp9", size: int = 32):
    return write_clip(path, size, size, frames, 24, codec, 0, truth_factor, crf=4)


def test_a_segments_new_frames_map_to_their_place_in_the_stream():
    # A 10-frame clip with truth at 2x, played as a stream in segments of 4 frames.
    truth = TruthInfo("c.truth.npz", factor=2, frames=19, clip_frames=10)
    # Segment 1 (stream frames 4..7): row r is the gap after frame 4 + r; its last row reads
    # frame 8, the next segment's first.
    assert gap_targets(4, 4, truth, 2) == [(0, 4, [9]), (1, 5, [11]), (2, 6, [13]), (3, 7, [15])]
    # Segment 2 (stream frames 8..11 = file frames 8, 9, 0, 1): the gap 9 -> 0 is the loop's seam.
    assert gap_targets(8, 4, truth, 2) == [(0, 8, [17]), (2, 0, [1]), (3, 1, [3])]


def test_truth_at_a_multiple_of_the_models_factor_takes_every_step_th_frame():
    truth = TruthInfo("c.truth.npz", factor=8, frames=41, clip_frames=6)
    assert gap_targets(0, 2, truth, 4) == [(0, 0, [2, 4, 6]), (1, 1, [10, 12, 14])]
    assert gap_targets(0, 1, truth, 2) == [(0, 0, [4])]


def test_a_truth_factor_not_a_multiple_of_the_models_names_the_file_and_both(tmp_path):
    clip = small_clip(tmp_path / "c.webm", truth_factor=2)
    assert describe_truth(clip, 2) == TruthInfo(str(truth_path(clip)), 2, 9, 5)
    with pytest.raises(VideoError) as e:
        describe_truth(clip, 4)
    assert str(e.value).startswith(str(truth_path(clip)))
    assert "at 2x" in str(e.value) and "model.factor (4)" in str(e.value)


def test_a_truth_too_short_for_its_clip_is_refused(tmp_path):
    clip = small_clip(tmp_path / "c.webm")
    write_truth_npz(clip, np.zeros((6, 32, 32, 3), np.uint8), 2)  # 5 frames at 2x need 9
    with pytest.raises(VideoError, match="holds 6 frames; the clip's 5 frames at 2x need 9"):
        describe_truth(clip, 2)


def test_a_clip_without_truth_has_none(tmp_path):
    assert describe_truth(small_clip(tmp_path / "c.webm"), 2) is None


def test_a_bad_clip_with_truth_is_left_to_fail_its_own_requests(tmp_path):
    good = small_clip(tmp_path / "good.webm", truth_factor=2)
    bad = tmp_path / "bad.webm"
    bad.write_bytes(b"not a video")
    write_truth_npz(bad, np.zeros((9, 32, 32, 3), np.uint8), 2)
    assert list(truths_for([good, bad], 2)) == [str(good)]


def test_decimate_keeps_every_other_frame_and_the_original_is_the_truth(tmp_path):
    source = small_clip(tmp_path / "source.mp4", frames=9, codec="h264", size=64)
    out = tmp_path / "half.mp4"
    assert main(["decimate", str(source), str(out), "--factor", "2", "--crf", "4"]) == 0
    assert find_truth(out) == truth_video_path(out) == tmp_path / "half.truth.mp4"
    info = describe_truth(out, 2)
    assert (info.factor, info.frames, info.clip_frames) == (2, 9, 5)
    original, kept, truth = (FrameDecoder("cpu").decode(p) for p in (source, out, info.path))

    def closest(frame) -> int:
        return int((original - frame).abs().mean(dim=(1, 2, 3)).argmin())

    assert [closest(f) for f in kept] == [0, 2, 4, 6, 8]
    # the truth of the new frame between inputs i and i+1 is the original's frame 2i+1
    for row, i, [t] in gap_targets(0, 4, info, 2):
        assert (row, t) == (i, 2 * i + 1) and closest(truth[t]) == 2 * i + 1


def test_decimate_refuses_a_crf_its_codec_does_not_take_before_writing(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["decimate", str(tmp_path / "missing.mp4"), str(tmp_path / "half.webm"),
              "--crf", "70"])
    assert info.value.code == 2
    assert "--crf: crf 70 is outside vp9's range 0..63" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_truth_video_at_a_rate_that_is_no_multiple_of_the_clips_is_refused(tmp_path):
    clip = small_clip(tmp_path / "c.mp4", codec="h264")
    write_clip(truth_video_path(clip), 32, 32, 9, 36, "h264", 0)  # 1.5x the clip's 24 fps
    with pytest.raises(VideoError, match=r"c\.truth\.mp4: its frame rate 36 is not a whole "
                                         r"multiple of the clip's 24"):
        describe_truth(clip, 2)


def test_moving_fraction_truth_holds_the_clips_frames_and_the_in_betweens():
    frames, _ = render_clip(24, 32, 3, 0.5, seed=1)
    truth, region = render_clip(24, 32, 3, 0.5, seed=1, truth_factor=4)
    assert truth.shape == (9, 24, 32, 3) and np.array_equal(truth[::4], frames)
    inside = np.s_[region.top:region.top + region.height, region.left:region.left + region.width]
    assert not np.array_equal(truth[1][inside], truth[0][inside])  # the moving part moves
    outside = truth.copy()
    outside[(slice(None),) + inside] = 0
    assert (outside == outside[:1]).all()  # the rest is still at every t


@pytest.mark.parametrize("fraction", [None, 0.25])
def test_a_synthetic_set_with_a_truth_factor_writes_each_clips_truth(tmp_path, fraction):
    clips = ensure_synthetic_set(tmp_path, 2, 32, 32, 4, 24, "vp9", 0, fraction, truth_factor=2)
    for clip in clips:
        assert describe_truth(clip, 2).frames == 7
        truth = torch.from_numpy(np.load(truth_path(clip))["frames"][::2]).permute(0, 3, 1, 2)
        decoded = FrameDecoder("cpu").decode(clip) * 255.0
        assert (decoded - truth.float()).abs().mean() < 6  # through the codec: a few levels
    assert "_truth2" in clips[0].parent.name
    assert not list(tmp_path.rglob("*.tmp*"))


def test_a_glob_of_clips_leaves_their_truth_videos_out(tmp_path):
    clip = small_clip(tmp_path / "c.mp4", codec="h264")
    write_clip(truth_video_path(clip), 32, 32, 9, 48, "h264", 0)
    cfg = config_from_dict({"name": "t", "videos": {"paths": [str(tmp_path / "*.mp4")]},
                            "pipeline": [{"name": "decode", "kind": "decode", "gpus": [0]}]})
    assert resolve_videos(cfg) == [clip]
