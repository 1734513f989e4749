"""The decode-only benchmark on the CPU: real worker processes decoding real clips with PyAV and
DALI's CPU decoder, one run over codecs, sizes and worker counts (run once for the module)."""
from __future__ import annotations

import csv
import json

import pytest

from pipeline.bench.decode_only import main

SIZES = ("32x32", "48x64")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode_only")
    code = main(["--gpus", "none", "--codecs", "h264,vp9", "--sizes", ",".join(SIZES),
                 "--workers", "1,2", "--frames", "4", "--clips", "4", "--distinct", "2",
                 "--stream-reads", "3", "--cache", str(root / "clips"), "--out", str(root / "out")])
    assert code == 0
    with open(root / "out" / "decode.csv") as f:
        return list(csv.DictReader(f)), json.loads((root / "out" / "decode.json").read_text())


def test_every_backend_codec_size_and_worker_count_gets_a_row_with_its_rates(bench):
    rows, _ = bench
    cells = {(r["backend"], r["codec"], r["size"], r["workers_per_device"]) for r in rows}
    expected = {(b, c, s, w) for b, c in (("pyav", "h264"), ("pyav", "vp9"), ("dali-cpu", "vp9"))
                for s in SIZES for w in ("1", "2")}
    assert cells == expected
    for r in rows:
        assert r["error"] == "" and r["devices"] == "cpu"
        assert float(r["clips_per_s"]) > 0 and float(r["stream_frames_per_s"]) > 0
        assert float(r["frames_per_s"]) == pytest.approx(4 * float(r["clips_per_s"]))


def test_a_backend_is_not_asked_for_a_codec_it_cannot_decode(bench):
    rows, _ = bench
    assert not [r for r in rows if r["backend"] == "dali-cpu" and r["codec"] == "h264"]


def test_the_json_keeps_the_settings_and_the_rows(bench):
    rows, data = bench
    assert data["devices"] == ["cpu"] and data["settings"]["frames"] == 4
    assert len(data["rows"]) == len(rows)
