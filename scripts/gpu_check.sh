#!/usr/bin/env bash
# Re-verify the GPU path in a few minutes: the GPU-marked tests (NVDEC decode vs PyAV, CUDA IPC
# slots and inter-process events on one and two GPUs, the model on the GPU), then a short run of
# each shipped placement this machine can hold, at -mi 50 and at saturation (-mi 0), then the
# whole model at saturation with each GPU decoder forced by name (--decode-backend) that imports
# here: a forced decoder that can run must still be accepted, and serve every request.
#
#   bash scripts/gpu_check.sh [OUT_DIR]        (default: logs/gpu-check-<yymmdd_HHMMSS>)
#   RUN_ARGS="--set model.checkpoint=random"   more arguments for every run (weights not carried)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-logs/gpu-check-$(date +%y%m%d_%H%M%S)}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
ngpu=$(python3 -c 'import torch; print(torch.cuda.device_count())')
{ nvidia-smi -L
  python3 -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())'
  python3 -c 'import nvidia.dali as d, av; print("DALI", d.__version__, "PyAV", av.__version__)'
} 2>&1 | tee "$out/env.txt"

timeout 420 python3 -m pytest -q -p no:cacheprovider -m "gpu or gpu2" tests 2>&1 | tee "$out/gpu-tests.log"

configs="flavr-whole r2plus1d-whole"
[ "$ngpu" -ge 2 ] && configs="flavr-whole flavr-split flavr-replicated r2plus1d-whole r2plus1d-split"
for c in $configs; do
  for mi in 50 0; do
    timeout 240 python3 benchmark.py -c "configs/$c.yaml" -mi "$mi" -v 60 --logs "$out/logs" \
      --no-progress ${RUN_ARGS:-} > "$out/$c-mi$mi.txt" 2>&1
    echo "$c -mi $mi: exit $?"
  done
done | tee "$out/runs.txt"
for b in pynvvideocodec dali-gpu; do
  python3 -c "import sys; from pipeline.media.backends import backend_class as c
sys.exit(bool(c('$b').unavailable()))" || { echo "--decode-backend $b: no import, skipped"; continue; }
  timeout 240 python3 benchmark.py -c configs/flavr-whole.yaml -mi 0 -v 60 --decode-backend "$b" \
    --logs "$out/forced" --no-progress ${RUN_ARGS:-} > "$out/flavr-whole-$b.txt" 2>&1
  rc=$?
  counts=$(grep -m1 -o 'measured: [0-9]* ok, [0-9]* error' "$out/flavr-whole-$b.txt")
  echo "flavr-whole --decode-backend $b -mi 0: exit $rc, ${counts:-no request count}"
done | tee -a "$out/runs.txt"
python3 -m pipeline.analysis.compare "$out"/logs/* --out "$out/compare" --no-plots > /dev/null 2>&1 \
  && cat "$out/compare/compare.md"
