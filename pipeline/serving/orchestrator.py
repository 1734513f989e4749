"""One benchmark run: start every process the config places, hand out the slot pools, run the
warm-ups, then the measured schedule, watch the children, account for every request, and write
the logs and the report.

The main process never touches CUDA (children create their contexts first; NVML needs none), never
waits on anything without also watching its children (control.py), and always writes what it has
(finish.py); requests.csv grows row by row while the run goes.
"""
from __future__ import annotations

import os
import sys
from dataclasses import asdict, replace
from pathlib import Path

from tqdm import tqdm

from models.registry import RANDOM_WEIGHTS, served_model
from pipeline.analysis.records import SINK, RecordTable
from pipeline.clock import now
from pipeline.config import config_to_dict, resolve_checkpoint, resolve_videos
from pipeline.serving import mps, signals
from pipeline.serving.control import ControlChannel, RunState, RunStopped
from pipeline.serving.finish import RunResult, close_records, write_results
from pipeline.serving.frame_limits import FrameLimits
from pipeline.serving.gpu_monitor import GpuMonitor, cpu_affinity_for_gpu
from pipeline.serving.heartbeat import HeartbeatBoard
from pipeline.serving.launch import launcher_for_run, named_nodes
from pipeline.serving.launch.base import LaunchError, Where
from pipeline.serving.plan import RunOptions, config_as_run, plan_run, survey_clips
from pipeline.serving.runlog import (
    RequestsCsv,
    check_writable,
    create_run_dir,
    run_dir_name,
    write_process_table,
)
from pipeline.serving.transport.messages import Attached, Measure, Ready, Start
from pipeline.serving.transport.queues import Output, drain
from pipeline.serving.truth_check import run_truths
from pipeline.serving.workers.child import ChildContext
from pipeline.serving.workers.client import ClientSpec, client_main
from pipeline.serving.workers.decode import DecodeSpec, decode_main
from pipeline.serving.workers.runner import RunnerSpec, runner_main
from pipeline.serving.workers.sink import SinkSpec, sink_main
from pipeline.serving.workload import build_workload, stream_owner

__all__ = ["RunOptions", "RunResult", "run"]

STOP_GRACE_S = 3.0  # children leave on their own within this, else they are terminated
ATTACH_TIMEOUT_S = 120.0  # for every consumer to open its producers' pools


def run(cfg, opts: RunOptions, args_for_log: dict | None = None, warnings=()) -> RunResult:
    p = plan_run(cfg, opts)
    device_kind, notices, topo, use_mps, mps_reason = (p.device_kind, p.notices, p.topo,
                                                       p.use_mps, p.mps_reason)
    cfg = config_as_run(cfg, opts, p)  # what the run folder's config.yaml says
    notices += check_writable(opts.logs_root)  # LogsError before anything starts
    checkpoint = resolve_checkpoint(cfg)
    # The runners load the file validation found (next to the config first, or the shipped
    # weights), not the text; the run folder's config says which, or `random`.
    cfg = replace(cfg, model=replace(cfg.model, checkpoint=str(checkpoint or RANDOM_WEIGHTS)))
    served = served_model(cfg.model)
    if cfg.model.resolution is None and served.input_size is not None:
        # A model with a fixed input size (R(2+1)D: 112x112) gets every clip brought to it.
        cfg = replace(cfg, model=replace(cfg.model, resolution=tuple(served.input_size)))
    videos = resolve_videos(cfg, synthetic_root=opts.video_cache)
    clips = survey_clips(cfg, videos)
    truths = run_truths(videos, served, notices) if opts.check_outputs else {}
    if opts.mps == "on" and not use_mps:
        notices.append(f"--mps on has no effect: {mps_reason}")
    if checkpoint is None and "model" in topo.kinds:
        notices.append(served.random_weights_notice())
    if clips.refused:
        notices.append("clips that will fail their requests: " + "; ".join(clips.refused))
    for line in [f"warning: {w}" for w in warnings] + [f"notice: {n}" for n in notices]:
        print(line, file=sys.stderr)
    if p.launcher != "local" and device_kind == "cuda" and topo.named_nodes:
        notices.append("GPU utilisation is sampled only on this machine's GPUs: not for a "
                       "placement that names nodes")
    launcher = launcher_for_run(p.launcher, opts.ray_address, cfg.ray.address)
    try:  # the nodes the config names, against the cluster just joined: before the run folder
        launcher.check_nodes(named_nodes(cfg))
        run = _Run(cfg, opts, topo, device_kind, videos, clips, launcher, served, truths)
    except BaseException:  # nothing started yet: the launcher's own instance goes too
        launcher.stop(grace_s=0.0)
        raise
    run.state.notices = notices
    try:
        # The daemon outlives every child: started before the first, stopped after the last.
        with mps.for_run(use_mps, mps_reason, hide=mps.hides(opts.mps, device_kind)) as mps_state:
            run.mps = mps_state.text
            try:
                run.execute()
            finally:
                run.clock_bounds = run.launcher.clock_bounds()
                forced = run.launcher.stop(grace_s=STOP_GRACE_S, pump=run.pump)
                if forced:
                    run.state.notices.append("had to terminate: " + ", ".join(forced))
        run.state.notices += mps_state.notices
        return run.finish(config_to_dict(cfg), args_for_log or asdict(opts))
    finally:
        signals.restore(run.signals)


class _Run:
    def __init__(self, cfg, opts, topo, device_kind, videos, clips, launcher, served, truths):
        self.cfg, self.opts, self.topo = cfg, opts, topo
        self.served = served  # the model as a workload (models/base.py)
        self.device_kind = device_kind
        self.videos = [str(v) for v in videos]
        self.sizes = clips.sizes  # only clips within the frame limits size the pools
        self.warmup_video = clips.warmup_video
        self.launcher = launcher
        self.n_requests = opts.warmup + opts.videos
        # Warm-ups first: (request id, clip, frames, warm-up, stream, segment)
        self.workload = build_workload(cfg, served, self.videos, opts.warmup, opts.videos,
                                       opts.mean_interval_ms, opts.seed, clips.failing)
        self.requests = self.workload.requests
        self.state = RunState(RecordTable(topo.step_names, self.requests),
                              admit_closed=None, on_final=self._final)
        self.channel: ControlChannel | None = None  # made with the run's queues (execute)
        self.t0: float | None = None  # the measured schedule's start: the run's time origin
        self.monitor = None
        self.baseline = None  # NVML's view of the GPUs before any child started
        self.children: dict[str, ChildContext] = {}
        self.signals = None  # the handlers to restore once the logs are written
        self.mps = "off"  # what the run did about MPS (mps.MpsState.text)
        self.bar = None  # progress of the requests, while serving
        self.truths = truths  # clip -> its ground truth, scored by the sink (--check-outputs)
        self.requests_csv: RequestsCsv | None = None  # streamed as requests end
        self.unwritten: list[int] = []  # ended before t0 was known (warm-ups): rows to stream
        self.affinity: dict[int, list[int] | None] = {}  # GPU -> the cores near it
        self.launcher_name = launcher.name
        self.clock_bounds: dict[str, float] = {}  # process -> its clock's error bound (s)
        self.start_up_s: float | None = None  # first process started .. every one warmed up

    # -- wiring ---------------------------------------------------------------------------------
    def _queues(self):
        L, topo, qs = self.launcher, self.topo, self.opts.queue_size
        self.in_queues = [{k: L.queue(qs) for k in topo.input_keys(i)}
                          for i in range(topo.n_steps + 1)]
        if self.workload.streams:  # one input queue per decode worker: stream affinity
            self.in_queues[0] = {r.index: L.queue(qs) for r in topo.replicas[0]}
        self.free = {r.name: L.queue() for step in topo.replicas for r in step}

    def _ctx(self, name: str, gpu: int | None, threads: int = 1, key=None) -> ChildContext:
        affinity = None
        # NVML here knows this machine's GPUs only: no affinity for a node the config names.
        if self.device_kind == "cuda" and gpu is not None and not self.topo.named_nodes:
            if gpu not in self.affinity:  # one NVML query per GPU, not per process on it
                self.affinity[gpu] = cpu_affinity_for_gpu(gpu)
            affinity = self.affinity[gpu]
        ctx = ChildContext(name, self.control, self.launcher.queue(), self.stop, self.device_kind,
                           gpu, threads, affinity, self.heartbeats.heart(name), queue_key=key)
        self.children[name] = ctx
        self.state.gpus[name] = gpu
        return ctx

    def _start_processes(self) -> None:
        cfg, opts, topo, L = self.cfg, self.opts, self.topo, self.launcher
        rows = self.workload.rows_per_request
        n_model = sum(len(s) for s in topo.replicas[1:]) or 1
        # CPU runs share the cores among model replicas; on a GPU a runner's host threads only
        # launch kernels.
        threads = max(1, (os.cpu_count() or 1) // n_model) if self.device_kind == "cpu" else 2
        threads = opts.cpu_threads or threads
        sink_ctx = self._ctx(SINK, None)
        save_dir = None
        if opts.save_outputs:
            save_dir = str(self.run_dir / "outputs")
            Path(save_dir).mkdir(parents=True, exist_ok=True)
        L.start(SINK, "the sink", sink_main, sink_ctx, SinkSpec(
            self.in_queues[topo.n_steps][None], self._upstream_free(topo.n_steps, None),
            self.served, save_dir, opts.save_tensors, opts.check_outputs, self.truths,
            opts.decode_backend))
        for i, replicas in enumerate(topo.replicas):
            step_cfg = cfg.steps[i]
            out = Output(self.in_queues[i + 1], topo.queue_names(i + 1),
                         topo.input_per_gpu[i + 1], opts.queue_size, opts.on_full)
            for r in replicas:
                streams = i == 0 and self.workload.streams
                in_q = self.in_queues[i][r.index if streams else topo.input_key(i, r.key)]
                on = f"GPU {r.gpu} of node {r.node}" if r.node else f"GPU {r.gpu}"
                role = f"step '{r.step}' replica {r.index} on {on}"
                where = Where(r.node, r.gpu, self.device_kind == "cuda")
                if r.kind == "decode":
                    ctx = self._ctx(r.name, r.gpu, 1, r.key)
                    resolution = tuple(cfg.model.resolution) if cfg.model.resolution else None
                    spec = DecodeSpec(r.step, r.index, self.served, resolution, self.sizes,
                                      cfg.frames_per_request, opts.decode_backend,
                                      self.warmup_video, step_cfg.pool_slots,
                                      in_q, out, self.free[r.name], FrameLimits.of(cfg),
                                      self._owned_streams(r.index))
                    L.start(r.name, role, decode_main, ctx, spec, where=where)
                else:
                    ctx = self._ctx(r.name, r.gpu, threads, r.key)
                    spec = RunnerSpec(r.step, step_cfg, cfg.model, r.index, self.sizes,
                                      rows, opts.batch, step_cfg.pool_slots, in_q, out,
                                      self.free[r.name], self._upstream_free(i, r.key))
                    L.start(r.name, role, runner_main, ctx, spec, where=where)
        client_ctx = self._ctx("client", None)
        first = topo.step_names[0]
        names = ({k: f"{first}.in[{k}]" for k in self.in_queues[0]} if self.workload.streams
                 else {None: f"{first}.in"})
        L.start("client", "the client", client_main, client_ctx, ClientSpec(
            self.requests, self.workload.warmup_offsets, self.workload.offsets,
            self.in_queues[0], names, opts.queue_size, opts.on_full, self.state.admit_closed))
        try:
            L.all_started()
        except LaunchError as exc:
            raise RunStopped(str(exc)) from None

    def _owned_streams(self, replica: int) -> dict[int, str]:
        """The streams a decode worker owns (stream id -> the file it plays), opened at start."""
        n = len(self.topo.replicas[0])
        return {s: self.videos[s % len(self.videos)] for s in range(self.workload.streams)
                if stream_owner(s, n) == replica}

    def _upstream_free(self, step_index: int, gpu) -> dict:
        """Free-slot queues of the producers a consumer of `step_index` (n_steps: the sink) reads."""
        return {r.name: self.free[r.name] for r in self.topo.producers_for(step_index, gpu)}

    # -- the run --------------------------------------------------------------------------------
    def execute(self) -> None:
        o = self.opts
        self.run_dir = create_run_dir(Path(o.logs_root), run_dir_name(
            self.cfg.name, o.mean_interval_ms, o.batch, o.videos, o.queue_size, o.per_gpu))
        self.requests_csv = RequestsCsv(self.run_dir / "requests.csv", self.topo.step_names)
        self.control = self.launcher.queue()
        self.stop = self.launcher.event()
        self.state.admit_closed = self.launcher.event()
        names = [SINK, "client"] + [r.name for step in self.topo.replicas for r in step]
        self.heartbeats = HeartbeatBoard(self.launcher.shared_floats(2 * len(names)), names,
                                         o.heartbeat_timeout_s, o.start_timeout_s)
        self.channel = ControlChannel(self.control, self.state, self.launcher, self.heartbeats)
        self._queues()
        self.signals = signals.install()
        try:
            if self.device_kind == "cuda" and not self.topo.named_nodes:
                # Before any child exists: what else is on these GPUs is someone else's work.
                self.monitor = GpuMonitor(self.topo.gpus())
                self.baseline = self.monitor.baseline()
            t_start = now()
            self._start_processes()
            write_process_table(self.run_dir, {
                name: (self.launcher.pid(name), self.launcher.roles[name], ctx.gpu)
                for name, ctx in self.children.items()})
            pools = self._handshake()
            self.start_up_s = now() - t_start
            self._release(pools)
            self._serve()
        except RunStopped as exc:
            self.state.error = self.state.error or str(exc)
        except KeyboardInterrupt:
            self.state.error = "interrupted (Ctrl-C / SIGTERM): stopped cleanly, logs written"
        finally:
            signals.hold(self.signals)  # until run() has written the logs
            self.stop.set()
            if self.monitor is not None:
                self.monitor.stop()
            self.channel.drain(timeout_s=0.5)

    def _handshake(self) -> dict:
        """Wait until every process is warmed up; a death or the time limit ends the run."""
        waiting = set(self.children) - {"client"}
        pools, deadline = {}, now() + self.opts.start_timeout_s
        bar = _bar(len(waiting), "warming up", self.opts.progress)
        late = lambda: self.channel.late("start-up (model build and warm-up)", waiting)
        while waiting:
            msg = self.channel.next(deadline, late)
            if isinstance(msg, Ready):
                if msg.name in waiting:  # the client says Ready too; the bar counts the others
                    bar.update(1)
                waiting.discard(msg.name)
                if msg.pool is not None:
                    pools[msg.name] = msg.pool
        bar.close()
        return pools

    def _release(self, pools: dict) -> None:
        """Hand each consumer the pools it reads from, wait until all opened them, then start the
        client's warm-ups (or, without any, the measured schedule)."""
        topo = self.topo
        expected = set()
        for i, replicas in enumerate(topo.replicas):
            for r in replicas:
                ups = topo.producers_for(i, r.key)
                self.children[r.name].setup.put(Start({u.name: pools[u.name] for u in ups}))
                expected.add(r.name)
        sink_ups = topo.producers_for(topo.n_steps, None)
        self.children[SINK].setup.put(Start({u.name: pools[u.name] for u in sink_ups}))
        expected.add(SINK)
        deadline = now() + ATTACH_TIMEOUT_S
        late = lambda: self.channel.late("opening the shared slot pools", expected)
        while expected:
            msg = self.channel.next(deadline, late)
            if isinstance(msg, Attached):
                expected.discard(msg.name)
        if self.monitor is not None:
            self.monitor.start()
        start = now() + 0.05
        self.children["client"].setup.put(Start(start))
        if self.opts.warmup == 0:
            self._start_measuring(start)

    def _start_measuring(self, t0: float) -> None:
        """Start the measured schedule's clock (the client waits for it)."""
        self.t0 = t0
        self.children["client"].setup.put(Measure(t0))
        for rid in self.unwritten:  # warm-ups, whose rows needed t0
            self._stream(rid)
        self.unwritten.clear()

    def _serve(self) -> None:
        self.bar = _bar(self.n_requests, "requests", self.opts.progress)
        state = self.state
        if self.t0 is None:
            # Every warm-up finishes before the measured schedule starts: measured requests
            # must not queue behind warm-up work (at -mi 0 all would be due at once).
            self._wait_for(lambda: state.warm_sent is not None
                           and all(r in state.finished for r in range(state.warm_sent)))
            self._start_measuring(now() + 0.05)
        self._wait_for(lambda: state.client_sent is not None
                       and len(state.finished) >= state.client_sent)
        self.bar.close()

    def _wait_for(self, done) -> None:
        """Take in messages until done(); stop when no request finishes for the stall limit."""
        finished, limit = self.state.finished, self.opts.stall_timeout_s
        last_done, last_progress = len(finished), now()
        while not done():
            self.channel.next(poll_s=0.2)
            if len(finished) != last_done:
                last_done, last_progress = len(finished), now()
            elif now() - last_progress > limit:
                raise RunStopped(f"no request finished for {limit:.0f} s; "
                                 f"stopping ({last_done} of {self.n_requests} finished)")

    def _final(self, rid: int) -> None:
        """Request `rid` has ended: count it, and put its row on disk at once."""
        if self.bar is not None:
            self.bar.update(1)
        if self.t0 is None:
            self.unwritten.append(rid)
        else:
            self._stream(rid)

    def _stream(self, rid: int) -> None:
        if self.requests_csv is not None:
            self.requests_csv.append(self.state.table.row(rid, self.t0))

    def pump(self) -> None:
        """While children exit: take in their last records, and empty the data queues so no
        child blocks on a full pipe at exit (what is left in them is unfinished anyway)."""
        if self.channel is not None:
            self.channel.drain(timeout_s=0.0)
        for queues in getattr(self, "in_queues", []):
            for q in queues.values():
                drain(q, limit=1000)
        for q in getattr(self, "free", {}).values():
            drain(q, limit=1000)

    # -- the end --------------------------------------------------------------------------------
    def finish(self, config_dict: dict, args_dict: dict) -> RunResult:
        state = self.state
        close_records(state.table, state.error, state.stop_reason)
        t0 = self.t0 if self.t0 is not None else now()
        samples = list(self.monitor.samples) if self.monitor is not None else []
        if self.requests_csv is not None:
            self.requests_csv.close()
            if self.requests_csv.error:
                state.notices.append(f"could not stream requests.csv: {self.requests_csv.error}")
        run_info = {
            "config": self.cfg.name, "t0": t0, "steps": self.topo.step_names,
            "device_kind": self.device_kind, "frame_sizes": [list(s) for s in self.sizes],
            **self.served.run_info(), "precision": self.cfg.model.precision,
            "mean_interval_ms": self.opts.mean_interval_ms, "batch": self.opts.batch,
            "warmup": self.opts.warmup, "requests": self.n_requests,
            "workload": self.workload.kind, "streams": self.workload.streams,
            "change_based": (config_to_dict(self.cfg)["model"]["change_based"]
                             if self.cfg.model.change_based is not None else None),
            "error": state.error, "stop_reason": state.stop_reason, "notices": state.notices,
            "nvml_baseline": self.baseline,
            "mps": self.mps,
            "launcher": self.launcher_name,
            "start_up_s": None if self.start_up_s is None else round(self.start_up_s, 3),
            # Processes on other hosts: how far their stamps may be off the main clock.
            "clock_error_s": max(self.clock_bounds.values(), default=0.0),
            "clock_bounds": self.clock_bounds,
            "gpu_processes": ({str(g): n for g, n in mps.gpu_processes(self.topo).items()}
                              if self.device_kind == "cuda" else None),
        }
        return write_results(self.run_dir, state.table, t0, run_info, samples, config_dict,
                             args_dict, state.notices, state.error)


def _bar(total: int, desc: str, enabled: bool):
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, file=sys.stderr)
