"""PyNvVideoCodec's own logger warns on stderr for every WebM/Matroska clip a decoder is pointed
at; the backend asks it for errors only before the library loads, unless the user chose a level.
(On one H200: 804 warning lines in a 400-clip decode-only run before, none after:
docs/results.md, section 9.)"""
from __future__ import annotations

import os

import pytest

from pipeline.media.backends import pynvc


def _load():
    try:
        pynvc._nvc()
    except Exception:  # noqa: BLE001 - no wheel or no driver here: the level is set before that
        pass


def test_errors_only_by_default(monkeypatch):
    monkeypatch.delenv("LOGGER_LEVEL", raising=False)
    _load()
    assert os.environ["LOGGER_LEVEL"] == "ERROR"


@pytest.mark.parametrize("level", ["WARN", "DEBUG"])
def test_a_level_the_user_set_is_kept(monkeypatch, level):
    monkeypatch.setenv("LOGGER_LEVEL", level)
    _load()
    assert os.environ["LOGGER_LEVEL"] == level
