"""The sink process: the end of the pipeline. It says how each request ended (ok, or an output
check failed), optionally saves the output (as the model says: FLAVR's interpolated video,
R(2+1)D's top classes), and gives the slot back. When checking, it also scores the outputs of
clips with ground truth (pipeline/serving/truth_check.py), after giving the slot back.

It does not stamp completion: the last step's runner does, when its GPU work completes (one queue's
FIFO order here would make a small request finished on one GPU wait behind a large one on
another). A request is ok once both reports are in. The sink waits for a slot's GPU work only to
read it (checking or saving outputs); otherwise it gives the slot back at once, which is safe: its
producer writes that slot again only on its own stream, after the work it is replacing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline.analysis.records import Outcome
from pipeline.serving.transport.queues import get_batch
from pipeline.serving.transport.slots import load_handle, open_reader
from pipeline.serving.workers.child import ChildContext, run_child


@dataclass
class SinkSpec:
    in_queue: object
    upstream_free: dict  # pool id -> free queue
    model: object  # the ServedModel (models/base.py): output counts, how an output is saved
    save_dir: str | None  # write each request's output here
    save_tensors: bool  # with save_dir: the raw output tensors as .pt instead (exact comparisons)
    check_outputs: bool  # verify every output value is finite, and score against truth
    truths: dict = field(default_factory=dict)  # clip -> media.truth.TruthInfo, where it has one
    decode_backend: str = "auto"  # the run's: how the truth check decodes input frames again


def sink_main(ctx: ChildContext, spec: SinkSpec) -> None:
    run_child(ctx, lambda c: _serve(c, spec))


def _serve(ctx: ChildContext, spec: SinkSpec) -> None:
    ctx.ready()
    handles = ctx.wait_start()
    if handles is None:
        return
    readers = {}
    for data in handles.values():
        h = load_handle(data)
        readers[h.pool_id] = open_reader(h, spec.upstream_free[h.pool_id])
    check = None
    if spec.check_outputs and spec.truths:
        from pipeline.serving.truth_check import TruthCheck

        check = TruthCheck(spec.truths, spec.model.factor, spec.decode_backend, ctx.should_stop)
    ctx.attached()
    try:
        while not ctx.should_stop():
            batch, _ = get_batch(spec.in_queue, 1, ctx.should_stop)
            if not batch:
                break
            item = batch[0]
            reader = readers[item.pool_id]
            outcomes = _outcomes(ctx, spec, reader, item)
            kept = _for_truth(spec, reader, item, outcomes) if check is not None else []
            if kept:  # the slot goes back before the (slow) scoring, which works on copies
                reader.release(item.slot)
            for p, new in kept:  # scores first: a request's row is written once it is ok
                _score(ctx, check, p, new)
            for p, outcome in zip(item.parts, outcomes):
                ctx.record(p.request_id, outcome)
            if not kept:  # as soon as what was saved is also recorded
                reader.release(item.slot)
    finally:
        if check is not None:
            check.close()


def _for_truth(spec: SinkSpec, reader, item, outcomes) -> list:
    """Copies of the new frames of the ok parts whose clip has truth: the slot goes back before
    they are scored."""
    out = reader.tensors(item).get("out")
    kept = [(p, out[p.start:p.start + p.rows].clone()) for p, o in zip(item.parts, outcomes)
            if o.status == "ok" and p.video in spec.truths and out is not None]
    if kept and out.is_cuda:  # copied before the producer may write the slot again
        torch.cuda.current_stream(out.device).synchronize()
    return kept


def _score(ctx: ChildContext, check, part, new) -> None:
    try:
        scores = check.score(part, new)
    except Exception as exc:  # a by-product, like saving: the request itself is done
        if part.video not in check.failed:  # said once per clip
            check.failed.add(part.video)
            ctx.notice(f"request {part.request_id}: could not score against ground truth: {exc}")
        return
    if scores is not None:
        ctx.record(part.request_id, scores)


def _outcomes(ctx: ChildContext, spec: SinkSpec, reader, item) -> list[Outcome]:
    """Each part's outcome; the outputs are read (and saved) only when asked for."""
    out = None
    if spec.check_outputs or spec.save_dir:
        reader.wait_host(item.slot)
        out = reader.tensors(item).get("out")
    finite = [True] * len(item.parts)
    if spec.check_outputs and out is not None:  # one host read per item, not per request
        finite = torch.stack([torch.isfinite(out[p.start:p.start + p.rows]).all()
                              for p in item.parts]).tolist()
    outcomes = []
    for p, ok in zip(item.parts, finite):
        made = (spec.model.outputs_per_request(p.frames) if p.stream_id is None
                else spec.model.outputs_per_segment(p.rows))  # a stream's segment: its rows'
        frames = dict(frames=p.frames, output_frames=made)
        if not ok:
            outcomes.append(Outcome("error", "output holds NaN or Inf values", **frames))
            continue
        outcomes.append(Outcome("ok", **frames))
        if spec.save_dir and out is not None:
            try:
                # a copy: the slot goes back to its producer next
                _save(spec, p, out[p.start:p.start + p.rows].to("cpu", copy=True))
            except Exception as exc:  # saving is a by-product; the request itself is done
                ctx.notice(f"request {p.request_id}: could not save: {exc}")
    return outcomes


def _save(spec: SinkSpec, part, out: torch.Tensor) -> None:
    stem = Path(spec.save_dir) / f"request{part.request_id:06d}"
    if spec.save_tensors:
        torch.save(out, stem.with_suffix(".pt"))
        return
    spec.model.save_output(out, part.video, part.frames, stem)
