"""Where decode stands next to the model (analysis/placement.py): busy fractions from hand-built
records with known answers, batches of several requests among them."""
import pytest
from record_helpers import STEPS, request_cells

from pipeline.analysis.placement import decode_placement
from pipeline.analysis.records import RequestRow
from pipeline.analysis.summary import summarize


def requests_in_batches(batches, *, decode_s, model_s, queue_wait_s=0.0):
    """One ok request per entry of `batches` (flavr batch sizes, each batch's requests in a row):
    decode works `decode_s` on each alone; every request of a flavr batch carries the batch's
    `model_s`, as the runner stamps it."""
    rows, rid = [], 0
    for size in batches:
        for _ in range(size):
            cells = request_cells(rid, 0.0, 1.0, batch=size,
                                  times={"decode": {"compute_s": decode_s},
                                         "flavr": {"compute_s": model_s,
                                                   "queue_wait_s": queue_wait_s}})
            cells["decode.batch"] = 1
            rows.append(RequestRow.from_cells(cells, STEPS))
            rid += 1
    return rows


def test_a_batch_of_several_requests_counts_once_in_its_step_busy_time():
    # Two flavr calls of 3 requests, 2 s each: 4 s of work in a 10 s window.
    out = decode_placement(requests_in_batches([3, 3], decode_s=0.1, model_s=2.0), STEPS, 10.0)
    (flavr,) = out["model"]
    assert flavr["busy"] == pytest.approx(0.4)
    assert flavr["replicas"] == 1


def test_batches_of_different_sizes_each_count_once():
    out = decode_placement(requests_in_batches([1, 2, 4], decode_s=0.1, model_s=1.0), STEPS, 5.0)
    assert out["model"][0]["busy"] == pytest.approx(3.0 / 5.0)
    assert out["decode_busy"] == pytest.approx(7 * 0.1 / 5.0)


def test_decode_time_per_request_stays_each_request_own():
    out = decode_placement(requests_in_batches([3, 3], decode_s=0.1, model_s=2.0), STEPS, 10.0)
    assert out["decode_s_per_request"] == pytest.approx(0.1)


def test_runners_busy_below_the_threshold_by_batch_are_starved_by_a_busy_decode():
    # Decode works 6 x 0.15 s = 90% of the 1 s window; flavr's two calls of 0.3 s fill 60% of
    # it (counted per request, 180%), and its inputs waited 10 ms, less than decode's 150 ms.
    out = decode_placement(requests_in_batches([3, 3], decode_s=0.15, model_s=0.3,
                                               queue_wait_s=0.01), STEPS, 1.0)
    assert out["decode_busy"] == pytest.approx(0.9)
    assert out["model"][0]["busy"] == pytest.approx(0.6)
    assert out["starved"] is True


def test_decode_s_share_of_the_model_s_compute_counts_each_batch_once():
    # Six requests in two flavr calls of 2 s: 4 s of model compute, against 6 x 0.1 s of decode.
    rows = requests_in_batches([3, 3], decode_s=0.1, model_s=2.0)
    shares = summarize(rows, STEPS, {"t0": 0.0})["shares"]
    assert shares["model_compute_s"] == pytest.approx(4.0)
    assert shares["decode_compute_share"] == pytest.approx(0.6 / 4.0)
