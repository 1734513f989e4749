"""Weight files are read without running code from them: what is refused, and how it is said
(one line naming the file and the reason)."""
import pytest
import torch
from checkpoint_helpers import Payload, broken_files, crafted_checkpoint

from models.weights import read_weights, save_weights
from pipeline.errors import CheckpointError


def refusal(path, trust=False) -> str:
    with pytest.raises(CheckpointError) as err:
        read_weights(path, trust)
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    return message


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    return broken_files(tmp_path_factory.mktemp("broken"))


@pytest.mark.parametrize("kind, reason", [
    ("empty", "the file is empty"),
    ("random", "not a checkpoint: neither a .safetensors file nor one written by torch.save"),
    ("pickle-like", "damaged or not a checkpoint"),
    ("text", "not a readable .safetensors file"),
])
def test_a_file_that_is_not_a_checkpoint_is_refused_in_one_line(broken, kind, reason):
    assert reason in refusal(broken[kind])
    assert reason in refusal(broken[kind], trust=True)  # trust never makes noise loadable


def test_a_torch_file_cut_short_is_refused_in_one_line(tmp_path):
    whole = save_weights({"w": torch.ones(1000)}, tmp_path / "whole.pth")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[:700])
    assert "damaged or not a checkpoint" in refusal(cut)


def test_a_missing_file_is_named():
    assert "checkpoint file not found" in refusal("/nonexistent/FLAVR_2x.pth")


def test_a_folder_is_named_as_a_folder_not_a_missing_file(tmp_path):
    message = refusal(tmp_path)
    assert "is a folder" in message and "weights file" in message, message


def test_a_crafted_pickle_is_refused_and_its_payload_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    path = crafted_checkpoint(tmp_path / "FLAVR_2x.pth", marker)
    message = refusal(path)
    assert "it asks for exec" in message and "--trust-checkpoint" in message
    assert not marker.exists()


def test_trusting_a_file_unpickles_it_in_full_after_saying_so(tmp_path):
    marker = tmp_path / "payload-ran"
    path = crafted_checkpoint(tmp_path / "FLAVR_2x.pth", marker)
    with pytest.warns(UserWarning, match="trusted as asked"):
        loaded = read_weights(path, trust=True)
    assert marker.read_text() == "the payload ran"  # the user opted in to exactly this
    assert loaded.obj["epoch"] == 3


def test_safetensors_hold_tensors_and_string_metadata_only(tmp_path):
    path = save_weights({"a": torch.arange(6.0).view(2, 3)}, tmp_path / "w.safetensors",
                        {"factor": "2"})
    loaded = read_weights(path)
    assert loaded.format == "safetensors" and loaded.metadata == {"factor": "2"}
    assert torch.equal(loaded.obj["a"], torch.arange(6.0).view(2, 3))
    with pytest.raises(CheckpointError, match="not tensors"):
        save_weights({"a": Payload(tmp_path / "x")}, tmp_path / "bad.safetensors")


def test_a_file_is_never_left_half_written(tmp_path):
    save_weights({"a": torch.ones(3)}, tmp_path / "w.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]
