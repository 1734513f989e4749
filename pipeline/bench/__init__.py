"""The model benchmark (benchmark.py --model-only): a registered model alone on one device.
model_bench.py is the command; workload, timing, measure, accuracy, profile and render its parts."""
