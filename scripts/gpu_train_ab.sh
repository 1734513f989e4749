#!/usr/bin/env bash
# Two training recipes side by side, from the same weights, for the same minutes, in one call:
# each on its own GPU when the host has two or more, else both on GPU 0 (each then runs at about
# half speed; the comparison is at equal steps, so that does not bias it). Validation rows of
# both are printed side by side; the better one (mean PSNR of the held-out clips at the last
# step both reached) is named in $WORK/ab/winner, with its arguments in $WORK/ab/winner.args, so
# that the next call on the same machine can continue it:
#
#   A_ARGS="--set optim.loss=l1" B_ARGS="--set optim.loss=l2" \
#     RESUME_DIR=weights/flavr-2x.safetensors MINUTES=7 bash scripts/gpu_train_ab.sh
#   W=/tmp/flavr-train/ab; RESUME_DIR=$W/$(cat $W/winner)/checkpoint \
#     TRAIN_ARGS="$(cat $W/winner.args) --set train.steps=40000" bash scripts/gpu_train.sh
#
# OUT gets gpu_train_ab.log and ab.tar (both runs' train.csv, val.csv, logs; ab.png plots them).
# Knobs: MINUTES (7), CONFIG (configs/train/flavr-2x.yaml), A_ARGS, B_ARGS, RESUME_DIR (weights or
# a checkpoint).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
WORK=${WORK:-/tmp/flavr-train}
AB=$WORK/ab
MINUTES=${MINUTES:-7}
CONFIG=${CONFIG:-configs/train/flavr-2x.yaml}
mkdir -p "$OUT" "$AB"
exec > >(tee -a "$OUT/gpu_train_ab.log") 2>&1
PY=$(command -v python || command -v python3)
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
echo "== $(date -u +%FT%TZ) $NGPU GPU(s); a: ${A_ARGS:-(config)}; b: ${B_ARGS:-(config)}"
RESUME_DIR= OUT=$AB/unpack STAGE=1 bash scripts/gpu_train.sh >/dev/null || { echo "error: unpacking the data failed"; exit 1; }

RESUME=()
[ -n "${RESUME_DIR:-}" ] && RESUME=(--resume "$RESUME_DIR")
pids=()
for name in a b; do
  args_var=${name^^}_ARGS
  gpu=0; [ "$NGPU" -ge 2 ] && [ $name = b ] && gpu=1
  echo "${!args_var:-}" > "$AB/$name.args"
  CUDA_VISIBLE_DEVICES=$gpu $PY -m pipeline.train -c "$CONFIG" --out "$AB/$name" \
    --max-minutes "$MINUTES" ${RESUME[@]+"${RESUME[@]}"} ${!args_var:-} > "$AB/$name.log" 2>&1 &
  pids+=($!)
done
RC=0
for p in "${pids[@]}"; do wait "$p" || RC=1; done

$PY - "$AB" <<'EOF'
import sys
from pathlib import Path
from pipeline.train.logs import read_rows
ab = Path(sys.argv[1])
rows = {n: {(int(r["step"]), r["clip"]): r for r in read_rows(ab / n / "val.csv")}
        for n in "ab" if (ab / n / "val.csv").exists()}
if len(rows) < 2:
    sys.exit("error: a run wrote no validation rows; see a.log and b.log")
steps = sorted({s for s, _ in rows["a"]} & {s for s, _ in rows["b"]})
clips = sorted({c for _, c in rows["a"]} - {"mean"}) + ["mean"]
print(f"{'step':>6} {'clip':<10} {'a dB':>7} {'b dB':>7} {'average':>8}  b - a")
for s in steps:
    for c in clips:
        a, b = rows["a"].get((s, c)), rows["b"].get((s, c))
        if a and b:
            pa, pb = float(a["model_psnr"]), float(b["model_psnr"])
            print(f"{s:>6} {c:<10} {pa:7.2f} {pb:7.2f} {float(a['average_psnr']):8.2f}  {pb - pa:+.2f}")
last = steps[-1]
win = max("ab", key=lambda n: float(rows[n][(last, "mean")]["model_psnr"]))
(ab / "winner").write_text(win + "\n")
(ab / "winner.args").write_text((ab / f"{win}.args").read_text())
print(f"winner at step {last}: {win} ({(ab / f'{win}.args').read_text().strip() or 'config'})")
EOF
$PY -m pipeline.train compare "$AB/ab.png" "a=$AB/a/val.csv" "b=$AB/b/val.csv" >/dev/null
tar -cf "$OUT/ab.tar" -C "$AB" a.log b.log a.args b.args ab.png a/train.csv a/val.csv b/train.csv b/val.csv 2>/dev/null
exit $RC
