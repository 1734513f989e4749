"""The decode-only benchmark on the CPU: real worker processes decoding real clips with PyAV and
DALI's CPU decoder, one run over codecs, sizes and worker counts (run once for the module), and
one with --phases (each clip's decode profiled phase by phase); a run cut short by SIGTERM
(worker processes stood in for) keeps the cells it finished."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.bench import decode_only
from pipeline.bench.decode_only import AUTO_ORDER, backends_for, main
from pipeline.bench.decode_phases import PHASES
from pipeline.bench.decode_worker import Result
from pipeline.media.backends import BACKENDS, backend_class
from pipeline.media.probe import probe

SIZES = ("32x32", "48x64")
# decode.csv's columns, and the first line of the table, before --phases existed
COLUMNS = ["backend", "codec", "size", "devices", "workers_per_device", "clips_per_s",
           "clips_per_s_per_device", "frames_per_s", "stream_frames_per_s", "setup_ms_per_clip",
           "error"]
TABLE_HEAD = ("        backend codec      size w/dev   clips/s  per dev  frames/s stream fr/s  "
              "setup ms")


def run_bench(root: Path, *args: str) -> SimpleNamespace:
    """main(args) with its clips and output under root: decode.csv's rows, decode.json, what
    it printed, and the files it wrote."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["--gpus", "none", *args, "--cache", str(root / "clips"),
                     "--out", str(root / "out")])
    assert code == 0
    with open(root / "out" / "decode.csv") as f:
        rows = list(csv.DictReader(f))
    return SimpleNamespace(rows=rows, data=json.loads((root / "out" / "decode.json").read_text()),
                           stdout=printed.getvalue(), files=sorted(os.listdir(root / "out")),
                           root=root)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    return run_bench(tmp_path_factory.mktemp("decode_only"), "--codecs", "h264,vp9", "--sizes",
                     ",".join(SIZES), "--workers", "1,2", "--frames", "4", "--clips", "4",
                     "--distinct", "2", "--stream-reads", "3")


@pytest.fixture(scope="module")
def bench(plain_run):
    return plain_run.rows, plain_run.data


@pytest.fixture(scope="module")
def phases_run(tmp_path_factory):
    """Clips of 6 frames of which requests decode 4, 10 per worker (enough for a p90)."""
    return run_bench(tmp_path_factory.mktemp("decode_phases"), "--codecs", "vp9", "--sizes",
                     "32x32", "--workers", "1", "--frames", "4", "--clip-frames", "6", "--clips",
                     "10", "--distinct", "2", "--stream-reads", "1", "--phases")


def phase_rows(run) -> dict:
    """phases.csv as {backend: {phase: row}}."""
    with open(run.root / "out" / "phases.csv") as f:
        out: dict = {}
        for r in csv.DictReader(f):
            out.setdefault(r["backend"], {})[r["phase"]] = r
    return out


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


def test_without_phases_the_files_and_the_table_are_as_before(plain_run):
    assert plain_run.files == ["decode.csv", "decode.json"]
    assert list(plain_run.rows[0]) == COLUMNS
    assert set(plain_run.data) == {"settings", "devices", "rows"}
    assert all(set(r) == set(COLUMNS) for r in plain_run.data["rows"])
    lines = plain_run.stdout.splitlines()
    # the table, the line saying what the setup column means, the files
    assert lines[0] == TABLE_HEAD and len(lines) == 2 + len(plain_run.rows) + 3
    assert lines[2 + len(plain_run.rows)] == decode_only.SETUP_NOTE
    assert lines[-1].endswith("/out/decode.csv, decode.json") and "phase" not in plain_run.stdout


def test_phases_give_each_backend_every_phase_with_its_mean_and_p90(phases_run):
    here = [n for n in ("pyav", "dali-cpu") if backend_class(n).unavailable() is None]
    by_backend = phase_rows(phases_run)
    assert list(by_backend) == here
    for phases in by_backend.values():
        assert list(phases) == [*PHASES, "total", "plain"]
        for name, r in phases.items():
            assert r["clips"] == "10" and r["codec"] == "vp9" and r["size"] == "32x32"
            assert float(r["mean_ms"]) >= 0 and (name == "other" or float(r["mean_ms"]) > 0)
            assert (r["p90_ms"] == "") == (name == "plain")


def test_the_phases_of_a_request_add_up_to_at_most_its_total(phases_run):
    for phases in phase_rows(phases_run).values():
        assert sum(float(phases[p]["mean_ms"]) for p in PHASES) <= float(
            phases["total"]["mean_ms"])
        assert float(phases["total"]["share_of_total"]) == 1.0


def test_phases_print_their_table_saying_that_timing_synchronises(phases_run):
    out = phases_run.stdout
    assert out.splitlines()[0] == TABLE_HEAD
    assert "decode phases per clip request, ms" in out and "synchronises the device" in out
    assert out.rstrip().endswith("decode.csv, decode.json, phases.csv")
    assert len(phases_run.data["phases"]) == sum(len(p) for p in phase_rows(phases_run).values())
    assert "synchronises the device" in phases_run.data["phases_note"]


def test_phases_leave_the_throughput_rows_as_they_are(phases_run):
    assert list(phases_run.rows[0]) == COLUMNS
    for r in phases_run.rows:
        assert r["error"] == "" and float(r["clips_per_s"]) > 0
        assert float(r["frames_per_s"]) == pytest.approx(4 * float(r["clips_per_s"]))


def test_clip_frames_makes_longer_clips_of_which_requests_decode_frames(phases_run):
    clips = sorted((phases_run.root / "clips" / "vp9-32x32").glob("clip*"))
    assert len(clips) == 2 and all(probe(c).frames == 6 for c in clips)


class PoolCutShort:
    """Stands in for the worker processes: the first cell measures, during the second the run
    gets SIGTERM, as `timeout` sends it."""

    def __init__(self, devs, per_device, phases=False):
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
