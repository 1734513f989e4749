"""Where decode stands next to the model in a run: how busy the decode workers and the model's
runners were over the measurement window, and whether decode, not the model, set the pace.

busy     a process's work over the window, summed over the measured ok requests and divided by
         (window x processes of the step): decode counts its compute and publish (decoding,
         making rows, writing the slot), never its slot wait (that is the next step being
         behind); a model step counts its compute. Every request of a batch carries the whole
         batch's time (records.py), so each counts its 1/batch share: a batch counts once.
limited  decode limited the run when, at saturation (the pipeline did not keep up, or every
         request was due at once), the decode workers were busy at least BUSY of the window
         while every model step was busy less than that and its inputs waited in its queue on
         average less than decode took per request: the runners were starved, their queues
         ran empty, and the run measured the decode workers rather than the model's placement.

Per stream (stream workloads): requests and latency percentiles of each stream, summarised over
the streams, so that one slow or starved stream shows.
"""
from __future__ import annotations

import math

from pipeline.analysis.statistics import percentile

BUSY = 0.8


def decode_placement(ok, steps, duration_s) -> dict | None:
    if not ok or not duration_s or len(steps) < 2:
        return None
    decode, model = steps[0], steps[1:]

    def busy(step, fields):
        stamps = [r.steps[step] for r in ok if step in r.steps]
        # The process's own work: each request's share of its batch (logs without the batch
        # column count whole).
        work = math.fsum((getattr(t, f) or 0.0) / (t.batch or 1) for t in stamps for f in fields)
        # What a request waited for: the whole batch's time.
        per_request = math.fsum(getattr(t, f) or 0.0 for t in stamps for f in fields)
        processes = len({(t.device, t.replica) for t in stamps}) or 1
        return work / (duration_s * processes), processes, per_request / max(len(stamps), 1)

    d_busy, d_n, d_per_request = busy(decode, ("compute_s", "publish_s"))
    out = {"decode_busy": d_busy, "decode_workers": d_n,
           "decode_s_per_request": d_per_request, "model": []}
    for step in model:
        m_busy, m_n, _ = busy(step, ("compute_s",))
        waits = [r.steps[step].queue_wait_s for r in ok
                 if step in r.steps and r.steps[step].queue_wait_s is not None]
        out["model"].append({"step": step, "busy": m_busy, "replicas": m_n,
                             "queue_wait_mean_s": math.fsum(waits) / len(waits) if waits
                             else None})
    starved = all(m["busy"] < BUSY and m["queue_wait_mean_s"] is not None
                  and m["queue_wait_mean_s"] < d_per_request for m in out["model"][:1])
    out["starved"] = bool(d_busy >= BUSY and starved
                          and all(m["busy"] < BUSY for m in out["model"]))
    return out


def limited_text(decode: dict) -> str:
    model = ", ".join(f"{m['step']} {100 * m['busy']:.0f}%" for m in decode["model"])
    first = decode["model"][0]
    return (f"decode, not the model, limited this run: its {decode['decode_workers']} worker(s) "
            f"were busy {100 * decode['decode_busy']:.0f}% of the window while the model's "
            f"runners were busy {model}, and {first['step']} took its inputs "
            f"{1e3 * first['queue_wait_mean_s']:.1f} ms after they were ready on average (less "
            f"than the {1e3 * decode['decode_s_per_request']:.1f} ms decode spent per request): "
            "the runners were starved, so the numbers measure decode, not the model's "
            "placement; add decode workers (more entries in the decode step's gpus) or choose "
            "a faster decoder (--decode-backend; compare them with benchmark.py --decode-only)")


def per_stream(ok) -> dict | None:
    streams: dict[int, list] = {}
    for r in ok:
        if r.stream is not None and r.latency_s is not None:
            streams.setdefault(int(r.stream), []).append(r.latency_s)
    if not streams:
        return None
    p50 = {s: percentile(sorted(v), 50) for s, v in streams.items()}
    counts = sorted(len(v) for v in streams.values())
    worst = max(p50, key=p50.get)
    return {"streams": len(streams), "requests_min": counts[0],
            "requests_median": percentile(counts, 50), "requests_max": counts[-1],
            "latency_p50_min_s": min(p50.values()), "latency_p50_max_s": p50[worst],
            "worst_stream": worst}
