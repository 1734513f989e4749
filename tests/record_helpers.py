"""requests.csv rows with known numbers, for tests of the statistics, the report and comparisons."""
from __future__ import annotations

from pipeline.analysis.records import CLIENT, PATH_TIMES

STEPS = ["decode", "flavr"]


def request_cells(rid, scheduled, latency, *, warmup=False, status="ok", error="", lag=0.0002,
                  put=0.0, frames=8, output_frames=15, steps=STEPS, device="cuda:0", batch=1,
                  times=None, rest=None) -> dict:
    """One request's cells. `times`: {step: {column: seconds}} (path columns default to 0);
    `rest`: (step, column) that takes whatever of the latency the others leave, so the columns
    add up to it exactly."""
    r = {"request_id": rid, "video": f"clip{rid % 2}.webm", "frames": frames,
         "output_frames": output_frames, "warmup": int(warmup), "status": status, "error": error,
         "scheduled_s": scheduled, "issued_s": scheduled + lag + put,
         f"{CLIENT}.lag_s": lag, f"{CLIENT}.put_s": put}
    if latency is None:
        return r
    r["done_s"] = scheduled + latency
    r["latency_s"] = latency
    for step in steps:
        given = (times or {}).get(step, {})
        r.update({f"{step}.device": device, f"{step}.replica": 0, f"{step}.batch": batch,
                  f"{step}.handoff_s": given.get("handoff_s", 0.0)})
        for c in PATH_TIMES:
            r[f"{step}.{c}"] = given.get(c, 0.0)
    if rest is not None:
        used = lag + put + sum(r[f"{s}.{c}"] for s in steps for c in PATH_TIMES)
        r[f"{rest[0]}.{rest[1]}"] += latency - used
    return r


def served_by_one_server(arrivals, service_s: float) -> list[dict]:
    """Rows of requests arriving at `arrivals` (seconds) at one FIFO server with a fixed service
    time: the model of a pipeline that keeps up (service < gap) or not."""
    rows, free = [], 0.0
    for i, arrival in enumerate(arrivals):
        start = max(arrival, free)
        free = start + service_s
        rows.append(request_cells(i, float(arrival), free - arrival, lag=0.0,
                                  times={"flavr": {"queue_wait_s": start - arrival,
                                                   "compute_s": service_s}}))
    return rows
