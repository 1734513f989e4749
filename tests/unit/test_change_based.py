"""Change-based inference: which tiles run, what the others get, and agreement with the full model
(CPU, 64x96 windows, 16-pixel tiles)."""
import pytest
import torch
from change_helpers import SIZE, active_model, still_window, with_moving_patch

from models.flavr.change_based import TILE_PIECE, ChangeBasedFLAVR, ChangeConfig, computed_pixels
from models.flavr.model import STAGES
from pipeline.media.synthetic import make_scene, render

TILE = 16


def run(cb, window, stream="camera"):
    """One window through every stage; returns its new frames, stats and the computed pixels."""
    state = cb.run_stages(cb.begin(window, [stream]), STAGES[0], STAGES[-1])
    return cb.finish(state), state.plan.stats[0], computed_pixels(state.plan)[0]


def planned_tiles(cb, window):
    plan = cb.begin(window, ["camera"]).plan
    return {(int(y), int(x)) for y, x in zip(plan.ty, plan.tx)}


def test_a_window_without_motion_computes_no_tile_and_returns_its_centre_frames():
    window = still_window()
    cb = ChangeBasedFLAVR(active_model(), ChangeConfig(threshold=0.0, tile=TILE, halo=8))
    out, stats, computed = run(cb, window)
    assert (stats.whole, stats.tiles, stats.tiles_total) == (False, 0, 4 * 6)
    assert not computed.any()
    assert torch.equal(out, window[:, :, 1][:, None])


def test_a_change_inside_one_tile_computes_only_the_tiles_within_the_halo_of_it():
    # One changed 8x8 block, rows 24..31 and columns 40..47 of tile (1, 2). A tile owning a
    # pixel within `halo` pixels of it runs: with 8, tiles of rows 16..31 and 32..47, columns
    # 32..47 and 48..63; with 16 also rows 0..15 and columns 16..31 (64 is 17 pixels away).
    window = with_moving_patch(still_window(), 24, 40, 8, 8)
    cb = ChangeBasedFLAVR(active_model(), ChangeConfig(threshold=0.01, tile=TILE, halo=8,
                                                       gates="own", fallback=10.0))
    assert planned_tiles(cb, window) == {(1, 2), (1, 3), (2, 2), (2, 3)}
    wider = ChangeBasedFLAVR(active_model(), ChangeConfig(threshold=0.01, tile=TILE, halo=16,
                                                          gates="own", fallback=10.0))
    assert planned_tiles(wider, window) == {(y, x) for y in range(3) for x in range(1, 4)}


def test_pixels_away_from_the_change_are_copied_and_the_copy_blends_into_the_tiles():
    window = with_moving_patch(still_window(), 24, 40, 8, 8)
    cb = ChangeBasedFLAVR(active_model(), ChangeConfig(threshold=0.01, tile=TILE, halo=8,
                                                       feather=4, gates="own", fallback=10.0))
    out, _, computed = run(cb, window)
    copy = window[:, :, 1][:, None]
    assert computed[16:48, 32:64].all() and computed.sum() == 32 * 32
    assert torch.equal(out[..., :11, :], copy[..., :11, :])  # beyond the 4-pixel band
    band = (out - copy).abs().amax(dim=(0, 1, 2))[12:16, 32:64]  # the band above the tiles
    assert (band > 0).all()


@pytest.fixture(scope="module")
def object_moving():
    """Two windows of a small object moving over a still scene, and the full model's frames of
    the second."""
    still = still_window()
    first = with_moving_patch(still, 16, 32, 16, 16)
    second = with_moving_patch(still, 24, 40, 16, 16)
    return first, second, active_model()(second)


def test_computed_tiles_match_the_full_model_within_two_grey_levels(object_moving):
    # Tolerance 0.005 (1.3 of 255 levels). Two approximations remain: the model's theoretical
    # receptive field reaches ~110 pixels, a 16-pixel halo shows it what matters most (this
    # model's response to a change has fallen ~50x at 16 pixels); and the gates come from the
    # previous window, in which the object stood elsewhere.
    first, second, full = object_moving
    cb = ChangeBasedFLAVR(active_model(), ChangeConfig(threshold=0.01, tile=TILE, halo=16,
                                                       feather=0, fallback=10.0))
    _, stats, _ = run(cb, first)
    assert stats.whole and stats.reason == "first"
    out, stats, computed = run(cb, second)
    assert not stats.whole and 0 < stats.tiles < stats.tiles_total
    error = (out - full).abs().amax(dim=(0, 1, 2))[computed]
    assert error.max() < 0.005


def test_a_tile_that_sees_the_whole_frame_with_the_frames_gates_reproduces_the_full_model():
    # 48x48 frames, 16-pixel tiles with a 16-pixel halo: every crop is the whole frame, and the
    # gates imposed are the ones the same window recorded: tiling, mean and gate handling add
    # nothing but float rounding.
    window = with_moving_patch(still_window((48, 48)), 8, 8, 32, 32)
    cb = ChangeBasedFLAVR(active_model(), ChangeConfig(threshold=0.01, tile=TILE, halo=16,
                                                       feather=0, fallback=100.0))
    full, stats, _ = run(cb, window)
    assert stats.whole
    out, stats, computed = run(cb, window)
    assert not stats.whole and stats.tiles == 9 and computed.all()
    torch.testing.assert_close(out, full, rtol=0, atol=1e-5)


def test_a_window_where_most_tiles_change_runs_the_full_model_exactly():
    h, w = SIZE
    layers = make_scene(w, h, 4, seed=5)  # the whole scene pans
    window = torch.stack([torch.from_numpy(render(layers, float(t), w, h)) for t in range(4)])
    window = window.permute(3, 0, 1, 2)[None].contiguous()
    cb = ChangeBasedFLAVR(active_model(), ChangeConfig(threshold=0.05, tile=TILE, halo=8))
    out, stats, computed = run(cb, window)
    assert stats.whole and stats.reason == "moving" and computed.all()
    assert torch.equal(out, active_model()(window))


def test_an_encoder_and_a_decoder_step_on_the_tile_batch_equal_the_whole_model(object_moving):
    first, second, _ = object_moving
    config = ChangeConfig(threshold=0.01, tile=TILE, halo=8, fallback=10.0)
    whole = ChangeBasedFLAVR(active_model(), config)
    encoder, decoder = ChangeBasedFLAVR(active_model(), config), ChangeBasedFLAVR(active_model(), config)
    for window in (first, second):
        expected, stats, _ = run(whole, window)
        state = encoder.run_stages(encoder.begin(window, ["camera"]), "stem", "layer4")
        out = decoder.finish(decoder.run_stages(state, "dec0", "head"))
        assert torch.equal(out, expected)
    assert not stats.whole and stats.tiles > 0  # the second window ran as tiles


def test_a_stream_refreshes_its_gates_by_running_whole_every_refresh_windows():
    window = with_moving_patch(still_window((32, 32)), 8, 8, 8, 8)
    cb = ChangeBasedFLAVR(active_model(), ChangeConfig(threshold=0.01, tile=8, halo=8,
                                                       fallback=100.0, refresh=3))
    state = cb.begin(torch.cat([window] * 7), ["camera"] * 7)
    assert [s.reason for s in state.plan.stats] == ["first", "", "", "refresh", "", "", "refresh"]


def test_a_step_without_the_streams_whole_window_refuses_its_tiles_by_name(object_moving):
    first, second, _ = object_moving
    config = ChangeConfig(threshold=0.01, tile=TILE, halo=8, fallback=10.0)
    planner, other = ChangeBasedFLAVR(active_model(), config), ChangeBasedFLAVR(active_model(), config)
    planner.begin(first, ["camera"])  # the whole window ran elsewhere
    with pytest.raises(KeyError, match="stream 'camera'"):
        other.run_stages(planner.begin(second, ["camera"]), "stem", "layer4")


def test_a_window_runs_as_tiles_up_to_max_tiles_and_whole_beyond():
    config = ChangeConfig(threshold=0.01, tile=TILE, halo=8, fallback=0.7, gates="own")
    assert config.max_tiles(*SIZE) == 4  # 0.7 of 64x96 pixels holds four 32x32 crops
    one = with_moving_patch(still_window(), 24, 40, 8, 8)  # reaches 4 tiles
    two = with_moving_patch(one, 48, 0, 8, 8)  # and 2 more
    cb = ChangeBasedFLAVR(active_model(), config)
    stats = cb.begin(torch.cat([one, two]), ["a", "b"]).plan.stats
    assert [(s.whole, s.reason) for s in stats] == [(False, ""), (True, "moving")]


def test_an_ended_stream_is_forgotten_and_its_next_window_with_tiles_runs_whole():
    window = with_moving_patch(still_window((32, 32)), 8, 8, 8, 8)
    cb = ChangeBasedFLAVR(active_model(), ChangeConfig(threshold=0.01, tile=8, halo=8,
                                                       fallback=100.0))
    assert [s.reason for s in cb.begin(torch.cat([window] * 2), ["a"] * 2).plan.stats] == ["first", ""]
    cb.end_stream("a")
    assert cb.begin(window, ["a"]).plan.stats[0].reason == "first"


@pytest.mark.parametrize("field, value", [("threshold", -0.1), ("tile", 12), ("halo", 4),
                                          ("feather", 40), ("fallback", -1.0), ("refresh", 0),
                                          ("gates", "mine")])
def test_a_bad_parameter_is_refused_in_one_line_naming_it(field, value):
    with pytest.raises(ValueError, match=rf"^change_based\.{field}: [^\n]*$"):
        ChangeConfig(**{field: value})


def test_an_unknown_parameter_in_a_config_mapping_is_refused_by_name():
    assert ChangeConfig.from_dict({"threshold": 0.1}).threshold == 0.1
    with pytest.raises(ValueError, match=r"^change_based\.thresold: unknown parameter"):
        ChangeConfig.from_dict({"thresold": 0.1})


def test_a_still_window_before_the_streams_first_whole_one_needs_no_gates_in_its_batch():
    # One batch of a stream: still (no tile, no whole window yet), moving (runs whole: first),
    # moving (tiles, gated by the second); the still window has no reference and needs none.
    still = still_window()
    batch = torch.cat([still, with_moving_patch(still, 8, 8, 12, 12),
                       with_moving_patch(still, 40, 60, 12, 12)])
    cb = ChangeBasedFLAVR(active_model(), ChangeConfig(tile=TILE, halo=8, fallback=4.0))
    out, stats = cb(batch, ["camera"] * 3)
    assert [s.whole for s in stats] == [False, True, False]
    assert stats[0].tiles == 0 and stats[2].tiles > 0
    assert torch.equal(out[0, 0], still[0, :, 1])


def test_whole_windows_and_tiles_in_pieces_give_each_window_what_it_gets_alone():
    # Three streams' first windows run whole (pieces of 2 and 1); the next windows of two of
    # them run as tiles, over 32 of them (pieces of 32 and 16, the last padded), gated by their
    # own stream's whole window. Each window alone (one piece each) must get the same frames.
    still = still_window()
    firsts = [with_moving_patch(still, 8 + 8 * i, 8 + 16 * i, 16, 16, seed=9 + i)
              for i in range(3)]
    seconds = [with_moving_patch(still, 16 + 8 * i, 16 + 16 * i, 24, 24, seed=9 + i)
               for i in range(2)]
    config = ChangeConfig(threshold=0.01, tile=8, halo=8, feather=4, fallback=100.0)
    batch = ChangeBasedFLAVR(active_model(), config)
    out, stats = batch(torch.cat(firsts + seconds), ["a", "b", "c", "a", "b"])
    assert [s.whole for s in stats] == [True, True, True, False, False]
    assert sum(s.tiles for s in stats[3:]) > 2 * TILE_PIECE
    for i, stream in enumerate("ab"):
        alone = ChangeBasedFLAVR(active_model(), config)
        first_alone, _ = alone(firsts[i], [stream])
        second_alone, _ = alone(seconds[i], [stream])
        torch.testing.assert_close(out[i], first_alone[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(out[3 + i], second_alone[0], rtol=0, atol=1e-5)


def test_tune_runs_every_piece_shape_once_for_a_stage_range(monkeypatch):
    model = active_model()
    config = ChangeConfig(threshold=0.01, tile=TILE, halo=8, fallback=0.7)
    cb = ChangeBasedFLAVR(model, config)
    shapes = []
    real = type(model).run_stages

    def counted(self, state, first=None, last=None):
        shapes.append((state["size"], next(v.shape[0] for v in state.values()
                                           if torch.is_tensor(v))))
        return real(self, state, first, last)

    monkeypatch.setattr(type(model), "run_stages", counted)
    cb.tune("stem", "layer4", *SIZE, windows=5)  # max_tiles 4 per window: up to 20 tiles
    assert shapes == [(SIZE, 1), (SIZE, 2), (SIZE, 4), ((32, 32), 16)]
    cb.tune("stem", "layer4", *SIZE, windows=5)
    assert len(shapes) == 4  # nothing new to tune
    cb.tune("dec0", "head", *SIZE, windows=1)  # a later stage range: from its own boundary
    assert shapes[4:] == [(SIZE, 1), ((32, 32), 16)]
