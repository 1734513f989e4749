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

from models.registry import RANDOM_WEIGHTS, served_model
from pipeline.analysis.records import SINK, RecordTable
from pipeline.clock import now
from pipeline.serving import mps
from pipeline.serving.frame_limits import FrameLimits
from pipeline.serving.launch import launcher_class
from pipeline.serving.plan import RunOptions, plan_run, survey_clips
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

    @property
    def exit_code(self) -> int:
        return 1 if self.error else 0


FINAL = ("ok", "error", "dropped")


class RunStopped(Exception):
    pass


def run(cfg, opts: RunOptions, args_for_log: dict | None = None) -> RunResult:
    from pipeline.config import config_to_dict, resolve_checkpoint, resolve_videos

    p = plan_run(cfg, opts)
    device_kind, notices, topo, use_mps, mps_reason = (p.device_kind, p.notices, p.topo,
                                                       p.use_mps, p.mps_reason)
    checkpoint = resolve_checkpoint(cfg)
    # The runners load the file validation found (next to the config first, or the shipped
    # weights), not the text; the run folder's config says which, or `random`.
    cfg = replace(cfg, model=replace(cfg.model, checkpoint=str(checkpoint) if checkpoint
                                     else RANDOM_WEIGHTS))
    served = served_model(cfg.model)
    if cfg.model.resolution is None and served.input_size is not None:
        # A model with a fixed input size (R(2+1)D: 112x112) gets every clip brought to it.
        cfg = replace(cfg, model=replace(cfg.model, resolution=tuple(served.input_size)))
    videos = resolve_videos(cfg, synthetic_root=opts.video_cache)
    clips = survey_clips(cfg, videos)
    if opts.mps == "on" and not use_mps:
        notices.append(f"--mps on has no effect: {mps_reason}")
    if checkpoint is None and "model" in topo.kinds:
        notices.append(served.random_weights_notice())
    if clips.refused:
        notices.append("clips that will fail their requests: " + "; ".join(clips.refused))
    for n in notices:
        print(f"notice: {n}", file=sys.stderr)
    run = _Run(cfg, opts, topo, device_kind, videos, clips, launcher_class(p.launcher)(), served)
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
    def __init__(self, cfg, opts, topo, device_kind, videos, clips, launcher, served):
        self.cfg, self.opts, self.topo = cfg, opts, topo
        self.served = served  # the model as a workload (models/base.py)
        self.device_kind = device_kind
        self.videos = [str(v) for v in videos]
        self.sizes = clips.sizes  # only clips within the frame limits size the pools
        self.warmup_video = clips.warmup_video
        self.launcher = launcher
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
        self.on_final = lambda: None
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
                           gpu, threads, affinity)
        self.children[name] = ctx
        return ctx

    def _start_processes(self) -> None:
        from pipeline.serving.workers.client import ClientSpec, client_main
        from pipeline.serving.workers.decode import DecodeSpec, decode_main
        from pipeline.serving.workers.runner import RunnerSpec, runner_main
        from pipeline.serving.workers.sink import SinkSpec, sink_main

        cfg, opts, topo, L = self.cfg, self.opts, self.topo, self.launcher
        rows = self.served.rows_per_request(cfg.frames_per_request)
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
            self.served, save_dir, opts.save_tensors, opts.check_outputs))
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
                    spec = DecodeSpec(r.step, r.index, self.served, resolution, self.sizes,
                                      cfg.frames_per_request, opts.decode_backend, self.warmup_video,
                                      step_cfg.pool_slots,
                                      in_q, out, self.free[r.name], FrameLimits.of(cfg))
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
        from pipeline.serving.runlog import create_run_dir, run_dir_name

        o = self.opts
        self.run_dir = create_run_dir(Path(o.logs_root), run_dir_name(
            self.cfg.name, o.mean_interval_ms, o.batch, o.videos, o.queue_size, o.per_gpu))
        self.control = self.launcher.queue()
        self.stop = self.launcher.event()
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
            self._write_process_table()
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

    def _write_process_table(self) -> None:
        """processes.json in the run folder: which pid is which replica (for operators and
        fault-injection tests)."""
        import json

        table = {name: {"pid": self.launcher.pid(name), "role": self.launcher.roles[name],
                        "gpu": ctx.gpu} for name, ctx in self.children.items()}
        table["main"] = {"pid": os.getpid(), "role": "the main process", "gpu": None}
        # Written whole and renamed into place: tools poll for this file and must never read it
        # half-written.
        tmp = self.run_dir / "processes.json.tmp"
        tmp.write_text(json.dumps(table, indent=2))
        tmp.replace(self.run_dir / "processes.json")

    def _handshake(self) -> dict:
        """Wait until every process is warmed up; a death or the time limit ends the run."""
        waiting = set(self.children) - {"client"}
        pools, deadline = {}, now() + self.opts.start_timeout_s
        bar = _bar(len(waiting), "warming up", self.opts.progress)
        while waiting:
            msg = self._next_message(deadline, "start-up (model build and warm-up)")
            if msg is None:
                continue
            if msg[0] == "ready":
                _, name, pool_bytes = msg
                waiting.discard(name)
                if pool_bytes is not None:
                    pools[name] = pool_bytes
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
                self.children[r.name].setup.put(("start", {u.name: pools[u.name] for u in ups}))
                expected.add(r.name)
        sink_ups = topo.producers_for(topo.n_steps, None)
        self.children[SINK].setup.put(("start", {u.name: pools[u.name] for u in sink_ups}))
        expected.add(SINK)
        deadline = now() + 120.0
        while expected:
            msg = self._next_message(deadline, "opening the shared slot pools")
            if msg is not None and msg[0] == "attached":
                expected.discard(msg[1])
        if self.monitor is not None:
            self.monitor.start()
        self.t0 = now() + 0.05
        self.children["client"].setup.put(("start", self.t0))

    def _serve(self) -> None:
        bar = _bar(self.n_requests, "requests", self.opts.progress)
        self.on_final = lambda: bar.update(1)
        last_done, last_progress = 0, now()
        while self.client_sent is None or len(self.finished) < self.client_sent:
            self._next_message(None, None, poll_s=0.2)
            if len(self.finished) != last_done:
                last_done, last_progress = len(self.finished), now()
            elif now() - last_progress > self.opts.stall_timeout_s:
                raise RunStopped(f"no request finished for {self.opts.stall_timeout_s:.0f} s; "
                                 f"stopping ({last_done} of {self.n_requests} finished)")
        bar.close()

    def _next_message(self, deadline, phase, poll_s: float = 0.1):
        """One control message (already applied to the records), or None after `poll_s`.
        Raises RunStopped when a child died, reported a fatal error, or `deadline` passed."""
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
        if deadline is not None and now() > deadline:
            raise RunStopped(f"{phase} did not finish within its time limit")
        return msg

    def _apply(self, msg) -> None:
        kind = msg[0]
        if kind == "rec":
            rid = msg[1]
            self.table.update(rid, msg[2])
            if rid not in self.finished and self.table.rows[rid].get("status") in FINAL:
                self.finished.add(rid)
                self.on_final()
        elif kind == "fatal":
            name, text = msg[1], msg[2]
            ctx = self.children.get(name)
            where = f" (GPU {ctx.gpu})" if ctx is not None and ctx.gpu is not None else ""
            self.error = self.error or f"process '{name}'{where} failed: {text.strip()}"
        elif kind == "overflow":
            if not self.admit_closed.is_set():
                self.stop_reason = msg[2]
                self.admit_closed.set()
        elif kind == "client_done":
            self.client_sent = msg[1]
            if msg[2]:
                self.stop_reason = self.stop_reason or msg[2]
        elif kind == "log":
            self.notices.append(f"{msg[1]}: {msg[2]}")

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
        from pipeline.serving.runlog import environment_info, write_run

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
            **self.served.run_info(), "precision": self.cfg.model.precision,
            "mean_interval_ms": self.opts.mean_interval_ms, "batch": self.opts.batch,
            "warmup": self.opts.warmup, "requests": self.n_requests,
            "error": self.error, "stop_reason": self.stop_reason, "notices": self.notices,
            "nvml_baseline": self.baseline,
            "mps": self.mps,
            "gpu_processes": ({str(g): n for g, n in mps.gpu_processes(self.topo).items()}
                              if self.device_kind == "cuda" else None),
        }
        summary = summarize(rows, self.topo.step_names, run_info, samples)
        report = format_report(summary)
        write_run(self.run_dir, config_dict=config_dict, args_dict=args_dict,
                  env=environment_info(), rows=rows, columns=self.table.columns(),
                  nvml_samples=samples, summary=summary, report_text=report, run_info=run_info)
        return RunResult(self.run_dir, summary, report, rows, self.error, self.notices)


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
