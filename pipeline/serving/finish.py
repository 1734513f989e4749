"""The end of a run: every request gets a final status, the reports become requests.csv's rows,
and the run folder is written with the report. A file that cannot be written costs that file
(RunResult.log_error), never the report.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.analysis.records import FINAL, Outcome, RecordTable
from pipeline.analysis.report import format_report, summarize
from pipeline.errors import LogsError
from pipeline.serving.runlog import environment_info, write_run


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


def close_records(table: RecordTable, error: str | None, stop_reason: str | None) -> None:
    """Give every request that has no final status one: dropped when nothing ever handled it
    (never admitted), else unfinished (the run stopped first)."""
    never = "never admitted: " + (stop_reason or error or "the run ended first")
    for rid, state in table.rows.items():
        if table.status(rid) in FINAL:
            continue
        if state.admission is None and not state.steps and state.outcome is None:
            table.update(rid, Outcome("dropped", never))
        else:
            table.update(rid, Outcome("unfinished",
                                      f"run stopped: {error or 'before it finished'}"))


def write_results(run_dir: Path, table: RecordTable, t0: float, run_info: dict, samples: list,
                  config_dict: dict, args_dict: dict, notices: list[str],
                  error: str | None) -> RunResult:
    """Rows relative to t0, the summary and the report; every log file of the run folder."""
    rows = [r.cells() for r in table.finish(t0)]
    summary = summarize(rows, table.step_names, run_info, samples)
    report = format_report(summary)
    log_error = None
    try:
        write_run(run_dir, config_dict=config_dict, args_dict=args_dict, env=environment_info(),
                  rows=rows, columns=table.columns(), nvml_samples=samples, summary=summary,
                  report_text=report, run_info=run_info)
    except LogsError as exc:  # the report is still printed; the command says what is lost
        log_error = str(exc)
    return RunResult(run_dir, summary, report, rows, error, notices, log_error)
