#!/usr/bin/env bash
# The placement study of docs/results.md in one call (under ten minutes on 2 H200s): 720p FLAVR 2x,
# bf16, channels-last; whole / replicated (per-GPU and global queues) / split / split with a
# replicated decoder / decode-only split, each at -mi 50 and at saturation (-mi 0); then a sweep
# of two placements over three loads, two repeats each; then the comparison tables and plots.
#
#   bash scripts/placement_study.sh [OUT_DIR] [REQUESTS]   (default: logs/study-<time>, 60)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-logs/study-$(date +%y%m%d_%H%M%S)}
v=${2:-60}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
ngpu=$(python3 -c 'import torch; print(torch.cuda.device_count())')
placements="whole"
[ "$ngpu" -ge 2 ] && placements="whole replicated replicated-global split split-repdec decode-split"
for p in $placements; do
  for mi in 0 50; do
    start=$(date +%s)
    timeout 200 python3 benchmark.py -c "configs/study/$p.yaml" -mi "$mi" -v "$v" \
      --logs "$out/runs" --no-progress > "$out/$p-mi$mi.txt" 2>&1
    echo "$p -mi $mi: exit $? in $(( $(date +%s) - start )) s"
  done
done | tee "$out/runs.txt"
if [ "$ngpu" -ge 2 ]; then
  timeout 300 python3 -m pipeline.sweep -c configs/study/replicated.yaml -c configs/study/split.yaml \
    -mi 100,50,0 --repeats 2 -v "$v" --logs "$out/sweep" --name two-placements \
    > "$out/sweep.txt" 2>&1
  echo "sweep: exit $?" | tee -a "$out/runs.txt"
fi
python3 -m pipeline.compare "$out"/runs/* --out "$out/compare" > "$out/compare.txt" 2>&1
cat "$out/compare/compare.md" 2>/dev/null | head -60
