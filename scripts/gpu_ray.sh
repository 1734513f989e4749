#!/usr/bin/env bash
# The Ray launcher on two GPUs of one host treated as two Ray nodes (about 8 minutes on two
# H200s): node gpuA sees only GPU 0, node gpuB only GPU 1 (CUDA_VISIBLE_DEVICES per `ray start`),
# so no CUDA IPC can join them and the split's activations cross by NCCL. The 720p split and
# replicated placements of the placement study run on Ray (configs/ray/*-2nodes.yaml) and on the
# local launcher (configs/study/split.yaml, replicated.yaml) in one go, at saturation and at
# -mi 50, and one table compares them: throughput, hand-off copy and exposed time as % of model
# compute, and Ray's throughput as a ratio of the local launcher's.
#
#   bash scripts/gpu_ray.sh [OUT_DIR] [REQUESTS]     (default: $OUT, else logs/gpu-ray-<time>; 150)
#
# NODES=1: one GPU as one Ray node (needs one GPU): the study's whole model on GPU 0
# (configs/ray/whole-1node.yaml against configs/study/whole.yaml) at -mi 0 and 100 (about half a
# GPU's capacity, as -mi 50 is of two), so what differs is Ray's actors and hub alone.
#
# Knobs: PLACEMENTS (default "split replicated"; "whole" with NODES=1), MIS (mean intervals,
# default "0 50"; "0 100" with NODES=1), RUN_ARGS
# (more benchmark flags for every run, e.g. "--set model.checkpoint=random"). The Ray nodes pass
# their environment to the actors: FLAVR_NCCL_PRIORITY=normal runs NCCL's streams at normal
# priority (default high, pipeline/serving/transport/remote.py). NCCL_P2P_USE_CUDA_MEMCPY=1 (the
# copy engines for point-to-point) stalled the split's first transfers on two H200s (NCCL
# 2.28.9): no request completed in a minute.
#
# Ray must be importable: pip install ray==2.60.0 (Python 3.12 on the GPU machine: the cp312
# manylinux2014 x86_64 wheel). Offline: from the project root on a machine with the registry,
#   EXTRA_WHEELS="ray==2.60.0 msgpack protobuf click jsonschema jsonschema-specifications \
#     referencing rpds-py attrs" bash ../shared/tools/gpu-wheels.sh
# then stage .gpu/p* on the GPU host and `source /tmp/gpu-env.sh` before this script (done here
# when the file exists). Writes env.txt, one log per run (*.txt, the run folders under runs/),
# ray-nodes.txt, nccl.txt (the transport NCCL chose between the two nodes) and summary.txt, and
# prints summary.txt last.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-logs/gpu-ray-$(date +%y%m%d_%H%M%S)}}
v=${2:-150}
mkdir -p "$out/runs"
out=$(cd "$out" && pwd)
export PYTHONUNBUFFERED=1
[[ -f /tmp/gpu-env.sh ]] && source /tmp/gpu-env.sh
if ! python3 -c 'import ray' 2>/dev/null; then
  ls .wheels/ray-2.60.0-*.whl >/dev/null 2>&1 && pip install -q --no-index --find-links .wheels ray==2.60.0
fi
{ nvidia-smi -L
  python3 -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "nccl", torch.cuda.nccl.version())'
  python3 -c 'import ray; print("ray", ray.__version__)'
} > "$out/env.txt" 2>&1
if ! python3 -c 'import ray' 2>/dev/null; then
  echo "ray is not importable: see the header of $0" | tee "$out/summary.txt"; exit 1
fi
nodes=${NODES:-2}
if [[ $nodes != 1 && $nodes != 2 ]]; then echo "NODES must be 1 or 2, not $nodes" >&2; exit 2; fi
if (( nodes == 1 )); then
  placements=${PLACEMENTS:-whole} mis=${MIS:-0 100} ray_configs=1node
else
  placements=${PLACEMENTS:-split replicated} mis=${MIS:-0 50} ray_configs=2nodes
fi
ngpu=$(python3 -c 'import torch; print(torch.cuda.device_count())')
if (( ngpu < nodes )); then echo "needs $nodes GPUs, found $ngpu" | tee "$out/summary.txt"; exit 1; fi

# The Ray nodes on this host, their session files in a short folder of their own (Ray's sockets
# live there); stopped, and the folder removed, however the script ends.
work=$(mktemp -d /tmp/gr.XXXXXX)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
ray_cli() { python3 -m ray.scripts.scripts "$@"; }
cleanup() { ray_cli stop --force > /dev/null 2>&1; rm -rf "$work"; }
trap cleanup EXIT
export RAY_USAGE_STATS_ENABLED=0
# NCCL says which transport it picked between the two nodes (P2P, SHM or NET) in the run logs.
export NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,P2P
CUDA_VISIBLE_DEVICES=0 ray_cli start --head --port="$port" --num-gpus=1 --num-cpus=8 \
  --resources='{"gpuA": 100}' --temp-dir="$work" --include-dashboard=false \
  > "$out/ray-nodes.txt" 2>&1
if (( nodes == 2 )); then
  CUDA_VISIBLE_DEVICES=1 ray_cli start --address="127.0.0.1:$port" --num-gpus=1 --num-cpus=8 \
    --resources='{"gpuB": 100}' >> "$out/ray-nodes.txt" 2>&1
fi
python3 -c "import ray; ray.init(address='127.0.0.1:$port'); [print(n['NodeID'][:12], n['Resources']) for n in ray.nodes()]" \
  >> "$out/ray-nodes.txt" 2>&1

bench() {  # label, config, mean interval, extra flags...
  local label=$1 cfg=$2 mi=$3 start=$(date +%s)
  shift 3
  timeout 300 python3 benchmark.py -c "$cfg" -mi "$mi" -v "$v" -qs 512 \
    --logs "$out/runs/$label" --no-progress "$@" > "$out/$label.txt" 2>&1
  echo "$label: exit $? in $(( $(date +%s) - start )) s"
}
{
  for mi in $mis; do
    for placement in $placements; do
      # MPS off for both: Ray's actors run without it, so the local runs do too (like with like).
      bench "$placement-local-mi$mi" "configs/study/$placement.yaml" "$mi" --launcher local \
        --mps off ${RUN_ARGS:-}
      bench "$placement-ray-mi$mi" "configs/ray/$placement-$ray_configs.yaml" "$mi" \
        --ray-address "127.0.0.1:$port" ${RUN_ARGS:-}
    done
  done
} | tee "$out/runs.txt"
grep -hs "NCCL INFO.*\(via\|Channel\)" "$out"/split-ray-*.txt | sort | uniq -c | sort -rn | head -20 \
  > "$out/nccl.txt"

python3 - "$out" "$nodes" "$placements" "$mis" > "$out/summary.txt" <<'EOF'
import json, sys
from pathlib import Path

out, nodes = Path(sys.argv[1]), int(sys.argv[2])
placements, mis = sys.argv[3].split(), [int(m) for m in sys.argv[4].split()]


def summary(label):
    found = sorted((out / "runs" / label).glob("*/report.json"))
    return json.loads(found[-1].read_text()) if found else None


def pct(x):
    return "-" if x is None else f"{100 * x:.2f}%"


print("Ray launcher vs local launcher, 720p FLAVR 2x bf16, "
      + ("two GPUs of one host as two Ray nodes" if nodes == 2 else "one GPU as one Ray node"))
print(f"{'placement':<12} {'-mi':>4} {'launcher':<6} {'req/s':>8} {'ratio':>7} {'p50 ms':>8} "
      f"{'handoff':>8} {'exposed':>8} {'clock err':>9}  error")
for placement in placements:
    for mi in mis:
        local = summary(f"{placement}-local-mi{mi}")
        for launcher in ("local", "ray"):
            s = summary(f"{placement}-{launcher}-mi{mi}")
            if s is None:
                print(f"{placement:<12} {mi:>4} {launcher:<6} (no summary: see {placement}-{launcher}-mi{mi}.txt)")
                continue
            rps = s["throughput"]["requests_per_s"] or 0.0
            base = local["throughput"]["requests_per_s"] if local else None
            ratio = f"{rps / base:.3f}" if rps and base else "-"
            lat = (s.get("latency_s") or {}).get("p50")
            sh = s["shares"]
            clock = s["run"].get("clock_error_s")
            print(f"{placement:<12} {mi:>4} {launcher:<6} {rps or 0:>8.2f} {ratio:>7} "
                  f"{'-' if lat is None else f'{1e3 * lat:.1f}':>8} {pct(sh.get('handoff_share')):>8} "
                  f"{pct(sh.get('handoff_exposed_share')):>8} "
                  f"{'-' if clock is None else f'{1e3 * clock:.3f}ms':>9}  {s['run'].get('error') or ''}")

# Below saturation, where Ray's extra latency goes: each part of the report's breakdown (mean ms
# per request; they add up to the mean latency), Ray against local.
for placement in placements:
    for mi in (m for m in mis if m > 0):
        local, ray = (summary(f"{placement}-{launcher}-mi{mi}") for launcher in ("local", "ray"))
        if not (local and ray and local.get("breakdown") and ray.get("breakdown")):
            continue
        parts = {}
        for name, s in (("local", local), ("ray", ray)):
            for p in s["breakdown"]["parts"]:
                parts.setdefault((p["part"], p["column"]), {})[name] = 1e3 * (p["mean_s"] or 0.0)
        print()
        print(f"{placement} -mi {mi}: mean ms per request")
        print(f"{'part':<28} {'local':>8} {'ray':>8} {'ray-local':>10}")
        for (part, column), v in sorted(parts.items(), key=lambda kv: -abs(
                kv[1].get("ray", 0.0) - kv[1].get("local", 0.0))):
            a, b = v.get("local", 0.0), v.get("ray", 0.0)
            print(f"{part + ' ' + column.removesuffix('_s'):<28} {a:>8.2f} {b:>8.2f} {b - a:>+10.2f}")
        a, b = (1e3 * s["latency_s"]["mean"] for s in (local, ray))
        print(f"{'latency mean':<28} {a:>8.2f} {b:>8.2f} {b - a:>+10.2f}")
print()
print("handoff / exposed: hand-off copy time and the part the consumer waited for, as % of the")
print("model's compute (targets: replicated on Ray within 5% of local throughput; split exposed")
print("under 2% of compute). NCCL's transport between the nodes: nccl.txt.")
EOF
cat "$out/runs.txt" "$out/summary.txt"
