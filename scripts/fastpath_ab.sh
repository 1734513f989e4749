#!/usr/bin/env bash
# Side-by-side runs behind the fast-path figures of docs/results.md, on the 720p study configs:
# MPS off vs on (one GPU whole, two GPUs replicated, at saturation), and the split's hand-off with
# outputs published all at the end vs as soon as each is final (-mi 50 and saturation).
#
#   bash scripts/fastpath_ab.sh [OUT_DIR] [REQUESTS]   (default: logs/fastpath-<time>, 100)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-logs/fastpath-$(date +%y%m%d_%H%M%S)}
v=${2:-100}
mkdir -p "$out/runs"
export PYTHONUNBUFFERED=1
run() {  # label, config, mean interval, extra flags...
  local label=$1 config=$2 mi=$3 start=$(date +%s)
  shift 3
  timeout 150 python3 benchmark.py -c "configs/study/$config.yaml" -mi "$mi" -v "$v" -qs 512 \
    --logs "$out/runs" --no-progress "$@" > "$out/$label.txt" 2>&1
  echo "$label ($config -mi $mi $*): exit $? in $(( $(date +%s) - start )) s"
}
{
  run whole-mps-off whole 0 --mps off
  run whole-mps-on whole 0 --mps on
  run replicated-mps-off replicated 0 --mps off
  run replicated-mps-on replicated 0 --mps on
  for mi in 50 0; do
    run "split-mi$mi-at-end" split "$mi" --set model.early_handoff=false
    run "split-mi$mi-early" split "$mi"
  done
} | tee "$out/runs.txt"
