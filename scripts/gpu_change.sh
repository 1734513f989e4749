#!/usr/bin/env bash
# Change-based inference on one GPU at saturation (-mi 0), against the full model: static-camera
# real footage at 720p (8 streams of opencv-doc's street scene, configs/change-static-720p*.yaml)
# and synthetic 720p streams in which 1%, 10%, 50% and 100% of the frame moves
# (configs/change-moving-720p.yaml). Each change-based workload runs twice: timed, and as a
# fidelity run (model.change_based.check: the full model also runs every window, after the timed
# work) for the PSNR against the full model. Prints one table: throughput, ratio to the full
# model, tiles computed, windows run whole, PSNR mean and worst. With the project's trained
# weights (the default checkpoint).
#
#   bash scripts/gpu_change.sh [OUT_DIR] [static|moving|all]    (default: $OUT, else
#                                                                logs/gpu-change-<time>; all)
#
# About 4 minutes for static and 8 for moving on one H200 (run the parts one at a time where a
# command may take at most 10 minutes). The GPU tests of the change
# path (tests/gpu/test_change_gpu.py) run first (TESTS=0 skips them).
# Knobs: FRACTIONS (moving fractions, default "0.01 0.1 0.5 1.0"); VARIANT (more --set
# arguments, e.g. "--set model.change_based.tile=128"): the static part then also runs the
# change-based workload with them, timed and for fidelity, as a row of its own.
# Wheels: nvidia-dali-cuda130 and av (PyAV) in .wheels/ are installed offline where missing.
# Footage: .cache/streams/vtest-720p.mp4 from scripts/stream_clips.sh (carry it), or
# .cache/opencv-doc/vtest.avi (transcoded here); without either the static part is skipped, said
# so in summary.txt. The moving clips are generated here (videos/synthetic/, cached).
# Writes under OUT_DIR: env.txt, gpu-tests.log, one <label>.txt report per run, runs/<label>/ (the
# run folders: requests.csv with computed_fraction, windows_whole, psnr_vs_full_db per request),
# summary.txt (the table; printed last).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-logs/gpu-change-$(date +%y%m%d_%H%M%S)}}
part=${2:-all}
mkdir -p "$out/runs"
export PYTHONUNBUFFERED=1
for pkg in nvidia.dali:nvidia-dali-cuda130 av:av; do
  mod=${pkg%%:*} whl=${pkg##*:}
  if ! python3 -c "import $mod" 2>/dev/null && ls .wheels/${whl//-/_}-*.whl >/dev/null 2>&1; then
    pip install -q --no-index --no-deps .wheels/${whl//-/_}-*.whl 2>&1 | tail -1
  fi
done
{ nvidia-smi -L
  python3 -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())'
  python3 -c 'import nvidia.dali as d, av; print("DALI", d.__version__, "PyAV", av.__version__)'
} > "$out/env.txt" 2>&1

if [[ ${TESTS:-1} == 0 ]]; then
  echo "gpu tests: skipped (TESTS=0)" > "$out/gpu-tests.log"
else
  timeout 240 python3 -m pytest -q -p no:cacheprovider -m "gpu or gpu2" tests/gpu/test_change_gpu.py \
    > "$out/gpu-tests.log" 2>&1
  echo "gpu tests: exit $?" >> "$out/gpu-tests.log"
fi

# LABEL CONFIG REQUESTS [--set ...]: one run at saturation on GPU 0, its report in LABEL.txt
bench() {
  local label=$1 config=$2 n=$3
  shift 3
  timeout 170 python3 benchmark.py -c "configs/$config.yaml" "$@" -mi 0 -v "$n" -b 2 --warmup 16 \
    -qs 1024 --logs "$out/runs/$label" --no-progress > "$out/$label.txt" 2>&1
  echo "$label: exit $?" >> "$out/$label.txt"
}
check="--set model.change_based.check=true"

note=""
if [[ $part == all || $part == static ]]; then
  footage=.cache/streams/vtest-720p.mp4
  if [[ ! -s $footage && -s .cache/opencv-doc/vtest.avi ]]; then
    mkdir -p .cache/streams
    python3 -m pipeline.media.transcode .cache/opencv-doc/vtest.avi "$footage.part.mp4" \
      --size 720x1280 > /dev/null && mv "$footage.part.mp4" "$footage"
  fi
  if [[ -s $footage ]]; then
    bench static-full change-static-720p-full 120
    bench static-change change-static-720p 120
    bench static-fidelity change-static-720p 24 $check
    if [[ -n ${VARIANT:-} ]]; then
      echo "$VARIANT" > "$out/variant.txt"
      bench static-variant change-static-720p 120 $VARIANT
      bench static-variant-fidelity change-static-720p 24 $VARIANT $check
    fi
  else
    note="static part skipped: no .cache/streams/vtest-720p.mp4 (bash scripts/stream_clips.sh)"
  fi
fi
if [[ $part == all || $part == moving ]]; then
  # The full model's cost does not depend on what moves: one reference run, at 100% moving.
  bench moving-full change-moving-720p 120 --set model.change_based=null \
    --set videos.synthetic.moving_fraction=1.0
  for f in ${FRACTIONS:-0.01 0.1 0.5 1.0}; do
    bench "moving$f-change" change-moving-720p 120 --set videos.synthetic.moving_fraction=$f
    bench "moving$f-fidelity" change-moving-720p 24 --set videos.synthetic.moving_fraction=$f $check
  done
fi

python3 - "$out" "$note" > "$out/summary.txt" <<'PY'
import json, sys
from pathlib import Path

out, note = Path(sys.argv[1]), sys.argv[2]
tests = (out / "gpu-tests.log").read_text().strip().splitlines()
print("gpu tests:", next((l for l in reversed(tests) if "passed" in l or "failed" in l
                          or "error" in l), tests[-1] if tests else "no output"))


def summary(label):
    runs = sorted((out / "runs" / label).glob("*/report.json"))
    return json.loads(runs[-1].read_text()) if runs else None


def fmt(x, spec):
    if isinstance(x, (int, float)):
        return format(x, spec)
    return "-".rjust(int(spec.split(".")[0].rstrip("dfs") or 0))


print("\none H200, -mi 0 -b 2, 8 streams of 8-frame segments at 1280x720, bf16, trained weights;"
      "\nthroughput: output frames/s of the timed run; PSNR: the fidelity run (against the full "
      "model)")
print(f"{'workload':<16} {'mode':<7} {'out fr/s':>9} {'x full':>7} {'computed':>9} "
      f"{'whole win':>9} {'PSNR mean':>9} {'worst':>7}")
static_modes = [("change", "static-change", "static-fidelity")]
if (out / "variant.txt").exists():
    static_modes.append(("variant", "static-variant", "static-variant-fidelity"))
rows = [("static camera", "static-full", static_modes)]
rows += [(f"{float(f) * 100:g}% moving", "moving-full",
          [("change", f"moving{f}-change", f"moving{f}-fidelity")]) for f in ("0.01", "0.1", "0.5", "1.0")]
for name, full_label, modes in rows:
    full = summary(full_label)
    full_fps = full["throughput"]["output_frames_per_s"] if full else None
    if full and full_label.startswith("static"):
        print(f"{name:<16} {'full':<7} {fmt(full_fps, '9.1f')} {'1.00':>7}")
    for mode, timed_label, fid_label in modes:
        timed, fid = summary(timed_label), summary(fid_label)
        if timed is None:
            print(f"{name:<16} {mode:<7} (no run: see {timed_label}.txt)")
            continue
        fps = timed["throughput"]["output_frames_per_s"]
        ch = timed.get("change") or {}
        fc = (fid or {}).get("change") or {}
        ratio = fps / full_fps if fps and full_fps else None
        computed = ch.get("computed_fraction_mean")
        print(f"{name:<16} {mode:<7} {fmt(fps, '9.1f')} {fmt(ratio, '7.2f')} "
              f"{fmt(computed * 100 if computed is not None else None, '8.1f')}% "
              f"{fmt(ch.get('windows_whole'), '9d')} {fmt(fc.get('psnr_mean_db'), '9.2f')} "
              f"{fmt(fc.get('psnr_worst_db'), '7.2f')}")
        if timed["run"].get("error") or timed["counts"]["ok"] < timed["counts"]["measured"]:
            print(f"{'':<16} !! {timed['counts']} (see {timed_label}.txt)")
full = summary("moving-full")
if full:
    print(f"{'(moving) full':<16} {'full':<7} "
          f"{fmt(full['throughput']['output_frames_per_s'], '9.1f')} {'1.00':>7}   "
          "(the reference for every moving fraction)")
if (out / "variant.txt").exists():
    print("variant:", (out / "variant.txt").read_text().strip())
if note:
    print("\n" + note)
PY
cat "$out/summary.txt"
