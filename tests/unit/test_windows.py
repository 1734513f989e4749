"""FLAVR's 4-frame windows, their boundaries, and putting new frames back in order."""
import pytest
import torch

from models.flavr.windows import (
    StreamingWindows,
    interleave,
    interleave_tensor,
    make_windows,
    output_frame_count,
    stream_windows,
    window_indices,
)


def _numbered(T, h=2, w=3):
    """Frames whose every pixel holds the frame's index."""
    return torch.arange(T, dtype=torch.float32).view(T, 1, 1, 1).expand(T, 3, h, w).clone()


def test_two_frames_make_one_window_repeating_both_ends():
    assert window_indices(2) == [(0, 0, 1, 1)]


def test_three_frames():
    assert window_indices(3) == [(0, 0, 1, 2), (0, 1, 2, 2)]


def test_five_frames_clamp_only_at_the_ends():
    assert window_indices(5) == [(0, 0, 1, 2), (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 4)]


def test_fewer_than_two_frames_is_an_error():
    with pytest.raises(ValueError, match="at least 2"):
        window_indices(1)


@pytest.mark.parametrize("T, factor, expected", [(2, 2, 3), (5, 2, 9), (5, 4, 17), (10, 8, 73)])
def test_output_frame_count(T, factor, expected):
    assert output_frame_count(T, factor) == expected


def test_make_windows_layout_is_b_c_t_h_w():
    windows = make_windows(_numbered(5))
    assert windows.shape == (4, 3, 4, 2, 3)
    assert windows[:, 0, :, 0, 0].tolist() == [list(ix) for ix in window_indices(5)]


def test_windows_of_every_length_and_segment_stay_right_through_the_index_cache(monkeypatch):
    """The gather indices are kept per (windows, device): a cache that fills starts again, and
    every request still gets its own windows."""
    from models.flavr import windows as w

    monkeypatch.setattr(w, "_MAX_INDEX_TENSORS", 3)
    for T in (2, 5, 9, 5, 3, 7, 9, 2):
        got = make_windows(_numbered(T))[:, 0, :, 0, 0].tolist()
        assert got == [list(ix) for ix in window_indices(T)], T
    segment = w.segment_window_indices(10, 1, 6)
    assert make_windows(_numbered(10), segment)[:, 0, :, 0, 0].tolist() == \
        [list(ix) for ix in segment]
    assert len(w._INDEX_TENSORS) <= 3


def test_interleave_puts_new_frames_between_their_inputs():
    assert interleave(["f0", "f1", "f2"], [["a", "b"], ["c", "d"]]) == \
        ["f0", "a", "b", "f1", "c", "d", "f2"]


def test_interleave_tensor_matches_the_list_form():
    frames = _numbered(4)
    new = 100 + torch.arange(3 * 3, dtype=torch.float32).view(3, 3, 1, 1, 1).expand(3, 3, 3, 2, 3)
    out = interleave_tensor(frames, new)
    assert out.shape[0] == output_frame_count(4, 4)
    assert out[:, 0, 0, 0].tolist() == [t[0, 0, 0].item() for t in interleave(frames, new)]


@pytest.mark.parametrize("T", [2, 3, 5, 11])
@pytest.mark.parametrize("chunk, batch", [(1, 1), (2, 3), (4, 2), (16, 8)])
def test_streaming_windows_equal_the_whole_clip_windows(T, chunk, batch):
    frames = _numbered(T)
    items = list(stream_windows((frames[i:i + chunk] for i in range(0, T, chunk)), batch))
    assert torch.equal(torch.cat([w for w, _, _ in items]), make_windows(frames))
    assert all(w.shape[0] <= batch for w, _, _ in items)
    starts = [0]
    for w, _, _ in items[:-1]:
        starts.append(starts[-1] + w.shape[0])
    assert [first for _, _, first in items] == starts  # consecutive, in order
    middles = torch.cat([m for _, m, _ in items])
    assert middles[:, 0, 0, 0].tolist() == list(range(T - 1))  # window i's middle is frame i


def test_streaming_windows_keep_bounded_look_behind():
    sw = StreamingWindows(batch=2)
    frames = _numbered(40)
    for i in range(0, 40, 4):
        list(sw.push(frames[i:i + 4]))
        assert sw._buf.shape[0] <= 2 + 3 + 4  # batch + look-behind/ahead + one chunk
    assert len(list(sw.finish())) >= 1
