#!/usr/bin/env bash
# The GPU side of the fault handling: (1) kill -9 a GPU runner mid-run: the run must end within
# seconds naming it, write its logs, leave no process behind and give back the GPU memory;
# (2) a request too large for a runner's memory cap fails alone with an out-of-memory reason;
# (3) a GPU runner frozen with SIGSTOP is named once --heartbeat-timeout (10 s here) passes.
#
#   bash scripts/gpu_faults.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-logs/gpu-faults-$(date +%y%m%d_%H%M%S)}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
ngpu=$(python3 -c 'import torch; print(torch.cuda.device_count())')
cfg=configs/flavr-whole.yaml; victim=flavr
[ "$ngpu" -ge 2 ] && { cfg=configs/flavr-split.yaml; victim=decoder; }
cfg=${KILL_CONFIG:-$cfg}; victim=${KILL_STEP:-$victim}
mem() { nvidia-smi --query-gpu=index,memory.used --format=csv,noheader | tr '\n' ' '; }
echo "GPU memory before: $(mem)" | tee "$out/kill.txt"
python3 benchmark.py -c "$cfg" -mi 100 -v 3000 --logs "$out/kill" --no-progress >> "$out/kill.txt" 2>&1 &
bench=$!
for _ in $(seq 120); do table=$(ls "$out"/kill/*/processes.json 2>/dev/null | head -1); [ -n "$table" ] && break; sleep 0.5; done
sleep "${KILL_AFTER_S:-30}"  # warm-up, then requests flowing
pid=$(python3 -c "import json,sys; t=json.load(open('$table')); print(next(v['pid'] for k,v in t.items() if k.startswith('$victim[')))")
t0=$(date +%s.%N); kill -9 "$pid"; wait "$bench"; rc=$?; t1=$(date +%s.%N)
sleep 2
alive=$(python3 -c "import json,os; t=json.load(open('$table')); print([k for k,v in t.items() if os.path.exists(f'/proc/{v[\"pid\"]}')])")
{ echo "killed $victim (pid $pid); benchmark exit code $rc, $(python3 -c "print(round($t1-$t0,2))") s after the kill"
  echo "processes still alive: $alive"; echo "GPU memory after: $(mem)"
  grep -E "^error|ended early|requests +[0-9]" "$out/kill.txt"; } | tee -a "$out/kill.txt"

if [ -z "${SKIP_FREEZE:-}" ]; then
  python3 benchmark.py -c "$cfg" -mi 100 -v 3000 --heartbeat-timeout 10 --logs "$out/freeze" \
    --no-progress > "$out/freeze.txt" 2>&1 &
  bench=$!
  for _ in $(seq 120); do table=$(ls "$out"/freeze/*/processes.json 2>/dev/null | head -1); [ -n "$table" ] && break; sleep 0.5; done
  sleep "${KILL_AFTER_S:-30}"
  pid=$(python3 -c "import json; t=json.load(open('$table')); print(next(v['pid'] for k,v in t.items() if k.startswith('$victim[')))")
  t0=$(date +%s.%N); kill -STOP "$pid"; wait "$bench"; rc=$?; t1=$(date +%s.%N)
  { echo "stopped $victim (pid $pid); benchmark exit code $rc, $(python3 -c "print(round($t1-$t0,2))") s after SIGSTOP"
    grep -E "^error" "$out/freeze.txt"; echo "GPU memory after: $(mem)"; } | tee -a "$out/freeze.txt"
fi

[ -n "${SKIP_OOM:-}" ] && exit 0
mkdir -p videos/faults
python3 -m pipeline.media.synthetic videos/faults/small-a.mp4 --width 256 --height 256 --frames 8 --codec h264 --seed 1 > /dev/null
python3 -m pipeline.media.synthetic videos/faults/small-b.mp4 --width 256 --height 256 --frames 8 --codec h264 --seed 2 > /dev/null
python3 -m pipeline.media.synthetic videos/faults/zbig.mp4 --width 1920 --height 1080 --frames 8 --codec h264 --seed 3 > /dev/null
python3 benchmark.py -c configs/faults/oom.yaml -mi 100 -v 12 --warmup 0 --logs "$out/oom" --no-progress > "$out/oom.txt" 2>&1
echo "oom demo: exit $?" | tee -a "$out/oom.txt"
python3 - "$out" <<'PY' | tee -a "$out/oom.txt"
import glob, sys
from pipeline.analysis.records import read_csv
rows = read_csv(glob.glob(f"{sys.argv[1]}/oom/*/requests.csv")[0])
for r in rows:
    print(r["request_id"], r["video"].split("/")[-1], r["status"], (r["error"] or "")[:110])
PY
