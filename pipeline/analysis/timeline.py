"""Dividing a request's time, from its scheduled time to its completion, into columns that add up.

The processes report when things happened (records.StepStamps: host clock times, and durations of
device work that ends when the step's runner observed it complete). Along the request's path the
phases are, in order:

    client:  lag (scheduled -> began to issue), put (-> in the first queue)
    a step:  queue wait (-> taken), hand-off (-> inputs gathered), slot wait (-> own output slot
             held, work launched), stream wait (-> device work began), compute, publish (slot
             writes; then the put to the next queue, where it outlasts the work)

Stamps from different processes overlap: a runner may take an item while the producer's GPU is
still writing it, and a runner's put returns long before the GPU work it hands on is done. A
cursor walks the path: each phase gets the time from the cursor to the phase's end, if that end
is later, and the cursor moves there. Every interval is counted once, by the first phase still
going on; the columns sum to done - scheduled exactly.
"""
from __future__ import annotations

from pipeline.analysis.records import (
    TRUTH_COLUMNS,
    RequestRow,
    RequestState,
    StepStamps,
    StepTimes,
)


class _Cursor:
    """The point along a request's path up to which its time has been given to a column."""

    def __init__(self, t: float):
        self.t = t

    def until(self, end: float) -> float:
        """The time from the cursor to `end` (0 if `end` has passed), and move there."""
        spent = max(0.0, end - self.t)
        self.t = max(self.t, end)
        return spent


def step_times(s: StepStamps, cursor: _Cursor, handed_on: float | None) -> StepTimes:
    """One step's columns, the cursor standing where its input was ready. `handed_on`: when its
    output was in the next queue (None for the last step, whose put is after completion)."""
    queue_wait = cursor.until(s.taken)
    gathering = cursor.until(s.gathered)
    slot_wait = cursor.until(s.slot_held)
    began = s.finished - s.compute_s - s.publish_s
    before = cursor.until(began)
    # Of the wait between launch and the device work, the end of it the inputs were still
    # crossing from another GPU is the hand-off's; the rest the stream was busy with earlier work.
    exposed = min(s.handoff_exposed_s, before)
    compute = cursor.until(began + s.compute_s)
    publish = cursor.until(s.finished)
    if handed_on is not None:
        publish += cursor.until(handed_on)  # a put that outlasted the work (a full queue)
    return StepTimes(s.device, s.replica, s.batch, queue_wait, gathering + exposed, slot_wait,
                     before - exposed, compute, publish, s.handoff_s)


def _put_end(returned: float | None, taker: StepStamps | None) -> float | None:
    if returned is None or taker is None:
        return returned
    return min(returned, taker.taken)


def to_row(state: RequestState, step_names, t0: float) -> RequestRow:
    """A request's row: relative times, status, and its latency divided into the columns."""
    last = step_names[-1]
    out = state.outcome
    row = RequestRow(state.request_id, state.video, state.frames, None, state.warmup,
                     state.status(last), out.error if out is not None else "",
                     stream=state.stream, segment=state.segment if state.stream is not None
                     else None)
    if state.change is not None:
        c = state.change
        row.computed_fraction = c.tiles / c.tiles_total if c.tiles_total else None
        row.windows_whole = c.windows_whole
    if state.fidelity is not None:
        row.psnr_vs_full_db = state.fidelity.psnr_db
    if state.truth is not None:
        for name in TRUTH_COLUMNS:
            setattr(row, name, getattr(state.truth, name))
    if out is not None:
        row.frames = out.frames if out.frames is not None else row.frames
        row.output_frames = out.output_frames
    if row.status == "unfinished" and not row.error and out is not None and out.status == "ok":
        row.error = f"its last step '{last}' never reported completing it"
    adm = state.admission
    if adm is None:
        return row
    row.scheduled_s = adm.scheduled - t0
    cursor = _Cursor(adm.scheduled)
    row.lag_s = cursor.until(adm.sent)
    if adm.issued is None:  # refused by a full first queue
        return row
    row.issued_s = adm.issued - t0
    reached = []
    for name in step_names:
        if name not in state.steps:
            break  # the request went no further (failed, dropped or unfinished)
        reached.append(state.steps[name])
    # A put is over once the next step has taken the item, even if the putting process only
    # saw its call return later (it was descheduled, say).
    row.put_s = cursor.until(_put_end(adm.issued, reached[0] if reached else None))
    for i, stamps in enumerate(reached):
        after = reached[i + 1] if i + 1 < len(reached) else None
        handed_on = None if stamps.step == last else _put_end(stamps.handed_on, after)
        row.steps[stamps.step] = step_times(stamps, cursor, handed_on)
    if last in state.steps:
        done = state.steps[last].finished
        row.done_s = done - t0
        row.latency_s = done - adm.scheduled
    return row
