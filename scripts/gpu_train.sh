#!/usr/bin/env bash
# Train FLAVR, or measure its training speed, on every GPU of this host in one call.
#
#   bash scripts/gpu_train.sh                         train MINUTES (8) from scratch
#   RESUME_DIR=/tmp/flavr-train/run/checkpoint bash scripts/gpu_train.sh
#                                                     continue on the same machine (full state)
#   RESUME_DIR=.trainckpt bash scripts/gpu_train.sh   continue from carried bf16 weights (+csv)
#   RESUME_DIR=weights/flavr-2x.safetensors bash scripts/gpu_train.sh
#                                                     continue from one exported weights file
#   PART=b bash scripts/gpu_train.sh                  no training: return the other weight shards
#   BENCH=1 bash scripts/gpu_train.sh                 the mixed-precision table (1 GPU, then 2)
#   STAGE=1 RESUME_DIR=.trainckpt bash scripts/gpu_train.sh
#                                                     only unpack and check what has been carried
#
# bf16 weights of FLAVR 2x (80 MiB) do not fit in one call's carry (64 MiB): on a fresh machine,
# carry the data part and some shards with STAGE=1, then the other shards with the training call
# (carried files stay on the machine between calls).
# Data: the dataset parts (scripts/fetch_training_data.sh) carried as .traindata/part-K.tar;
# each part is a standalone tar, unpacked here into .traindata/dataset.
# Everything else stays under WORK (/tmp/flavr-train); OUT gets at most 8 files:
#   gpu_train.log, train.png, val.png, ckpt/train.csv, ckpt/val.csv and as many bf16 weight
#   shards ckpt/model-KKKKK.safetensors as fit (PART=a); PART=b returns the rest. Put both calls'
#   ckpt/ files in one folder (e.g. .trainckpt/) to resume from it on a fresh machine.
# Knobs: MINUTES (8), CONFIG (configs/train/flavr-2x.yaml), NGPU (all), TRAIN_ARGS (more
#   arguments, e.g. "--set train.steps=20000"), BENCH_ARGS (e.g. "--batch-sizes 16").
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
WORK=${WORK:-/tmp/flavr-train}
RUN=$WORK/run
MINUTES=${MINUTES:-8}
CONFIG=${CONFIG:-configs/train/flavr-2x.yaml}
PART=${PART:-a}
MAX_FILES=8
mkdir -p "$OUT" "$WORK"
LOG=$OUT/gpu_train.log
exec > >(tee -a "$LOG") 2>&1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1  # never NVLink multicast
PY=$(command -v python || command -v python3)
NGPU=${NGPU:-$($PY -c "import torch; print(torch.cuda.device_count())")}
echo "== $(date -u +%FT%TZ) host $(hostname), $NGPU GPU(s), $($PY -c 'import torch; print("torch", torch.__version__)')"
nvidia-smi --query-gpu=index,name,memory.used,utilization.gpu --format=csv,noheader 2>/dev/null || true

unpack() {
  local parts=(.traindata/part-*.tar)
  [ -e "${parts[0]}" ] || { echo "error: no .traindata/part-*.tar carried"; return 1; }
  for p in "${parts[@]}"; do tar -xf "$p" -C .traindata || return 1; done
  $PY -m pipeline.train.fetch --verify .traindata/dataset
}

copy_back() {  # $1: a or b. Logs and plots first (part a), then weight shards while room is left.
  local shards=("$RUN"/weights/model-*.safetensors) n=0 first=0
  mkdir -p "$OUT/ckpt"
  if [ "$1" = a ]; then
    for f in train.png val.png; do [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/"; done
    for f in train.csv val.csv; do [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/ckpt/"; done
  else
    first=$(( MAX_FILES - 1 - $(ls "$RUN"/train.png "$RUN"/val.png "$RUN"/train.csv "$RUN"/val.csv 2>/dev/null | wc -l) ))
  fi
  local have
  have=$(find "$OUT" -type f | wc -l)
  for s in "${shards[@]:$first}"; do
    [ -f "$s" ] || continue
    [ $(( have + n )) -lt $MAX_FILES ] || break
    cp "$s" "$OUT/ckpt/"; n=$(( n + 1 ))
  done
  local left=$(( ${#shards[@]} - first - n ))
  echo "copied back $n of ${#shards[@]} weight shards (part $1); $left left$([ $left -gt 0 ] && echo ": call again with PART=b")"
}

if [ "${BENCH:-0}" = 1 ]; then
  unpack || exit 1
  B=$WORK/bench
  $PY -m pipeline.train.bench --out "$B" ${BENCH_ARGS:-} || echo "warning: the one-GPU bench failed"
  if [ "$NGPU" -ge 2 ] && [ -f "$B/bench-1gpu.json" ]; then
    read -r MODE BATCH < <($PY -c "import json; r=[x for x in json.load(open('$B/bench-1gpu.json'))['rows'] if 'error' not in x]; b=max(r, key=lambda x: x['samples_per_s']); print(b['mode'], b['batch'])")
    torchrun --standalone --nproc_per_node 2 -m pipeline.train.bench --out "$B" --modes "$MODE" \
      --batch-sizes "$BATCH" ${BENCH_ARGS:-} || echo "warning: the two-GPU bench failed"
  fi
  cp "$B"/bench-*.md "$B"/bench-*.json "$OUT/" 2>/dev/null
  for f in "$B"/bench-1gpu.md "$B"/bench-2gpu.md; do [ -f "$f" ] && { echo; cat "$f"; }; done
  [ -f "$B/bench-2gpu.json" ] && $PY -c "
import json; one=json.load(open('$B/bench-1gpu.json'))['rows']; two=json.load(open('$B/bench-2gpu.json'))['rows'][0]
ref=[r for r in one if r['mode']==two['mode'] and r['batch']==two['batch']][0]
print(f\"\\nscaling: {two['mode']} batch {two['batch']}/GPU: 1 GPU {ref['samples_per_s']:.1f}, 2 GPUs {two['samples_per_s']:.1f} samples/s = {two['samples_per_s']/ref['samples_per_s']:.2f}x\")"
  exit 0
fi

if [ "${STAGE:-0}" = 1 ]; then
  unpack; RC=$?
  if [ -n "${RESUME_DIR:-}" ]; then
    $PY -c "
import sys; from pipeline.train.checkpoint import load_sharded_metadata
from pathlib import Path; d = Path(sys.argv[1]); m = load_sharded_metadata(d, 'model')
have = sorted(p.name for p in d.glob('model-*.safetensors'))
print(f'{d}: {len(have)} of {m[\"shards\"]} weight shards (step {m[\"step\"]}, {m[\"dtype\"]}):', *have)" "$RESUME_DIR" || RC=1
  fi
  exit $RC
fi

if [ "$PART" = b ]; then
  copy_back b
  exit 0
fi

unpack || exit 1
RESUME=()
[ -n "${RESUME_DIR:-}" ] && RESUME=(--resume "$RESUME_DIR")
echo "== training on $NGPU GPU(s) for $MINUTES min${RESUME_DIR:+, resuming from $RESUME_DIR}"
if [ "$NGPU" -ge 2 ]; then
  LAUNCH=(torchrun --standalone --nproc_per_node "$NGPU" -m pipeline.train)
else
  LAUNCH=($PY -m pipeline.train)
fi
"${LAUNCH[@]}" -c "$CONFIG" --out "$RUN" --max-minutes "$MINUTES" ${RESUME[@]+"${RESUME[@]}"} ${TRAIN_ARGS:-}
RC=$?
copy_back a
echo
$PY -m pipeline.train summary "$RUN"
echo "exit status $RC; full checkpoint (for RESUME_DIR on this machine): $RUN/checkpoint"
exit $RC
