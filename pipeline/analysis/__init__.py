"""A run's numbers and what they are worth: per-request records and how their columns add up
(records, timeline), a run's summary, verdicts and report (statistics, summary, validity, report),
comparisons of runs (runs, tables, compare, plots), sweeps and capacity searches (sweep_folder,
sweep, capacity), and the estimate before a run (overload). Number formatting: formatting."""
