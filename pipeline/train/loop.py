"""The training loop: data on the device, one optimizer step after another, logs, validation,
checkpoints, and a clean stop (finish the step, save, exit 0) on SIGTERM, Ctrl-C or time limit.

Every rank runs this. Ranks agree on stopping at log points, where they already exchange the
loss (one small all-reduce, the loop's only host sync besides saving and validating). Only rank 0
writes files, validates and shows the progress bar.
"""
from __future__ import annotations

import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch._dynamo
from tqdm import tqdm

from pipeline.clock import now
from pipeline.errors import ConfigError
from pipeline.serving.gpu_monitor import GpuMonitor
from pipeline.train import checkpoint as ckpt
from pipeline.train import logs
from pipeline.train.config import TrainConfig, config_to_dict, describe
from pipeline.train.data import TrainData, ValData, check_dataset
from pipeline.train.distributed import Dist, all_reduce, cleanup, gather_objects, setup
from pipeline.train.ema import WeightAverage
from pipeline.train.evaluate import evaluate, summary_line
from pipeline.train.model import (
    build_train_model,
    make_optimizer,
    make_schedule,
    parallelize,
    set_backend_flags,
    train_step,
)


def stream_seed(seed: int, rank: int, step: int) -> int:
    """Seed of a rank's data stream: distinct per rank, and per step a weights-only resume
    starts from (so a continued run does not replay the first batches)."""
    return ((seed * 1_000_003 + rank) * 1_000_033 + step) % (2 ** 63)


class StopFlag:
    """SIGTERM and SIGINT ask for a clean stop; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.reason: str | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Trainer:
    def __init__(self, cfg: TrainConfig, out: Path, resume: Path | None = None,
                 stop_at: int | None = None):
        self.t0 = time.monotonic()
        self.cfg, self.out, self.resume = cfg, Path(out), resume
        self.stop_at = stop_at  # end this piece at that step; the schedule still spans train.steps
        self.d: Dist = setup(cfg.train.device)
        t = cfg.train
        self.log = print if self.d.main else (lambda *a, **k: None)
        set_backend_flags(t.precision)
        torch.manual_seed(t.seed + self.d.rank)
        np.random.seed((t.seed + self.d.rank) % 2 ** 32)
        random.seed(t.seed + self.d.rank)
        if t.compile:
            torch._dynamo.config.suppress_errors = True  # a compiler failure falls back to eager
        check_dataset(cfg)  # on every rank, before any of them loads data
        self.data = TrainData(cfg, self.d.device, stream_seed(t.seed, self.d.rank, 0), self.log)
        self.val = ValData(cfg, self.d.device, self.log) if self.d.main and cfg.data.val_clips else None
        self.flavr, net = build_train_model(cfg.model.factor, self.d.device, t.seed, t.channels_last,
                                            t.activation_checkpointing)
        o = cfg.optim
        self.optimizer = make_optimizer(self.flavr.parameters(), o.lr, (o.beta1, o.beta2), o.eps,
                                        o.weight_decay, self.d.device.type)
        # A piece resumed from weights only re-warms the rate from its step (and so do the
        # pieces that continue from its full checkpoints: the step is kept in state.json).
        self.rewarm_from = None if resume is None else ckpt.read_state(resume).get("rewarm_from")
        if resume is not None and not ckpt.is_full(resume):
            self.rewarm_from = ckpt.load_sharded_metadata(resume, "model").get("step")
            self.rewarm_from = int(self.rewarm_from) if self.rewarm_from is not None else 0
        self.scheduler = make_schedule(self.optimizer, o.warmup_steps, t.steps, o.final_lr_fraction,
                                       self.rewarm_from, o.rewarm_steps)
        self.step = 0
        if resume is not None:
            self.step, full = ckpt.load(resume, self.flavr, self.optimizer, self.scheduler,
                                        self.data, self.d.rank, self.log)
            if not full:
                self.data.reseed(stream_seed(t.seed, self.d.rank, self.step))
            self.log(f"resumed from {resume} at step {self.step} ({'full' if full else 'weights only'})")
        # The moving average lives where validation and saving happen (rank 0); a checkpoint
        # without one (or weights only) starts it from the weights just loaded.
        self.average = WeightAverage(self.flavr, o.ema) if o.ema > 0 and self.d.main else None
        if self.average is not None and resume is not None and ckpt.load_average(resume, self.average):
            self.log(f"moving average of the weights continued ({self.average.updates} updates)")
        # Every rank loaded the same weights; DDP also broadcasts rank 0's at construction.
        self.net = parallelize(net, self.d.device, self.d.world, t.compile)
        # Only now that data, model and checkpoint have loaded: a run that fails before it can
        # train leaves no output folder behind.
        if self.d.main:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
                (self.out / "config.yaml").write_text(describe(cfg))
            except OSError as exc:
                raise ConfigError("--out", f"{self.out} cannot be written "
                                           f"({exc.strerror or exc})") from None
        self.monitor, self._seen = None, 0
        if self.d.main and self.d.device.type == "cuda":
            self.monitor = GpuMonitor(range(self.d.local_world), interval_s=0.5)
            self.monitor.start()
        if self.d.main:
            logs.continue_logs(self.out, resume, self.step)
            self.train_csv = logs.CsvLog(self.out / "train.csv", logs.TRAIN_COLUMNS)
            self.val_csv = logs.CsvLog(self.out / "val.csv", logs.VAL_COLUMNS)
        affinity = f", CPU cores {self.d.cores[0]}-{self.d.cores[-1]} per rank 0" if self.d.cores else ""
        self.log(f"train: FLAVR {cfg.model.factor}x on {self.d.world} x {self.d.device.type}{affinity}, "
                 f"batch {t.batch_size}/rank, {t.precision}, channels_last={t.channels_last}, "
                 f"compile={t.compile}, activation_checkpointing={t.activation_checkpointing}")

    # ---- pieces ---------------------------------------------------------------------------------

    def minutes(self) -> float:
        return (time.monotonic() - self.t0) / 60

    def save(self) -> None:
        """A full checkpoint in out/checkpoint (collective: every rank sends its sampler state)."""
        states = gather_objects(ckpt.rank_state(self.data), self.d)
        if self.d.main:
            folder = ckpt.save(self.out / "checkpoint", self.flavr, self.optimizer, self.scheduler,
                               self.step, states, config_to_dict(self.cfg),
                               {"rewarm_from": self.rewarm_from}, self.average)
            self.log(f"saved {folder} at step {self.step}")

    def validate(self) -> None:
        if self.val is None or not self.val.clips:
            return
        size, precision = self.cfg.val.batch_size, self.cfg.train.precision
        rows = evaluate(self.inference_model(), self.val, size, precision)
        if self.average is not None:  # the trained weights themselves, next to their average
            for r, raw in zip(rows, evaluate(self.flavr, self.val, size, precision)):
                r["raw_psnr"], r["raw_ssim"] = raw["model_psnr"], raw["model_ssim"]
        for r in rows:
            self.val_csv.write({"step": self.step, **r})
        self.log(summary_line(self.step, rows))
        self.plots()

    def inference_model(self):
        """What is validated and exported: the moving average where there is one."""
        return self.flavr if self.average is None else self.average.module

    def plots(self) -> None:
        if self.d.main:
            logs.plot_train(self.out / "train.csv", self.out / "train.png")
            logs.plot_val(self.out / "val.csv", self.out / "val.png")

    def _util(self, since: float) -> float | None:
        """Mean NVML utilisation of this host's GPUs over the samples taken since `since`."""
        if self.monitor is None or not self.monitor.available:
            return None
        samples = self.monitor.samples
        fresh = samples[self._seen:]  # only the new ones: the list grows for the whole run
        self._seen = len(samples)
        recent = [s["util_pct"] for s in fresh if s["t"] >= since]
        return sum(recent) / len(recent) if recent else None

    # ---- the loop -------------------------------------------------------------------------------

    def run(self) -> int:
        cfg, t = self.cfg, self.cfg.train
        total, batch = t.steps, t.batch_size
        bar = tqdm(total=total, initial=self.step, disable=not self.d.main, dynamic_ncols=True,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0, desc="train")
        self.log = bar.write if self.d.main else self.log
        loss_sum = torch.zeros((), device=self.d.device)
        window_steps, window_t0 = 0, time.monotonic()
        util_since = now()
        reason = "done"
        with StopFlag() as flag:
            while self.step < total:
                inputs, targets = self.data.next_batch(batch)
                loss_sum += train_step(self.net, self.optimizer, inputs, targets, t.precision,
                                       cfg.optim.grad_clip, cfg.optim.loss)
                self.scheduler.step()
                if self.average is not None:
                    self.average.update()
                self.step += 1
                window_steps += 1
                busy = False
                at_stop = self.stop_at is not None and self.step >= self.stop_at
                if self.step % t.log_every == 0 or self.step == total or at_stop:
                    over = t.max_minutes > 0 and self.minutes() >= t.max_minutes
                    total_loss, stop = all_reduce(
                        [float(loss_sum), float(flag.reason is not None or over or at_stop)], self.d)
                    elapsed = time.monotonic() - window_t0
                    if self.d.main:
                        row = {"step": self.step, "loss": total_loss / (window_steps * self.d.world),
                               "lr": self.scheduler.get_last_lr()[0],
                               "samples_per_s": window_steps * batch * self.d.world / elapsed,
                               "gpu_util_pct": self._util(util_since),
                               "elapsed_s": time.monotonic() - self.t0}
                        self.train_csv.write(row)
                        bar.update(window_steps)
                        bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}",
                                        sps=f"{row['samples_per_s']:.1f}")
                    loss_sum.zero_()
                    window_steps, window_t0, util_since = 0, time.monotonic(), now()
                    if stop:
                        reason = (flag.reason or ("time limit" if over else None)
                                  or (f"stop at step {self.stop_at}" if at_stop else "another rank's signal"))
                        break
                if self.step % t.save_every == 0 and self.step < total:
                    self.save()
                    busy = True
                if self.step % cfg.val.every == 0 and self.step < total:
                    self.validate()
                    busy = True
                if busy:  # saving and validating are not training time
                    window_t0, util_since = time.monotonic(), now()
            bar.close()
            self.log = print if self.d.main else self.log
            self.log(f"stopping at step {self.step}: {reason} ({self.minutes():.1f} min)")
            self.save()
            if self.d.main:
                ckpt.save_weights(self.out / "weights", self.inference_model(), self.step, "bf16",
                                  average=self.average is not None)
            if not flag.reason:  # a signal asks for a quick exit: no validation
                self.validate()
            self.plots()
        return 0

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        if self.d.main:
            self.train_csv.close()
            self.val_csv.close()
        cleanup()


def train(cfg: TrainConfig, out, resume=None, stop_at: int | None = None) -> int:
    trainer = Trainer(cfg, Path(out), None if resume is None else Path(resume), stop_at)
    try:
        return trainer.run()
    finally:
        trainer.close()
