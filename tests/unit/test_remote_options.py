"""The process group's NCCL options, as far as they can be checked without a GPU."""
import pytest

from pipeline.serving.transport import remote


def test_an_unknown_nccl_priority_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv(remote.NCCL_PRIORITY_ENV, "fast")
    with pytest.raises(ValueError, match="FLAVR_NCCL_PRIORITY='fast'"):
        remote._nccl_options(None)
