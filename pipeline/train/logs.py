"""train.csv, val.csv and their plots (PNG, matplotlib's Agg backend: no display needed).

A run resumed in the same output folder continues the CSV files: rows after the step it resumed
from (logged by a piece that stopped before its next save) are dropped first, so each file reads
as one run.
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

TRAIN_COLUMNS = ("step", "loss", "lr", "samples_per_s", "gpu_util_pct", "elapsed_s")
# With optim.ema the model columns are the moving average's and raw_* the trained weights' own.
VAL_COLUMNS = ("step", "clip", "frames", "model_psnr", "average_psnr", "nearest_psnr",
               "model_ssim", "average_ssim", "nearest_ssim", "raw_psnr", "raw_ssim")


class CsvLog:
    """Append-only CSV with a fixed header; each row is flushed at once (a killed run keeps it)."""

    def __init__(self, path: Path, columns):
        self.path, self.columns = Path(path), tuple(columns)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = open(self.path, "a", newline="")
        self._writer = csv.writer(self._file)
        if new:
            self._writer.writerow(self.columns)
            self._file.flush()

    def write(self, row: dict) -> None:
        self._writer.writerow([_fmt(row.get(c)) for c in self.columns])
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def read_rows(path: Path) -> list[dict]:
    return read_table(path)[1]


def read_table(path: Path) -> tuple[list[str], list[dict]]:
    """A CSV log's columns and rows; none of either for a missing file."""
    if not Path(path).is_file():
        return [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def continue_logs(out: Path, resume: Path | None, step: int) -> None:
    """Before a resumed run writes: take the logs from the checkpoint folder where the output
    folder has none, cut both files back to rows at or before `step`, and give them today's
    columns (a file written before a column was added keeps its rows, the new column empty)."""
    for name, columns in (("train.csv", TRAIN_COLUMNS), ("val.csv", VAL_COLUMNS)):
        target = out / name
        if not target.exists() and resume is not None and (Path(resume) / name).is_file():
            shutil.copyfile(Path(resume) / name, target)
        if target.exists():
            rows = read_rows(target)
            kept = [r for r in rows if r.get("step") and int(float(r["step"])) <= step]
            with open(target, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(columns)
                w.writerows([r.get(c) or "" for c in columns] for r in kept)


def _steps_in_thousands(ax) -> None:
    """Step ticks as 5k, 10k, ...: whole step numbers run into each other on narrow panels."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v else "0"))


def plot_train(csv_path: Path, png_path: Path) -> None:
    rows = read_rows(csv_path)
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = [int(r["step"]) for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    axes[0].plot(step, [float(r["loss"]) for r in rows])
    axes[0].set_ylabel("training loss (optim.loss)")
    axes[0].set_yscale("log")
    axes[1].plot(step, [float(r["lr"]) for r in rows])
    axes[1].set_ylabel("learning rate")
    axes[2].plot(step, [float(r["samples_per_s"]) for r in rows], label="samples/s")
    util = [(s, float(r["gpu_util_pct"])) for s, r in zip(step, rows) if r["gpu_util_pct"]]
    axes[2].set_ylabel("samples/s")
    if util:
        twin = axes[2].twinx()
        twin.plot(*zip(*util), color="tab:orange", alpha=0.6)
        twin.set_ylabel("GPU util %", color="tab:orange")
        twin.set_ylim(0, 105)
    axes[2].set_xlabel("step")
    for ax in axes:
        ax.grid(alpha=0.3)
        _steps_in_thousands(ax)
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)


def plot_val(csv_path: Path, png_path: Path) -> None:
    rows = read_rows(csv_path)
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = list(dict.fromkeys(r["clip"] for r in rows))
    fig, axes = plt.subplots(2, len(clips), figsize=(4 * len(clips), 6), squeeze=False)
    for j, clip in enumerate(clips):
        mine = [r for r in rows if r["clip"] == clip]
        step = [int(r["step"]) for r in mine]
        for i, metric in enumerate(("psnr", "ssim")):
            ax = axes[i][j]
            for method, style in (("model", "-o"), ("raw", "-x"), ("average", "--"), ("nearest", ":")):
                points = [(s, float(r[f"{method}_{metric}"])) for s, r in zip(step, mine)
                          if r.get(f"{method}_{metric}")]
                if points:  # raw: the trained weights next to their moving average (optim.ema)
                    ax.plot(*zip(*points), style, markersize=3,
                            label="model, not averaged" if method == "raw" else method)
            ax.set_title(f"{clip}: {metric.upper()}")
            ax.grid(alpha=0.3)
            ax.set_xlabel("step")
            _steps_in_thousands(ax)
        axes[0][j].legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)


def plot_compare(runs: list[tuple[str, Path]], png_path: Path) -> None:
    """Held-out PSNR against step of several runs (label, val.csv), one panel per clip and the
    mean, with averaging the neighbours as the baseline: recipes side by side at equal steps."""
    tables = [(label, read_rows(path)) for label, path in runs]
    tables = [(label, rows) for label, rows in tables if rows]
    if not tables:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = list(dict.fromkeys(r["clip"] for _, rows in tables for r in rows))
    fig, axes = plt.subplots(1, len(clips), figsize=(4.5 * len(clips), 3.8), squeeze=False)
    for ax, clip in zip(axes[0], clips):
        baseline = None
        for label, rows in tables:
            mine = [r for r in rows if r["clip"] == clip]
            if mine:
                ax.plot([int(r["step"]) for r in mine], [float(r["model_psnr"]) for r in mine],
                        "-o", markersize=3, label=label)
                baseline = float(mine[-1]["average_psnr"])
        if baseline is not None:
            ax.axhline(baseline, color="grey", linestyle="--", label="averaging")
        ax.set_title(f"{clip}: PSNR (dB)")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        _steps_in_thousands(ax)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)


def summary(out: Path) -> str:
    """A short table of a run: where training got to, its speed, and the last validation."""
    out = Path(out)
    train, val = read_rows(out / "train.csv"), read_rows(out / "val.csv")
    lines = [f"run {out}"]
    if train:
        last = train[-1]
        recent = train[-10:]
        sps = sum(float(r["samples_per_s"]) for r in recent) / len(recent)
        utils = [float(r["gpu_util_pct"]) for r in recent if r["gpu_util_pct"]]
        lines.append(f"  step {last['step']}  loss {float(last['loss']):.4f}  lr {float(last['lr']):.2e}  "
                     f"{sps:.1f} samples/s (last {len(recent)} rows)"
                     + (f"  GPU util {sum(utils) / len(utils):.0f}%" if utils else ""))
    if val:
        step = val[-1]["step"]
        lines.append(f"  validation at step {step}:")
        lines.append(f"  {'clip':14} {'PSNR model':>10} {'average':>8} {'nearest':>8}  "
                     f"{'SSIM model':>10} {'average':>8} {'nearest':>8}")
        last = [r for r in val if r["step"] == step]
        raw = all(r.get("raw_psnr") for r in last)
        if raw:
            lines[-1] += f"  {'not averaged':>12}"
        for r in last:
            lines.append(f"  {r['clip']:14} {float(r['model_psnr']):10.2f} {float(r['average_psnr']):8.2f} "
                         f"{float(r['nearest_psnr']):8.2f}  {float(r['model_ssim']):10.4f} "
                         f"{float(r['average_ssim']):8.4f} {float(r['nearest_ssim']):8.4f}"
                         + (f"  {float(r['raw_psnr']):12.2f}" if raw else ""))
    return "\n".join(lines)
