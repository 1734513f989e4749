"""The decode-only benchmark on the CPU: real worker processes decoding real clips with PyAV and
DALI's CPU decoder, one run over codecs, sizes and worker counts (run once for the module); a run
cut short by SIGTERM (worker processes stood in for) keeps the cells it finished."""
from __future__ import annotations

import csv
import json
import os
import signal
import time

import pytest

from pipeline.bench import decode_only
from pipeline.bench.decode_only import AUTO_ORDER, backends_for, main
from pipeline.bench.decode_worker import Result
from pipeline.media.backends import BACKENDS, backend_class

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


class PoolCutShort:
    """Stands in for the worker processes: the first cell measures, during the second the run
    gets SIGTERM, as `timeout` sends it."""

    def __init__(self, devs, per_device):
        self.workers = [(f"{d}#{k}", d, None, None) for k in range(per_device) for d in devs]
        self.cells, self.closed = 0, False
        PoolCutShort.last = self

    def cell(self, cell_for, per_device, n_devices):
        self.cells += 1
        if self.cells == 2:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # the signal's handler ends the run before this does
        return {name: Result(clips_s=(0.0, 0.5), clips=4, clip_frames=16, stream_s=(1.0, 1.1),
                             stream_frames=12) for name, *_ in self.workers[:per_device]}

    def close(self):
        self.closed = True


def test_a_run_cut_short_keeps_the_cells_it_finished(tmp_path, monkeypatch):
    monkeypatch.setattr(decode_only, "Pool", PoolCutShort)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        main(["--gpus", "none", "--backends", "pyav", "--codecs", "h264", "--sizes", "32x32",
              "--workers", "1,2", "--frames", "4", "--clips", "4", "--distinct", "1",
              "--stream-reads", "1", "--cache", str(tmp_path / "clips"),
              "--out", str(tmp_path / "out")])
    assert stopped.value.code == 128 + signal.SIGTERM and PoolCutShort.last.closed
    with open(tmp_path / "out" / "decode.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["backend"], r["workers_per_device"]) for r in rows] == [("pyav", "1")]
    assert float(rows[0]["clips_per_s"]) == pytest.approx(8.0)
    assert len(json.loads((tmp_path / "out" / "decode.json").read_text())["rows"]) == 1
    assert signal.getsignal(signal.SIGTERM) == handler  # put back as it was


def test_auto_runs_the_gpu_decoders_first():
    assert sorted(AUTO_ORDER) == sorted(BACKENDS)
    assert AUTO_ORDER[:2] == ("pynvvideocodec", "dali-gpu")
    here = [n for n in ("pyav", "dali-cpu") if backend_class(n).unavailable() is None]
    assert backends_for("auto", on_gpu=False) == here
