#!/usr/bin/env bash
# A setting of the GPU path (an environment variable) measured against another value on the same
# GPUs, in one command, the two values alternated run by run (A, B, A, B) so that drift of a
# shared machine falls on both (times for the default two pairs):
#   phases   (under 2 min) where a clip request's decode time goes, phase by phase, one
#            PyNvVideoCodec worker on the shipped configs' clips (256x256 VP9, requests of 8);
#   serve    (under 4 min) one GPU's half of flavr-replicated at saturation (a decode worker and
#            a model replica on GPU 0, -mi 0 -v 1000): requests/s and decode's share of the
#            model's compute;
#   capacity (under 4 min) decode alone, 1, 2 and 4 workers on the GPU, 400 clips each;
#   split    (under 4 min; two GPUs) the shipped flavr-split at saturation (-mi 0 -v 1000):
#            requests/s, each GPU's busy share, the encoder's slot wait and decode's share;
#   startup  (under 2 min) flavr-replicated with both replicas of each step on GPU 0 (six
#            processes), 20 requests: the report's start-up, first process to all warmed up.
#
#   VAR=FLAVR_PYNVC_COPY A=driver B=dlpack bash scripts/decode_ab.sh OUT_DIR [phases|serve|capacity ...]
#   VAR=FLAVR_SLOT_RETURN A=copied B=computed bash scripts/decode_ab.sh OUT_DIR split
#   VAR=FLAVR_START_METHOD A=forkserver B=spawn bash scripts/decode_ab.sh OUT_DIR startup
#   RUN_ARGS="--set model.checkpoint=random" ... more arguments for the serving runs
#   PAIRS=4 ...                                 pairs of runs per part (2): serving varies by
#                                               run more than small changes move it
#
# Writes to OUT_DIR, per part and run i in 1..PAIRS: <part>-<value>-<i>.txt (each run's whole
# output), then summary.txt (printed last): the phases' means, requests/s and decode's share,
# clips/s per worker count, and for the split the GPUs' busy shares and the encoder's slot wait.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${VAR:?name the variable, e.g. VAR=FLAVR_PYNVC_COPY}" "${A:?first value}" "${B:?second value}"
out=${1:?usage: VAR=... A=... B=... bash scripts/decode_ab.sh OUT_DIR [phases|serve|capacity|split|startup ...]}
shift
parts=${*:-phases serve capacity}
for part in $parts; do
  case $part in phases|serve|capacity|split|startup) ;; *) echo "unknown part: $part" >&2; exit 2 ;; esac
done
if [[ " $parts " == *" split "* ]] && (( $(nvidia-smi -L | grep -c '^GPU') < 2 )); then
  echo "the split part needs two GPUs" >&2
  exit 2
fi
pairs=${PAIRS:-2}
if ! [[ $pairs =~ ^[1-9][0-9]*$ ]]; then
  echo "PAIRS=$pairs: expected a whole number from 1" >&2
  exit 2
fi
mkdir -p "$out"
export PYTHONUNBUFFERED=1
clips=$(mktemp -d /tmp/decode-ab.XXXXXX)
logs=$(mktemp -d /tmp/decode-ab-runs.XXXXXX)
trap 'rm -rf "$clips" "$logs"' EXIT
decode_only=(python benchmark.py --decode-only --gpus 0 --backends pynvvideocodec --frames 8
             --distinct 4 --stream-reads 1 --cache "$clips" --codecs vp9 --sizes 256x256
             --clip-frames 16)

for part in $parts; do
  for i in $(seq 1 "$pairs"); do
    for value in "$A" "$B"; do
      log="$out/$part-$value-$i.txt"
      echo "== $part: $VAR=$value, run $i" >&2
      case $part in
        phases)
          env "$VAR=$value" "${decode_only[@]}" --workers 1 --clips 96 --phases \
            --out "$logs/phases-$value-$i" >"$log" 2>&1 ;;
        serve)
          # shellcheck disable=SC2086 # RUN_ARGS is a list of arguments
          env "$VAR=$value" python benchmark.py -c configs/flavr-replicated.yaml \
            --set "pipeline[0].gpus=[0]" --set "pipeline[1].gpus=[0]" ${RUN_ARGS:-} \
            -mi 0 -v 1000 --warmup 16 -qs 1200 --logs "$logs" --no-progress >"$log" 2>&1 ;;
        capacity)
          env "$VAR=$value" "${decode_only[@]}" --workers 1,2,4 --clips 400 \
            --out "$logs/capacity-$value-$i" >"$log" 2>&1 ;;
        split)
          # shellcheck disable=SC2086
          env "$VAR=$value" python benchmark.py -c configs/flavr-split.yaml ${RUN_ARGS:-} \
            -mi 0 -v 1000 --warmup 16 -qs 1200 --logs "$logs" --no-progress >"$log" 2>&1 ;;
        startup)
          # shellcheck disable=SC2086
          env "$VAR=$value" python benchmark.py -c configs/flavr-replicated.yaml \
            --set "pipeline[0].gpus=[0,0]" --set "pipeline[1].gpus=[0,0]" ${RUN_ARGS:-} \
            -mi 0 -v 20 --warmup 4 --logs "$logs" --no-progress >"$log" 2>&1 ;;
      esac
      echo "   exit $?" >&2
    done
  done
done

{
  echo "$VAR: $A against $B on $(nvidia-smi --query-gpu=name --format=csv,noheader -i 0)"
  for part in $parts; do
    echo
    echo "[$part]"
    for f in "$out/$part"-*.txt; do
      name=$(basename "$f" .txt)
      case $part in
        phases)   line=$(grep -m1 -E '^ *pynvvideocodec +vp9 +256x256 +1 +mean' "$f") ;;
        serve)    line="$(grep -m1 '^throughput' "$f" | awk '{print $2, "req/s"}'); $(grep -m1 -o 'decode [0-9.]*%' "$f")" ;;
        capacity) line=$(grep -E '^ *pynvvideocodec +vp9 +256x256 +[0-9]+ +[0-9]' "$f" | awk '{printf "w%s %s clips/s  ", $4, $5}') ;;
        split)    line="$(grep -m1 '^throughput' "$f" | awk '{print $2, "req/s"}'); GPU busy $(
                    awk '/^GPUs \(NVML/ {on = 1; getline; next} on && NF == 0 {on = 0}
                         on {printf "%s%s%%", sep, $3; sep = " / "}' "$f"); encoder slot wait $(
                    awk '$1 == "encoder" && $2 == "queue" {on = 1} on && $1 == "slot" {print $4 " ms"; exit}' "$f"); $(
                    grep -m1 -o 'decode [0-9.]*%' "$f")" ;;
        startup)  line="start-up $(grep -m1 '^start-up' "$f" | awk '{print $2, "s"}'); $(
                    grep -m1 '^throughput' "$f" | awk '{print $2, "req/s"}')" ;;
      esac
      printf '  %-24s %s\n' "$name" "${line:-(no figures: see the log)}"
    done
  done
} | tee "$out/summary.txt"
