"""Batches of changing size in power-of-two pieces (models/flavr/pieces.py)."""
import pytest
import torch

from models.flavr.pieces import piece_sizes, run_in_pieces, take_rows, tuned_sizes


@pytest.mark.parametrize("n, smallest, pieces", [
    (0, 1, []), (1, 1, [1]), (13, 1, [8, 4, 1]), (16, 1, [16]),
    (3, 16, [16]), (16, 16, [16]), (50, 16, [32, 16, 16]), (850, 16, [512, 256, 64, 16, 16]),
])
def test_a_batch_is_cut_into_powers_of_two_and_a_small_rest_is_padded_into_one_piece(
        n, smallest, pieces):
    assert piece_sizes(n, smallest) == pieces
    assert sum(pieces) >= n and sum(pieces) - n < smallest


def test_the_sizes_a_warm_up_tunes_are_every_size_the_pieces_of_smaller_batches_take():
    for smallest in (1, 16):
        most = 300
        used = {size for n in range(1, most + 1) for size in piece_sizes(n, smallest)}
        assert used == set(tuned_sizes(most, smallest))
    assert tuned_sizes(5, 16) == [16]


def test_a_piece_size_that_is_not_a_power_of_two_is_refused():
    with pytest.raises(ValueError, match="powers of two"):
        piece_sizes(10, 12)


def test_pieces_give_the_rows_of_one_call_in_order_with_the_padding_dropped():
    x = torch.arange(50.0)[:, None].repeat(1, 3)
    state = {"x": x, "size": (4, 4)}
    calls = []

    def run(piece, start, count):
        calls.append((piece["x"].shape[0], start, count))
        assert piece["size"] == (4, 4)
        assert torch.equal(piece["x"][:count], x[start:start + count])
        assert not piece["x"][count:].any()  # the padding is zeros
        return {"y": piece["x"] * 2 + 1, "size": piece["size"]}

    out = run_in_pieces(run, state, smallest=16)
    assert calls == [(32, 0, 32), (16, 32, 16), (16, 48, 2)]
    assert torch.equal(out["y"], x * 2 + 1) and out["size"] == (4, 4)


def test_a_batch_of_one_piece_is_handed_over_as_it_is():
    state = {"x": torch.ones(8, 2)}
    assert run_in_pieces(lambda piece, start, count: piece, state)["x"] is state["x"]
    assert take_rows(state, 2, 3, 4)["x"].shape == (4, 2)
