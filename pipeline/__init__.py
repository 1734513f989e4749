"""The serving pipeline: one run's processes (serving/), video I/O (media/), the offline analysis of
runs (analysis/), the model benchmark (bench/), the config schema (config/), training (train/) and
the commands (cli/)."""
