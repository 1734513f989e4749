"""Reading a run's records after the fact: per-request records, the report, comparisons of runs,
sweeps and capacity searches, and plots."""
