#!/usr/bin/env bash
# The placement study of docs/results.md in one call (under ten minutes on 4 H200s): 720p FLAVR 2x,
# bf16, channels-last, 3 frames (2 windows) per request, two decode workers per GPU.
#   - the model alone on GPU 0 at 2 and 4 windows per call (the "N x model alone" reference);
#   - the whole model on one GPU at saturation (-mi 0, also with -b 2) and at -mi 50;
#   - 2 GPUs: a sweep of the replicated and split placements over the same two loads, two
#     repeats each; the other placements (replicated with -b 2 at saturation; global queues,
#     split with a replicated decoder, decode-only split at -mi 50);
#   - 4 GPUs (when there are 4): replicated and two split pairs at saturation, -mi 50 and -mi 15,
#     decoding on NVDEC; then again at saturation and -mi 15 decoding on the CPU (PyAV), because
#     NVDEC through DALI tops out at ~69 clips/s per host there (a decoder session per clip);
# then the comparison tables and plots from the logs. Runs use MPS where processes share a GPU
# (benchmark.py --mps auto).
#
#   bash scripts/placement_study.sh [OUT_DIR] [REQUESTS] [PARTS]
#   (default: logs/study-<time>, 100, "1gpu 2gpu 4gpu 4gpu-pyav"; PARTS picks sections)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-logs/study-$(date +%y%m%d_%H%M%S)}
v=${2:-100}
parts=" ${3:-1gpu 2gpu 4gpu 4gpu-pyav} "
mkdir -p "$out/runs"
export PYTHONUNBUFFERED=1
ngpu=$(python3 -c 'import torch; print(torch.cuda.device_count())')
bench() {  # config, mean interval, batch size, requests, extra flags...
  local start=$(date +%s) b=${3:-1} n=${4:-$v} c=$1 mi=$2
  shift 4 2>/dev/null || shift $#
  timeout 150 python3 benchmark.py -c "configs/study/$c.yaml" -mi "$mi" -b "$b" -v "$n" -qs 512 \
    --logs "$out/runs" --no-progress "$@" > "$out/$c-mi$mi-b$b${1:+-${*//[ -]/}}.txt" 2>&1
  echo "$c -mi $mi -b $b $*: exit $? in $(( $(date +%s) - start )) s"
}
part() { [[ $parts == *" $1 "* ]]; }
{
  if part 1gpu; then
    timeout 240 python3 benchmark.py --model-only --device cuda:0 --sizes 720x1280 --factor 2 \
      --batch 2,4 --modes fast --iters 30 --out "$out/model-alone.json" > "$out/model-alone.txt" 2>&1
    echo "model alone: exit $?"
    bench whole 0
    bench whole 50
    bench whole 0 2
  fi
  if [ "$ngpu" -ge 2 ] && part 2gpu; then
    timeout 330 python3 -m pipeline.analysis.sweep -c configs/study/replicated.yaml -c configs/study/split.yaml \
      -mi 50,0 --repeats 2 -v "$v" -qs 512 --logs "$out/runs" --name two-placements > "$out/sweep.txt" 2>&1
    echo "sweep replicated+split: exit $?"
    bench replicated 0 2
    for p in replicated-global split-repdec decode-split; do bench "$p" 50; done
  fi
  if [ "$ngpu" -ge 4 ] && part 4gpu; then
    for p in replicated-4gpu split-4gpu; do
      for mi in 0 50 15; do bench "$p" "$mi" 1 $((3 * v)); done
    done
  fi
  if [ "$ngpu" -ge 4 ] && part 4gpu-pyav; then
    for p in replicated-4gpu split-4gpu; do
      for mi in 0 15; do bench "$p" "$mi" 1 $((3 * v)) --decode-backend pyav; done
    done
  fi
} | tee "$out/runs.txt"
python3 -m pipeline.analysis.compare "$out"/runs/* --out "$out/compare" > "$out/compare.txt" 2>&1
head -40 "$out/compare/compare.md" 2>/dev/null
