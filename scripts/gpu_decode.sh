#!/usr/bin/env bash
# Decode on GPUs, in parts that each fit one command of at most 10 minutes on two H200s (run
# decode and serve on one machine, in order; split, phases and capacity stand alone):
#   decode   the GPU decode correctness tests of every GPU backend (2 min at most), then the
#            decode-only benchmark on all GPUs (7 min at most) in two runs over the same clips:
#            the NVDEC decoders (PyNvVideoCodec, DALI) over H.264, HEVC, VP9 and AV1, 256x256 and
#            1280x720, 1, 2 and 4 workers per GPU; then the CPU references (PyAV, DALI's CPU
#            decoder) at 1 and 2 workers per GPU (on two H200s the whole grid at 1, 2 and 4 did
#            not fit in 260 s);
#   serve    the model alone at 720p (8 windows a call), 720p camera streams at saturation on
#            one GPU (whole) and on two (replicated), and the shipped 256x256 configs
#            (flavr-split, flavr-replicated) at saturation with each decoder (DALI NVDEC,
#            PyNvVideoCodec NVDEC, PyAV on the CPU);
#            on a one-GPU host: the streams on one GPU, and one GPU's half of flavr-replicated;
#   split    (under 5 min) flavr-split with PyNvVideoCodec, its decode next to the encoder (as
#            shipped), next to the decoder step, and on both GPUs (configs.txt);
#   phases   (under 2 min) where a clip request's decode time goes, phase by phase (decode-only
#            --phases: probe, set-up, decode, copy, colour, the worker's rows into a slot), for
#            PyNvVideoCodec and DALI on NVDEC, one worker per GPU on all GPUs: the shipped
#            configs' clips (256x256 VP9, 16 frames, requests of 8), then short 720p H.264 clips
#            (8 frames); phase timing synchronises the device at every phase boundary;
#   capacity (under 5 min) decode alone of short 720p H.264 clips (8 frames) with
#            PyNvVideoCodec, 1, 2 and 4 workers per GPU on all GPUs: clips/s in all and per GPU
#            against the target of 207 clips/s on two GPUs;
#   all      every part, in that order (the default; more than one 10-minute command).
#
#   bash scripts/gpu_decode.sh [OUT_DIR] [decode|serve|split|phases|capacity|all]
#                                               (OUT_DIR: $OUT, else logs/gpu-decode-<time>)
#   RUN_ARGS="--set model.checkpoint=random" ... more arguments for every serving run (serve,
#                                               split), e.g. when the weights are not carried
#
# Wheels: nvidia-dali-cuda130, av (PyAV), pynvvideocodec 2.2.x (cp312 manylinux_2_28: it declares
# no dependencies); put the .whl files in .wheels/ (carried with the repo) and they are installed
# offline where missing. Stream footage: .cache/streams/*-720p.mp4 from scripts/stream_clips.sh
# (carry them); without them synthetic 1280x720 H.264 streams stand in, said so in summary.txt.
# Writes to OUT_DIR: env.txt, and per part decode: gpu-tests.log, decode.csv (the rows of both
# runs, each run's rows written as its cells finish), decode-gpu.json, decode-cpu.json and the
# runs' output decode-only-gpu.txt, decode-only-cpu.txt; serve: model-alone.txt,
# streams-1gpu.txt, streams-2gpu.txt, configs.txt (one line per run); phases: phases.csv (the
# rows of both runs), phases-256.json, phases-720.json and the runs' output phases-256.txt,
# phases-720.txt; capacity: capacity.csv, capacity.json, capacity.txt; then summary.txt (the
# tables of what is there), printed last.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-logs/gpu-decode-$(date +%y%m%d_%H%M%S)}}
part=${2:-all}
case $part in
  decode|serve|split|phases|capacity|all) ;;
  *) echo "usage: bash scripts/gpu_decode.sh [OUT_DIR] [decode|serve|split|phases|capacity|all]" >&2
     exit 2 ;;
esac
note=""  # what stood in for missing footage (part serve)
work=$(mktemp -d /tmp/gpu-decode.XXXXXX)
mkdir -p "$out"
export PYTHONUNBUFFERED=1
for pkg in nvidia.dali:nvidia-dali-cuda130 av:av PyNvVideoCodec:pynvvideocodec; do
  mod=${pkg%%:*} whl=${pkg##*:}
  if ! python3 -c "import $mod" 2>/dev/null && ls .wheels/${whl//-/_}-*.whl >/dev/null 2>&1; then
    pip install -q --no-index --no-deps .wheels/${whl//-/_}-*.whl 2>&1 | tail -1
  fi
done
ngpu=$(python3 -c 'import torch; print(torch.cuda.device_count())')
{ nvidia-smi -L
  python3 -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
  python3 -c 'import nvidia.dali as d, av; print("DALI", d.__version__, "PyAV", av.__version__)'
  python3 -c 'import PyNvVideoCodec as n; print("PyNvVideoCodec", n.__version__)' 2>&1 | tail -1
} > "$out/env.txt" 2>&1

if [[ $part == all || $part == decode ]]; then
# 1. every GPU backend against PyAV, ranges, reconfiguring across clips, streams, bad clips;
#    PyNvVideoCodec's surfaces copied by the driver (on each GPU) against DLPack
timeout 120 python3 -m pytest -q -p no:cacheprovider -m "gpu or gpu2" \
  tests/gpu/test_decoders_gpu.py tests/gpu/test_decode_gpu.py tests/gpu/test_pynvc_copy_gpu.py \
  > "$out/gpu-tests.log" 2>&1
echo "gpu tests: exit $?" >> "$out/gpu-tests.log"

# 2. decode alone on all GPUs: the NVDEC decoders over codecs x sizes x 1, 2, 4 workers per GPU
#    (the first run also writes the clips), then the CPU references at 1 and 2
grid=(--decode-only --gpus all --clips 24 --codecs h264,hevc,vp9,av1 --sizes 256x256,720x1280
      --cache "$work/clips")
timeout 270 python3 benchmark.py "${grid[@]}" --backends pynvvideocodec,dali-gpu --workers 1,2,4 \
  --out "$work/decode-gpu" > "$out/decode-only-gpu.txt" 2>&1
echo "decode-only, NVDEC decoders: exit $?" >> "$out/decode-only-gpu.txt"
timeout 150 python3 benchmark.py "${grid[@]}" --backends pyav,dali-cpu --workers 1,2 \
  --out "$work/decode-cpu" > "$out/decode-only-cpu.txt" 2>&1
echo "decode-only, CPU references: exit $?" >> "$out/decode-only-cpu.txt"
# one decode.csv for the summary: the header once, then the rows of both runs
csvs=()
for run in gpu cpu; do
  [[ -s $work/decode-$run/decode.csv ]] && csvs+=("$work/decode-$run/decode.csv")
  cp "$work/decode-$run/decode.json" "$out/decode-$run.json" 2>/dev/null
done
(( ${#csvs[@]} )) && awk 'FNR > 1 || NR == 1' "${csvs[@]}" > "$out/decode.csv"
fi

# CONFIG LABEL BACKEND [--set ...]: one run of configs/CONFIG.yaml at saturation, its figures
# as one JSON line in configs.txt under LABEL
config_run() {
  local c=$1 label=$2 backend=$3 tag
  shift 3
  tag=$(echo "$label-$backend" | tr -c 'A-Za-z0-9_-' '_')
  timeout 100 python3 benchmark.py -c "configs/$c.yaml" --decode-backend "$backend" "$@" -mi 0 \
    -v 200 --warmup 16 -qs 512 --logs "$work/configs/$tag" --no-progress ${RUN_ARGS:-} \
    > "$work/$tag.txt" 2>&1
  local rc=$?
  python3 - "$label" "$backend" "$rc" "$work/configs/$tag" "$work/$tag.txt" \
    >> "$out/configs.txt" <<'PY'
import json, sys
from pathlib import Path
config, backend, rc, runs, text = sys.argv[1:6]
found = sorted(Path(runs).glob("*/report.json"))
if not found:
    tail = Path(text).read_text().strip().splitlines()[-3:] if Path(text).exists() else []
    print(json.dumps({"config": config, "backend": backend, "exit": int(rc), "tail": tail}))
    sys.exit()
r = json.loads(found[-1].read_text())
print(json.dumps({
    "config": config, "backend": backend, "exit": int(rc),
    "ok": r["counts"]["ok"], "measured": r["counts"]["measured"],
    "requests_per_s": r["throughput"]["requests_per_s"],
    "decode_share": r["shares"].get("decode_compute_share"),
    "decode_busy": (r.get("decode") or {}).get("decode_busy"),
    "starved": (r.get("decode") or {}).get("starved"),
    "gpu_util": [g.get("util_mean_pct") for g in r["gpus"]["per_gpu"]],
    "p50_ms": r["latency_s"]["p50"] * 1e3 if r["latency_s"].get("p50") is not None else None,
    "warnings": r.get("warnings", [])}))
PY
}

if [[ $part == all || $part == serve ]]; then
# 3. the model alone at 720p (the reference for the streams) at the streams' batch: a segment of
#    8 frames is one call of 8 windows; then streams whole vs replicated
timeout 100 python3 benchmark.py --model-only --device cuda:0 --sizes 720x1280 --factor 2 \
  --batch 8 --modes fast --iters 20 > "$out/model-alone.txt" 2>&1
streams=.cache/streams note="real footage (opencv-doc, scripts/stream_clips.sh)"
if [[ ! -s $streams/vtest-720p.mp4 || ! -s $streams/megamind-720p.mp4 ]]; then
  streams=$work/streams note="synthetic 1280x720 H.264 stand-ins (no .cache/streams carried)"
  mkdir -p "$streams"
  python3 -c "
from pipeline.media.synthetic import write_clip
for i, name in enumerate(('vtest-720p', 'megamind-720p')):
    write_clip('$streams/' + name + '.mp4', 1280, 720, 120, 24, 'h264', 40 + i)"
fi
paths="[\"$streams/vtest-720p.mp4\",\"$streams/megamind-720p.mp4\"]"
for c in streams-720p-1gpu streams-720p-2gpu; do
  [[ $c == *2gpu && $ngpu -lt 2 ]] && continue
  n=160; [[ $c == *2gpu ]] && n=320
  timeout 150 python3 benchmark.py -c "configs/$c.yaml" --set "videos.paths=$paths" -mi 0 -v $n \
    --warmup 16 -qs 1024 --logs "$work/runs" --no-progress ${RUN_ARGS:-} \
    > "$out/${c#streams-720p-}.txt" 2>&1
  echo "$c: exit $?" >> "$out/${c#streams-720p-}.txt"
  mv "$out/${c#streams-720p-}.txt" "$out/streams-${c#streams-720p-}.txt"
done

# 4. the shipped 256x256 configs at saturation, with each decoder (same synthetic VP9 clips);
#    on a one-GPU host, one GPU's half of flavr-replicated instead (its decode worker and its
#    model replica both on GPU 0), and only the decoders that import here
: > "$out/configs.txt"
backends=()
for b in dali-gpu:nvidia.dali pynvvideocodec:PyNvVideoCodec pyav:av; do
  python3 -c "import ${b#*:}" 2>/dev/null && backends+=("${b%%:*}")
done
if (( ngpu >= 2 )); then
  for c in flavr-split flavr-replicated; do
    for backend in "${backends[@]}"; do
      config_run "$c" "$c" "$backend"
    done
  done
else
  for backend in "${backends[@]}"; do
    config_run flavr-replicated "flavr-replicated, one GPU" "$backend" \
      --set "pipeline[0].gpus=[0]" --set "pipeline[1].gpus=[0]"
  done
fi
fi

if [[ $part == all || $part == split ]]; then
# 4b. where the split's decode runs: next to the encoder (as shipped), next to the decoder step,
#     or on both GPUs (PyNvVideoCodec; one line each in configs.txt)
[[ $part == split ]] && : > "$out/configs.txt"
config_run flavr-split "flavr-split, decode on 0" pynvvideocodec
if (( ngpu >= 2 )); then
  config_run flavr-split "flavr-split, decode on 1" pynvvideocodec \
    --set "pipeline[0].gpus=[1]" --set pipeline[0].queue=global
  config_run flavr-split "flavr-split, decode on 0+1" pynvvideocodec \
    --set "pipeline[0].gpus=[0,1]" --set pipeline[0].queue=global
fi
fi
if [[ $part == all || $part == phases ]]; then
# 5. decode phase by phase, one worker per GPU, the NVDEC decoders: the shipped configs' clips
#    (4 distinct 256x256 VP9 clips of 16 frames, requests of 8), then short 720p H.264 clips;
#    one stream read only (its rate is not what this part is for, and it keeps the clips short)
ph=(--decode-only --gpus all --backends pynvvideocodec,dali-gpu --workers 1 --frames 8
    --clips 48 --distinct 4 --stream-reads 1 --phases --cache "$work/clips")
timeout 50 python3 benchmark.py "${ph[@]}" --codecs vp9 --sizes 256x256 --clip-frames 16 \
  --out "$work/phases-256" > "$out/phases-256.txt" 2>&1
echo "decode phases, 256x256 VP9 (clips of 16 frames): exit $?" >> "$out/phases-256.txt"
timeout 60 python3 benchmark.py "${ph[@]}" --codecs h264 --sizes 720x1280 \
  --out "$work/phases-720" > "$out/phases-720.txt" 2>&1
echo "decode phases, 720p H.264: exit $?" >> "$out/phases-720.txt"
csvs=()
for run in 256 720; do
  [[ -s $work/phases-$run/phases.csv ]] && csvs+=("$work/phases-$run/phases.csv")
  cp "$work/phases-$run/decode.json" "$out/phases-$run.json" 2>/dev/null
done
(( ${#csvs[@]} )) && awk 'FNR > 1 || NR == 1' "${csvs[@]}" > "$out/phases.csv"
fi

if [[ $part == all || $part == capacity ]]; then
# 6. decode capacity for short 720p H.264 clips: PyNvVideoCodec, 1, 2 and 4 workers per GPU on
#    all GPUs; 200 clips per worker, so that even one worker per GPU measures over ~2 s
timeout 240 python3 benchmark.py --decode-only --gpus all --backends pynvvideocodec \
  --codecs h264 --sizes 720x1280 --workers 1,2,4 --frames 8 --clips 200 --stream-reads 4 \
  --cache "$work/clips" --out "$work/capacity" > "$out/capacity.txt" 2>&1
echo "decode capacity, 720p H.264: exit $?" >> "$out/capacity.txt"
cp "$work/capacity/decode.csv" "$out/capacity.csv" 2>/dev/null
cp "$work/capacity/decode.json" "$out/capacity.json" 2>/dev/null
fi

# 7. the table
python3 - "$out" "$note" > "$out/summary.txt" <<'PY'
import csv, json, re, sys
from pathlib import Path
out, note = Path(sys.argv[1]), sys.argv[2]
if (out / "gpu-tests.log").exists():
    tests = (out / "gpu-tests.log").read_text().strip().splitlines()
    print("gpu decode tests:", next((l for l in reversed(tests) if "passed" in l
                                     or "failed" in l or "error" in l),
                                    tests[-1] if tests else "no output"))
try:
    rows = list(csv.DictReader(open(out / "decode.csv")))
except OSError:
    rows = []
if rows:
    print(f"\ndecode alone (clips of 8 frames; per GPU at the best worker count; stream fr/s: "
          f"one open decoder per worker)")
    print(f"{'backend':>15} {'codec':>5} {'size':>9} {'w/GPU':>5} {'clips/s/GPU':>11} "
          f"{'stream fr/s':>11} {'setup ms':>8}")
best = {}
for r in rows:
    if r["error"]:
        print(f"{r['backend']:>15} {r['codec']:>5} {r['size']:>9} {r['workers_per_device']:>5} "
              f"error: {r['error'][:60]}")
        continue
    key = (r["backend"], r["codec"], r["size"])
    if key not in best or float(r["clips_per_s"]) > float(best[key]["clips_per_s"]):
        best[key] = r
for r in best.values():
    print(f"{r['backend']:>15} {r['codec']:>5} {r['size']:>9} {r['workers_per_device']:>5} "
          f"{float(r['clips_per_s_per_device']):11.1f} {float(r['stream_frames_per_s']):11.1f} "
          f"{float(r['setup_ms_per_clip']):8.2f}")
if (out / "model-alone.txt").exists():
    text = (out / "model-alone.txt").read_text()
    print("\nmodel alone at 720p:", next((l.strip() for l in text.splitlines()
                                         if "fast" in l and "720" in l), "see model-alone.txt"))
if any((out / f"{n}.txt").exists() for n in ("streams-1gpu", "streams-2gpu")):
    print(f"\nstreams at 720p, -mi 0 ({note})")
for name in ("streams-1gpu", "streams-2gpu"):
    p = out / f"{name}.txt"
    if not p.exists():
        continue
    t = p.read_text()
    lines = t.splitlines()
    keep = [l.strip() for l in lines if re.match(r"\s*(load |throughput|busy over|streams:|"
            r"next to|- decode, not)", l)]
    at = next((i for i, l in enumerate(lines) if l.startswith("GPUs")), None)
    if at is not None:  # the per-GPU utilisation table, up to its blank line
        for l in lines[at + 1:]:
            if not l.strip():
                break
            keep.append(l.rstrip())
    print(f"  {name}: " + ("\n    ".join(keep) if keep else t.strip().splitlines()[-1]))
cfg = out / "configs.txt"
if cfg.exists() and cfg.read_text().strip():
    print("\nshipped 256x256 configs, -mi 0 -v 200 -qs 512 (synthetic VP9, 8 frames a request)")
    print(f"{'config':<28} {'decoder':<15} {'req/s':>7} {'decode/model':>12} {'GPU util %':>12} "
          f"{'starved':>7}")
    for line in cfg.read_text().splitlines():
        r = json.loads(line)
        if "requests_per_s" not in r:
            print(f"{r['config']:<28} {r['backend']:<15} no report (exit {r['exit']}): "
                  f"{' | '.join(r['tail'])[:150]}")
            continue
        util = "/".join(f"{u:.0f}" for u in r["gpu_util"] if u is not None) or "-"
        share = f"{r['decode_share'] * 100:.0f}%" if r["decode_share"] is not None else "-"
        print(f"{r['config']:<28} {r['backend']:<15} {r['requests_per_s']:7.1f} {share:>12} "
              f"{util:>12} {str(r['starved']):>7}"
              + (f"  ({r['ok']}/{r['measured']} ok)" if r["ok"] < r["measured"] else ""))
if (out / "phases.csv").exists():
    from pipeline.bench.decode_phases import table
    rows = []
    for r in csv.DictReader(open(out / "phases.csv")):
        for k in ("mean_ms", "p90_ms", "share_of_total"):
            r[k] = float(r[k]) if r[k] else None
        rows.append(r)
    print("\n" + table(rows))
for name in ("phases-256", "phases-720"):
    p = out / f"{name}.txt"
    if p.exists() and not p.read_text().rstrip().endswith("exit 0"):
        print(f"{name}: " + " | ".join(p.read_text().strip().splitlines()[-3:])[:300])
if (out / "capacity.txt").exists():
    TARGET = 207.0  # clips/s on two GPUs
    cap = list(csv.DictReader(open(out / "capacity.csv"))) if (out / "capacity.csv").exists() \
        else []
    print(f"\ndecode capacity, short 720p H.264 clips (8 frames), PyNvVideoCodec; target "
          f">= {TARGET:.0f} clips/s on two GPUs ({TARGET / 2:.1f} per GPU)")
    print(f"{'w/GPU':>5} {'GPUs':>4} {'clips/s':>9} {'per GPU':>8} {'stream fr/s':>11} "
          f"{'setup ms':>8}  verdict")
    for r in cap:
        n = len(r["devices"].split(","))
        if r["error"]:
            print(f"{r['workers_per_device']:>5} {n:>4}  error: {r['error'][:80]}")
            continue
        per = float(r["clips_per_s_per_device"])
        verdict = "meets" if per >= TARGET / 2 else "below"
        print(f"{r['workers_per_device']:>5} {n:>4} {float(r['clips_per_s']):9.1f} {per:8.1f} "
              f"{float(r['stream_frames_per_s']):11.1f} {float(r['setup_ms_per_clip']):8.2f}  "
              f"{verdict} ({per / (TARGET / 2):.0%} of the per-GPU target)")
    text = (out / "capacity.txt").read_text().rstrip()
    if not text.endswith("exit 0"):
        print("capacity: " + " | ".join(text.splitlines()[-3:])[:300])
PY
rm -rf "$work"
cat "$out/summary.txt"
