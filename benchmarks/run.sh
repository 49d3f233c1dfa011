#!/usr/bin/env bash
# The whole benchmark on one accelerator machine, unattended: install, the
# table (strategies x batch sizes x dtypes), the PyTorch comparison (GPU), all
# written to one results folder. Called by benchmarks/gpu.sh and tpu.sh.
#
#   bash benchmarks/run.sh gpu|tpu [--dry-run | --cpu-smoke]
#
#   --dry-run    print every command, run none (no install, no device needed)
#   --cpu-smoke  the same steps on CPU at the tiny size, with the Python that
#                is already set up (no install): checks the script itself
#
# Environment: PYTHON (default python3), VENV (default .venv-KIND),
# RESULTS (default benchmarks/results/KIND-UTCDATE).
set -euo pipefail

KIND=${1:?usage: run.sh gpu|tpu [--dry-run|--cpu-smoke]}
MODE=${2:-run}
cd "$(dirname "$0")/.."

JAX_VERSION=0.10.2  # As requirements.txt pins it.
TORCH_VERSION=2.13.0  # As benchmarks/requirements.txt pins it (CUDA build here).
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${RESULTS:-benchmarks/results/$KIND-$STAMP}
VENV=${VENV:-.venv-$KIND}
PYTHON=${PYTHON:-python3}

# Full size, as the README's results: the paper's net at 227x227.
CONFIG=configs/two_gpu.py
BATCH_SIZES=128,256,512
DTYPES=float32,bfloat16
TIMING=(--steps=20 --warmup=3 --repeats=5)
VS_TIMING=(--steps=20 --warmup=3 --repeats=5)
VS_BATCH=256

case "$KIND" in
  gpu) EXTRA="jax[cuda12]==$JAX_VERSION"; TORCH="torch==$TORCH_VERSION" ;;
  # PyTorch on TPUs is PyTorch/XLA, another stack: no comparison there.
  tpu) EXTRA="jax[tpu]==$JAX_VERSION"; TORCH="" ;;
  *) echo "run.sh: unknown kind '$KIND' (gpu or tpu)" >&2; exit 2 ;;
esac

case "$MODE" in
  run|--dry-run) ;;
  --cpu-smoke)
    # The same steps at the test size, on CPU, with the Python given.
    CONFIG=configs/two_gpu.py:tiny
    BATCH_SIZES=8
    TIMING=(--steps=2 --warmup=1 --repeats=2 --peak_matmul_size=256)
    VS_TIMING=(--steps=1 --warmup=1 --repeats=2)
    VS_BATCH=8
    export JAX_PLATFORMS=cpu
    ;;
  *) echo "run.sh: unknown option '$MODE' (--dry-run or --cpu-smoke)" >&2; exit 2 ;;
esac

run() {
  echo "+ $*" >&2
  if [[ "$MODE" != --dry-run ]]; then "$@"; fi
}

run_to() {  # run_to FILE COMMAND...: stdout to FILE.
  local out=$1; shift
  echo "+ $* > $out" >&2
  if [[ "$MODE" != --dry-run ]]; then "$@" > "$out"; fi
}

if [[ "$MODE" == --cpu-smoke ]]; then
  PY="$PYTHON"
else
  PY="$VENV/bin/python"
  run "$PYTHON" -m venv "$VENV"
  run "$PY" -m pip install -q -r requirements.txt "$EXTRA" ${TORCH:+"$TORCH"}
fi
run mkdir -p "$RESULTS"

# What the machine is, next to the figures.
if [[ "$MODE" == run && "$KIND" == gpu ]]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv \
    > "$RESULTS/nvidia-smi.csv" || true
fi

# Several devices: every strategy that fits; one device: the baseline alone.
STRATEGIES=all
[[ "$MODE" != --cpu-smoke ]] || STRATEGIES=towers
if [[ "$MODE" == run ]]; then
  DEVICES=$("$PY" -c 'import jax; print(jax.device_count())')
  [[ "$DEVICES" -gt 1 ]] || STRATEGIES=
fi

run "$PY" -m alexnet_jax.benchmark --config="$CONFIG" --strategies="$STRATEGIES" \
  --batch_sizes="$BATCH_SIZES" --dtypes="$DTYPES" "${TIMING[@]}" \
  --json="$RESULTS/benchmark.json"
# The same rows as the README's table.
run_to "$RESULTS/benchmark.md" "$PY" -m alexnet_jax.benchmark \
  --config="$CONFIG" --markdown_from="$RESULTS/benchmark.json"

if [[ -n "$TORCH" ]]; then
  if [[ "$MODE" == --cpu-smoke ]] && ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "run.sh: PyTorch is not importable by $PY; skipping vs_pytorch" >&2
  else
    for DTYPE in bfloat16 float32; do
      run "$PY" -m benchmarks.vs_pytorch --config="$CONFIG" --strategies= \
        --batch_size="$VS_BATCH" --dtype="$DTYPE" "${VS_TIMING[@]}" \
        --json="$RESULTS/vs_pytorch-$DTYPE.json"
    done
  fi
fi
echo "run.sh: results in $RESULTS" >&2
