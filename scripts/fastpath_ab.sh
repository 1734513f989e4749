#!/usr/bin/env bash
# Side-by-side runs behind the fast-path figures of docs/results.md, on the 720p study configs:
# MPS off vs on (one GPU whole, two GPUs replicated, at saturation), and the split's hand-off with
# outputs published all at the end vs as soon as each is final (-mi 50 and saturation), and the
# whole model eager vs torch.compile'd inside the pipeline (one GPU, saturation).
#
#   bash scripts/fastpath_ab.sh [OUT_DIR] [REQUESTS] [PARTS]
#   (defaults: logs/fastpath-<time>, 100, "mps handoff compile"; mps and handoff need two GPUs)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-logs/fastpath-$(date +%y%m%d_%H%M%S)}
v=${2:-100}
parts=${3:-mps handoff compile}
mkdir -p "$out/runs"
export PYTHONUNBUFFERED=1
has() { [[ " $parts " == *" $1 "* ]]; }
run() {  # label, config, mean interval, extra flags...
  local label=$1 config=$2 mi=$3 start=$(date +%s) limit=150
  shift 3
  [[ "$*" == *compile* ]] && limit=420  # torch.compile adds a minute or two of start-up
  timeout $limit python3 benchmark.py -c "configs/study/$config.yaml" -mi "$mi" -v "$v" -qs 512 \
    --logs "$out/runs" --no-progress "$@" > "$out/$label.txt" 2>&1
  echo "$label ($config -mi $mi $*): exit $? in $(( $(date +%s) - start )) s"
}
{
  if has mps; then
    run whole-mps-off whole 0 --mps off
    run whole-mps-on whole 0 --mps on
    run replicated-mps-off replicated 0 --mps off
    run replicated-mps-on replicated 0 --mps on
  fi
  if has handoff; then
    for mi in 50 0; do
      run "split-mi$mi-at-end" split "$mi" --set model.early_handoff=false
      run "split-mi$mi-early" split "$mi"
    done
  fi
  if has compile; then
    run whole-eager whole 0
    run whole-compile whole 0 --set model.compile=true
  fi
} | tee -a "$out/runs.txt"
