"""One benchmark run: start every process the config places, hand out the slot pools, release the
client, watch the children, account for every request, and write the logs and the report.

The main process never touches CUDA (children create their contexts first; NVML needs none), never
waits on anything without also watching its children, and always writes what it has.
"""
from __future__ import annotations

import os
import queue as queue_module
import signal
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from pipeline.analysis.records import SINK, RecordTable
from pipeline.clock import now
from pipeline.errors import LogsError
from pipeline.serving import mps
from pipeline.serving.heartbeat import HeartbeatBoard
from pipeline.serving.launch.local import LocalLauncher
from pipeline.serving.plan import RunOptions, frame_sizes, plan_run
from pipeline.serving.runlog import (
    RequestsCsv,
    check_writable,
    create_run_dir,
    environment_info,
    run_dir_name,
    write_process_table,
    write_run,
)
from pipeline.serving.transport.messages import (
    Attached,
    ClientDone,
    Fatal,
    Notice,
    Overflow,
    Ready,
    Record,
    Start,
)
from pipeline.serving.transport.queues import Output
from pipeline.serving.workers.child import ChildContext


@dataclass
class RunResult:
    run_dir: Path | None
    summary: dict
    report: str
    rows: list[dict]
    error: str | None = None
    notices: list[str] = field(default_factory=list)
    log_error: str | None = None  # what of the logs could not be written (the report still can)

    @property
    def exit_code(self) -> int:
        return 1 if self.error or self.log_error else 0


FINAL = ("ok", "error", "dropped")


class RunStopped(Exception):
    pass


def run(cfg, opts: RunOptions, args_for_log: dict | None = None) -> RunResult:
    from pipeline.config import config_to_dict, resolve_checkpoint, resolve_videos

    p = plan_run(cfg, opts.device, opts.per_gpu, opts.mps)
    device_kind, notices, topo, use_mps, mps_reason = (p.device_kind, p.notices, p.topo,
                                                       p.use_mps, p.mps_reason)
    notices += check_writable(opts.logs_root)  # LogsError before anything starts
    checkpoint = resolve_checkpoint(cfg)
    if checkpoint is not None:
        # The runners load the file validation found (next to the config first), not the text.
        cfg = replace(cfg, model=replace(cfg.model, checkpoint=str(checkpoint)))
    videos = resolve_videos(cfg, synthetic_root=opts.video_cache)
    sizes = frame_sizes(cfg, videos)
    if opts.mps == "on" and not use_mps:
        notices.append(f"--mps on has no effect: {mps_reason}")
    if cfg.model.checkpoint is None and "model" in topo.kinds:
        notices.append("no checkpoint: FLAVR runs with random weights, so timings are real but "
                       "the interpolated frames are not meaningful (set model.checkpoint)")
    for n in notices:
        print(f"notice: {n}", file=sys.stderr)
    run = _Run(cfg, opts, topo, device_kind, videos, sizes)
    run.notices = notices
    try:
        # The daemon outlives every child: started before the first, stopped after the last.
        with mps.for_run(use_mps, mps_reason, hide=mps.hides(opts.mps, device_kind)) as mps_state:
            run.mps = mps_state.text
            try:
                run.execute()
            finally:
                forced = run.launcher.stop(grace_s=3.0, pump=run.pump)
                if forced:
                    run.notices.append("had to terminate: " + ", ".join(forced))
        run.notices += mps_state.notices
        return run.finish(config_to_dict(cfg), args_for_log or asdict(opts))
    finally:
        _restore_signal_handlers(run.signals)


class _Run:
    def __init__(self, cfg, opts, topo, device_kind, videos, sizes):
        self.cfg, self.opts, self.topo = cfg, opts, topo
        self.device_kind = device_kind
        self.videos = [str(v) for v in videos]
        self.sizes = sizes
        self.launcher = LocalLauncher()
        self.table = RecordTable(topo.step_names)
        self.error: str | None = None
        self.stop_reason: str | None = None
        self.notices: list[str] = []
        self.n_requests = opts.warmup + opts.videos
        self.client_sent: int | None = None
        self.t0: float | None = None
        self.monitor = None
        self.baseline = None  # NVML's view of the GPUs before any child started
        self.children: dict[str, ChildContext] = {}
        self.finished: set[int] = set()  # requests with a final status
        self.signals = None  # the handlers to restore once the logs are written
        self.mps = "off"  # what the run did about MPS (mps.MpsState.text)
        self.bar = None  # progress of the requests, while serving
        self.requests_csv = None  # requests.csv, streamed as requests end (runlog.RequestsCsv)
        self.affinity: dict[int, list[int] | None] = {}  # GPU -> the cores near it

    # -- wiring ---------------------------------------------------------------------------------
    def _queues(self):
        L, topo, qs = self.launcher, self.topo, self.opts.queue_size
        self.in_queues = [{k: L.queue(qs) for k in topo.input_keys(i)}
                          for i in range(topo.n_steps + 1)]
        self.free = {r.name: L.queue() for step in topo.replicas for r in step}

    def _ctx(self, name: str, gpu: int | None, threads: int = 1) -> ChildContext:
        from pipeline.serving.gpu_monitor import cpu_affinity_for_gpu

        affinity = None
        if self.device_kind == "cuda" and gpu is not None:
            if gpu not in self.affinity:  # one NVML query per GPU, not per process on it
                self.affinity[gpu] = cpu_affinity_for_gpu(gpu)
            affinity = self.affinity[gpu]
        ctx = ChildContext(name, self.control, self.launcher.queue(), self.stop, self.device_kind,
                           gpu, threads, affinity, self.heartbeats.heart(name))
        self.children[name] = ctx
        return ctx

    def _start_processes(self) -> None:
        from pipeline.serving.workers.client import ClientSpec, client_main
        from pipeline.serving.workers.decode import DecodeSpec, decode_main
        from pipeline.serving.workers.runner import RunnerSpec, runner_main
        from pipeline.serving.workers.sink import SinkSpec, sink_main

        cfg, opts, topo, L = self.cfg, self.opts, self.topo, self.launcher
        rows = cfg.frames_per_request - 1
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
            cfg.model.factor, save_dir, opts.save_tensors, opts.check_outputs))
        for i, replicas in enumerate(topo.replicas):
            step_cfg = cfg.steps[i]
            out = Output(self.in_queues[i + 1], topo.queue_names(i + 1),
                         topo.input_per_gpu[i + 1], opts.queue_size, opts.on_full)
            for r in replicas:
                in_q = self.in_queues[i][topo.input_key(i, r.gpu)]
                role = f"step '{r.step}' replica {r.index} on GPU {r.gpu}"
                if r.kind == "decode":
                    ctx = self._ctx(r.name, r.gpu, 1)
                    resolution = tuple(cfg.model.resolution) if cfg.model.resolution else None
                    spec = DecodeSpec(r.step, r.index, resolution, self.sizes,
                                      cfg.frames_per_request, opts.decode_backend, self.videos[0],
                                      step_cfg.pool_slots,
                                      in_q, out, self.free[r.name])
                    L.start(r.name, role, decode_main, ctx, spec)
                else:
                    ctx = self._ctx(r.name, r.gpu, threads)
                    spec = RunnerSpec(r.step, step_cfg, cfg.model, r.index, self.sizes,
                                      rows, opts.batch, step_cfg.pool_slots, in_q, out,
                                      self.free[r.name], self._upstream_free(i, r.gpu))
                    L.start(r.name, role, runner_main, ctx, spec)
        from pipeline.serving.loadgen import poisson_offsets

        offsets = poisson_offsets(self.n_requests, opts.mean_interval_ms, opts.seed)
        requests = [(i, self.videos[i % len(self.videos)], cfg.frames_per_request, i < opts.warmup)
                    for i in range(self.n_requests)]
        client_ctx = self._ctx("client", None)
        first = topo.step_names[0]
        L.start("client", "the client", client_main, client_ctx, ClientSpec(
            requests, list(offsets), self.in_queues[0][None], f"{first}.in", opts.queue_size,
            opts.on_full, self.admit_closed))

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
        names = [SINK, "client"] + [r.name for step in self.topo.replicas for r in step]
        self.heartbeats = HeartbeatBoard(self.launcher.shared_floats(2 * len(names)), names,
                                         o.heartbeat_timeout_s, o.start_timeout_s)
        self.admit_closed = self.launcher.event()
        self._queues()
        self.signals = _install_signal_handlers()
        try:
            if self.device_kind == "cuda":
                from pipeline.serving.gpu_monitor import GpuMonitor

                # Before any child exists: what else is on these GPUs is someone else's work.
                self.monitor = GpuMonitor(self.topo.gpus())
                self.baseline = self.monitor.baseline()
            self._start_processes()
            write_process_table(self.run_dir, {
                name: (self.launcher.pid(name), self.launcher.roles[name], ctx.gpu)
                for name, ctx in self.children.items()})
            pools = self._handshake()
            self._release(pools)
            self._serve()
        except RunStopped as exc:
            self.error = self.error or str(exc)
        except KeyboardInterrupt:
            self.error = "interrupted (Ctrl-C / SIGTERM): stopped cleanly, logs written"
        finally:
            _hold_signals(self.signals)  # until run() has written the logs
            self.stop.set()
            if self.monitor is not None:
                self.monitor.stop()
            self._drain_control(timeout_s=0.5)

    def _handshake(self) -> dict:
        """Wait until every process is warmed up; a death or the time limit ends the run."""
        waiting = set(self.children) - {"client"}
        pools, deadline = {}, now() + self.opts.start_timeout_s
        bar = _bar(len(waiting), "warming up", self.opts.progress)
        while waiting:
            msg = self._next_message(deadline, lambda: self._late("start-up (model build and "
                                                                  "warm-up)", waiting))
            if isinstance(msg, Ready):
                waiting.discard(msg.name)
                if msg.pool is not None:
                    pools[msg.name] = msg.pool
                bar.update(1)
        bar.close()
        return pools

    def _release(self, pools: dict) -> None:
        """Hand each consumer the pools it reads from, wait until all opened them, start the clock."""
        topo = self.topo
        expected = set()
        for i, replicas in enumerate(topo.replicas):
            for r in replicas:
                ups = topo.producers_for(i, r.gpu)
                self.children[r.name].setup.put(Start({u.name: pools[u.name] for u in ups}))
                expected.add(r.name)
        sink_ups = topo.producers_for(topo.n_steps, None)
        self.children[SINK].setup.put(Start({u.name: pools[u.name] for u in sink_ups}))
        expected.add(SINK)
        deadline = now() + 120.0
        while expected:
            msg = self._next_message(deadline, lambda: self._late("opening the shared slot pools",
                                                                  expected))
            if isinstance(msg, Attached):
                expected.discard(msg.name)
        if self.monitor is not None:
            self.monitor.start()
        self.t0 = now() + 0.05
        self.children["client"].setup.put(Start(self.t0))

    def _serve(self) -> None:
        bar = self.bar = _bar(self.n_requests, "requests", self.opts.progress)
        last_done, last_progress = 0, now()
        while self.client_sent is None or len(self.finished) < self.client_sent:
            self._next_message(None, None, poll_s=0.2)
            if len(self.finished) != last_done:
                last_done, last_progress = len(self.finished), now()
            elif now() - last_progress > self.opts.stall_timeout_s:
                raise RunStopped(f"no request finished for {self.opts.stall_timeout_s:.0f} s; "
                                 f"stopping ({last_done} of {self.n_requests} finished)")
        bar.close()

    def _next_message(self, deadline, late, poll_s: float = 0.1):
        """One control message (already applied to the records), or None after `poll_s`.
        Raises RunStopped when a child died, reported a fatal error, fell silent past its
        heartbeat limit, or `deadline` passed (`late()` says what was not done by then)."""
        try:
            msg = self.control.get(timeout=poll_s)
        except queue_module.Empty:
            msg = None
        if msg is not None:
            self._apply(msg)
        dead = [d for d in self.launcher.dead() if d[0] != "client" or d[2] != 0]
        if dead:
            self._drain_control(timeout_s=0.3)  # its last words, if any, name the cause
            name, role, code = dead[0]
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            raise RunStopped(self.error or f"process '{name}' ({role}) {how}")
        silent = self.heartbeats.overdue()
        if silent:
            name, seconds = silent[0]
            self.error = self.error or (
                f"process '{name}' ({self.launcher.roles[name]}) stopped responding: no "
                f"heartbeat for {seconds:.1f} s (limit {self.heartbeats.limit_s:g} s, "
                f"heartbeat_timeout_s); it is stopped or stuck, e.g. in a GPU or decoder call")
            self.launcher.kill(name)  # it cannot leave by itself; the others get their grace
            raise RunStopped(self.error)
        if deadline is not None and now() > deadline:
            raise RunStopped(late())
        return msg

    def _final(self, rid: int) -> None:
        """Request `rid` has ended: count it, and put its row on disk at once."""
        if self.bar is not None:
            self.bar.update(1)
        if self.requests_csv is not None:
            self.requests_csv.append(self.table.rows[rid], self.t0 or 0.0)

    def _late(self, phase: str, waiting) -> str:
        """What ran out of time, and for whom it was still waiting."""
        return (f"{phase} did not finish within its time limit; still waiting for "
                + ", ".join(f"'{n}' ({self.launcher.roles[n]})" for n in sorted(waiting)))

    def _apply(self, msg) -> None:
        match msg:
            case Record(rid, fields):
                self.table.update(rid, fields)
                if rid not in self.finished and self.table.rows[rid].get("status") in FINAL:
                    self.finished.add(rid)
                    self._final(rid)
            case Fatal(name, text):
                ctx = self.children.get(name)
                where = f" (GPU {ctx.gpu})" if ctx is not None and ctx.gpu is not None else ""
                self.error = self.error or f"process '{name}'{where} failed: {text.strip()}"
            case Overflow(_, text):
                if not self.admit_closed.is_set():
                    self.stop_reason = text
                    self.admit_closed.set()
            case ClientDone(sent, reason):
                self.client_sent = sent
                if reason:
                    self.stop_reason = self.stop_reason or reason
            case Notice(name, text):
                self.notices.append(f"{name}: {text}")
            case Ready() | Attached():
                pass  # read by the handshake that waits for them
            case _:
                raise TypeError(f"unknown control message {msg!r}")

    def pump(self) -> None:
        """While children exit: take in their last records, and empty the data queues so no
        child blocks on a full pipe at exit (what is left in them is unfinished anyway)."""
        self._drain_control(timeout_s=0.0)
        from pipeline.serving.transport.queues import drain

        for queues in getattr(self, "in_queues", []):
            for q in queues.values():
                drain(q, limit=1000)
        for q in getattr(self, "free", {}).values():
            drain(q, limit=1000)

    def _drain_control(self, timeout_s: float) -> None:
        end = now() + timeout_s
        while True:
            try:
                self._apply(self.control.get(timeout=0.02) if timeout_s else self.control.get_nowait())
            except (queue_module.Empty, OSError, EOFError, ValueError):
                if now() >= end:
                    break

    # -- the end --------------------------------------------------------------------------------
    def finish(self, config_dict: dict, args_dict: dict) -> RunResult:
        from pipeline.analysis.report import format_report, summarize

        never = "never admitted: " + (self.stop_reason or self.error or "the run ended first")
        for rid in range(self.n_requests):
            row = self.table.rows.get(rid)
            if row is None or ("issued_s" not in row and row.get("status") is None):
                self.table.update(rid, {"status": "dropped", "error": never,
                                        "video": self.videos[rid % len(self.videos)],
                                        "warmup": int(rid < self.opts.warmup)})
            elif row.get("status") not in FINAL:
                self.table.update(rid, {"status": "unfinished",
                                        "error": f"run stopped: {self.error or 'before it finished'}"})
        t0 = self.t0 if self.t0 is not None else now()
        rows = self.table.finish(t0)
        samples = []
        if self.monitor is not None:
            samples = list(self.monitor.samples)
        run_info = {
            "config": self.cfg.name, "t0": t0, "steps": self.topo.step_names,
            "device_kind": self.device_kind, "frame_sizes": [list(s) for s in self.sizes],
            "factor": self.cfg.model.factor, "precision": self.cfg.model.precision,
            "mean_interval_ms": self.opts.mean_interval_ms, "batch": self.opts.batch,
            "warmup": self.opts.warmup, "requests": self.n_requests,
            "error": self.error, "stop_reason": self.stop_reason, "notices": self.notices,
            "nvml_baseline": self.baseline,
            "mps": self.mps,
            "gpu_processes": ({str(g): n for g, n in mps.gpu_processes(self.topo).items()}
                              if self.device_kind == "cuda" else None),
        }
        if self.requests_csv is not None:
            self.requests_csv.close()
            if self.requests_csv.error:
                self.notices.append(f"could not stream requests.csv: {self.requests_csv.error}")
        summary = summarize(rows, self.topo.step_names, run_info, samples)
        report = format_report(summary)
        log_error = None
        try:
            write_run(self.run_dir, config_dict=config_dict, args_dict=args_dict,
                      env=environment_info(), rows=rows, columns=self.table.columns(),
                      nvml_samples=samples, summary=summary, report_text=report,
                      run_info=run_info)
        except LogsError as exc:  # the report is still printed; the command says what is lost
            log_error = str(exc)
        return RunResult(self.run_dir, summary, report, rows, self.error, self.notices, log_error)


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, file=sys.stderr)


def _install_signal_handlers() -> dict | None:
    """SIGTERM behaves like Ctrl-C: the same clean stop, logs still written. Returns the
    handlers to restore (None off the main thread, where signals cannot be handled)."""
    def on_term(signum, frame):
        raise KeyboardInterrupt
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        return None
    return previous


def _hold_signals(previous: dict | None) -> None:
    """While the run stops and writes its logs (seconds: the children get a grace period, then
    are terminated), Ctrl-C and SIGTERM only say so: a second Ctrl-C must not lose the logs."""
    if previous is None:
        return

    def on_signal(signum, frame):
        # os.write, not print: a handler that writes to a stream the main code is writing to
        # would raise.
        os.write(2, b"\nstopping: writing the logs, a few seconds\n")
    for s in previous:
        signal.signal(s, on_signal)


def _restore_signal_handlers(previous: dict | None) -> None:
    if previous is not None:
        for s, handler in previous.items():
            if handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(s, handler)
