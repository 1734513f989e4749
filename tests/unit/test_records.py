"""Per-request records: the typed reports of the processes, the one conversion to requests.csv, and
how a request's time is divided into columns that add up to its latency."""
import pytest

from pipeline.analysis.records import (
    BASE_COLUMNS,
    PATH_TIMES,
    Admission,
    Outcome,
    RecordTable,
    RequestRow,
    StepStamps,
    StepTimes,
    TruthScores,
    columns,
)
from pipeline.analysis.requests_csv import read_rows, write_csv

STEPS = ["decode", "encoder", "decoder"]
T0 = 1000.0


def stamps(step, taken, *, gathered=None, slot_held=None, finished, compute, publish=0.0,
           handed_on=None, exposed=0.0, copy=0.0):
    gathered = taken if gathered is None else gathered
    slot_held = gathered if slot_held is None else slot_held
    return StepStamps(step, "cuda:0", 0, 1, taken=taken, gathered=gathered, slot_held=slot_held,
                      finished=finished, compute_s=compute, publish_s=publish, handed_on=handed_on,
                      handoff_s=copy, handoff_exposed_s=exposed)


def row_of(*reports, steps=STEPS, outcome=Outcome("ok", frames=4, output_frames=7)) -> RequestRow:
    table = RecordTable(steps, [(0, "clip.webm", 4, False)])
    for r in reports + ((outcome,) if outcome else ()):
        table.update(0, r)
    [row] = table.finish(T0)
    return row


def times(row: RequestRow, step: str) -> dict:
    return {c: round(getattr(row.steps[step], c), 9) for c in PATH_TIMES}


def assert_adds_up(row: RequestRow):
    assert row.accounted_s() == pytest.approx(row.latency_s, abs=1e-9)


# --- the path, phase by phase ------------------------------------------------------------------

def test_a_sequential_path_gives_each_phase_its_own_time():
    row = row_of(Admission(T0 + 1.0, T0 + 1.001, T0 + 1.003),
                 stamps("decode", T0 + 1.013, slot_held=T0 + 1.014, finished=T0 + 1.034,
                        compute=0.018, publish=0.002, handed_on=T0 + 1.035),
                 stamps("encoder", T0 + 1.045, gathered=T0 + 1.046, slot_held=T0 + 1.047,
                        finished=T0 + 1.147, compute=0.099, publish=0.001, handed_on=T0 + 1.148),
                 stamps("decoder", T0 + 1.150, finished=T0 + 1.250, compute=0.1,
                        handed_on=T0 + 1.3))
    assert (row.scheduled_s, row.issued_s, row.done_s) == pytest.approx((1.0, 1.003, 1.25))
    assert row.latency_s == pytest.approx(0.25)
    assert (row.lag_s, row.put_s) == pytest.approx((0.001, 0.002))
    assert times(row, "decode") == pytest.approx(dict(
        queue_wait_s=0.010, handoff_exposed_s=0.0, slot_wait_s=0.001, stream_wait_s=0.0,
        compute_s=0.018, publish_s=0.003))  # the slot write, and the put until 1.035
    assert times(row, "encoder") == pytest.approx(dict(
        queue_wait_s=0.010, handoff_exposed_s=0.001, slot_wait_s=0.001, stream_wait_s=0.0,
        compute_s=0.099, publish_s=0.002))
    # The last step's put comes after the request is complete: not part of its latency.
    assert times(row, "decoder")["publish_s"] == 0.0
    assert_adds_up(row)


def test_a_step_that_took_its_item_before_the_producers_gpu_finished_waits_for_nothing_twice():
    # The encoder launched at 1.10 and its GPU finished at 1.20; the decoder took the item at 1.11
    # (queue wait 0: the item was not ready), launched at 1.12, and its stream began at 1.21.
    row = row_of(Admission(T0 + 1.0, T0 + 1.0, T0 + 1.0),
                 stamps("decode", T0 + 1.0, finished=T0 + 1.05, compute=0.05, handed_on=T0 + 1.05),
                 stamps("encoder", T0 + 1.09, slot_held=T0 + 1.10, finished=T0 + 1.20,
                        compute=0.1, handed_on=T0 + 1.101),
                 stamps("decoder", T0 + 1.11, slot_held=T0 + 1.12, finished=T0 + 1.31,
                        compute=0.1))
    enc, dec = times(row, "encoder"), times(row, "decoder")
    assert enc["stream_wait_s"] == pytest.approx(0.0) and enc["compute_s"] == pytest.approx(0.1)
    assert enc["publish_s"] == 0.0  # its put returned long before its work was done
    assert dec["queue_wait_s"] == 0.0 and dec["slot_wait_s"] == 0.0
    assert dec["stream_wait_s"] == pytest.approx(0.01) and dec["compute_s"] == pytest.approx(0.1)
    assert_adds_up(row)


def test_a_batch_queued_on_its_stream_behind_earlier_work_waits_there():
    # Launched at 1.0, but the GPU stream was busy until 1.3: 300 ms of stream wait.
    row = row_of(Admission(T0 + 1.0, T0 + 1.0, T0 + 1.0),
                 stamps("decode", T0 + 1.0, finished=T0 + 1.0, compute=0.0, handed_on=T0 + 1.0),
                 stamps("encoder", T0 + 1.0, finished=T0 + 1.4, compute=0.09, publish=0.01),
                 steps=STEPS[:2])
    assert times(row, "encoder")["stream_wait_s"] == pytest.approx(0.3)
    assert_adds_up(row)


def test_the_exposed_part_of_a_peer_copy_is_the_hand_offs_not_the_streams():
    row = row_of(Admission(T0, T0, T0),
                 stamps("decode", T0, finished=T0 + 0.1, compute=0.1, handed_on=T0 + 0.1),
                 stamps("encoder", T0 + 0.1, finished=T0 + 0.2, compute=0.05, handed_on=T0 + 0.1),
                 stamps("decoder", T0 + 0.1, finished=T0 + 0.4, compute=0.1, exposed=0.02,
                        copy=0.03),
                 )
    dec = times(row, "decoder")
    # 100 ms between the encoder's end and the decoder's start: 20 ms of it the copy landing.
    assert dec["handoff_exposed_s"] == pytest.approx(0.02)
    assert dec["stream_wait_s"] == pytest.approx(0.08)
    assert row.steps["decoder"].handoff_s == pytest.approx(0.03)  # the link's time, not summed
    assert_adds_up(row)


def test_a_blocking_put_is_counted_once_by_whoever_was_blocked():
    # The client's put waited 50 ms for room; the encoder's output waited 40 ms past its work.
    row = row_of(Admission(T0, T0, T0 + 0.05),
                 stamps("decode", T0 + 0.05, finished=T0 + 0.06, compute=0.01, handed_on=T0 + 0.06),
                 stamps("encoder", T0 + 0.06, finished=T0 + 0.16, compute=0.1, handed_on=T0 + 0.2),
                 stamps("decoder", T0 + 0.2, finished=T0 + 0.3, compute=0.1))
    assert row.put_s == pytest.approx(0.05)
    assert times(row, "encoder")["publish_s"] == pytest.approx(0.04)
    assert times(row, "decoder")["queue_wait_s"] == 0.0
    assert_adds_up(row)


def test_a_put_is_over_once_the_next_step_has_taken_the_item():
    # The decode worker saw its put return at 0.5 (it was descheduled); the encoder took the item
    # at 0.2 and finished before that.
    row = row_of(Admission(T0, T0, T0),
                 stamps("decode", T0, finished=T0 + 0.1, compute=0.1, handed_on=T0 + 0.5),
                 stamps("encoder", T0 + 0.2, finished=T0 + 0.4, compute=0.2), steps=STEPS[:2])
    assert times(row, "decode")["publish_s"] == pytest.approx(0.1)
    assert row.latency_s == pytest.approx(0.4)
    assert_adds_up(row)


# --- status and failures -----------------------------------------------------------------------

def test_a_request_is_ok_only_once_its_last_step_reported_completing_it():
    table = RecordTable(STEPS[:1], [(0, "clip.webm", 4, False)])
    table.update(0, Outcome("ok"))
    assert table.status(0) == "unfinished"
    table.update(0, stamps("decode", T0, finished=T0 + 0.1, compute=0.1))
    assert table.status(0) == "ok"


def test_the_first_failure_is_the_cause_that_stays():
    table = RecordTable(STEPS, [(0, "clip.webm", 4, False)])
    table.update(0, Outcome("error", "decode: bad.mp4: not a video"))
    table.update(0, Outcome("dropped", "queue full"))
    table.update(0, Outcome("ok"))
    assert table.status(0) == "error"
    [row] = table.finish(T0)
    assert (row.status, row.error) == ("error", "decode: bad.mp4: not a video")


def test_a_failed_request_has_the_columns_of_the_steps_it_reached_and_no_latency():
    row = row_of(Admission(T0, T0, T0),
                 stamps("decode", T0, finished=T0 + 0.1, compute=0.1, handed_on=T0 + 0.1),
                 outcome=Outcome("error", "step 'encoder' on cuda:0: out of memory"))
    assert row.status == "error" and list(row.steps) == ["decode"]
    assert row.done_s is None and row.latency_s is None
    assert row.accounted_s() == pytest.approx(0.1)  # the time it spent before it failed


def test_a_request_refused_by_the_first_queue_keeps_its_schedule():
    row = row_of(Admission(T0 + 2.0, T0 + 2.001, None), outcome=Outcome("dropped", "queue full"))
    assert (row.status, row.scheduled_s, row.issued_s) == ("dropped", pytest.approx(2.0), None)
    assert row.lag_s == pytest.approx(0.001)


def test_a_report_of_the_wrong_type_is_refused():
    with pytest.raises(TypeError, match="not a record"):
        RecordTable(STEPS, [(0, "clip.webm", 4, False)]).update(0, {"status": "ok"})


# --- requests.csv ------------------------------------------------------------------------------

def test_a_row_comes_back_from_the_csv_as_it_was(tmp_path):
    row = RequestRow(3, "clips/a.webm", 4, 7, True, "ok", "", 1.25, 1.2505, 1.5, 0.25, 0.0001,
                     0.0004, {s: StepTimes(f"cpu:{k}", k, 2, *[0.001 * (k + 1)] * 7)
                              for k, s in enumerate(STEPS)})
    write_csv(tmp_path / "requests.csv", [row], columns(STEPS))
    assert read_rows(tmp_path / "requests.csv") == [row]


def test_scores_against_ground_truth_become_the_rows_truth_columns_and_survive_the_csv(tmp_path):
    scores = TruthScores(6, 29.123456, 0.91, 28.5, 0.9, 26.25, 0.88)
    row = row_of(stamps("decode", 1000.0, finished=1000.01, compute=0.01), scores, steps=["decode"])
    assert (row.truth_frames, row.truth_psnr_db, row.avg_ssim, row.nearest_psnr_db) == (
        6, 29.123456, 0.9, 26.25)
    bare = row_of(stamps("decode", 1000.0, finished=1000.01, compute=0.01), steps=["decode"])
    write_csv(tmp_path / "requests.csv", [row, bare], columns(["decode"]))
    back, back_bare = read_rows(tmp_path / "requests.csv")
    assert back.truth_ssim == 0.91 and back.avg_psnr_db == 28.5 and back.truth_frames == 6
    assert back_bare.truth_frames is None and back_bare.truth_psnr_db is None  # empty cells


def test_the_csv_has_the_clients_and_each_steps_columns_in_path_order():
    cols = columns(["decode", "flavr"])
    n = len(BASE_COLUMNS)  # the request's own columns come first
    assert cols[n:n + 2] == ["client.lag_s", "client.put_s"]
    assert cols[n + 2:] == [f"{s}.{f}" for s in ("decode", "flavr") for f in
                         ("device", "replica", "batch", "queue_wait_s", "handoff_exposed_s",
                          "slot_wait_s", "stream_wait_s", "compute_s", "publish_s", "handoff_s")]
