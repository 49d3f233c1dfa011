#!/usr/bin/env bash
# The whole benchmark on one accelerator machine, unattended: install, the
# table (strategies x batch sizes x dtypes), the PyTorch comparison (GPU), all
# written to one results folder. Called by benchmarks/gpu.sh and tpu.sh.
#
#   bash benchmarks/run.sh gpu|tpu [--dry-run | --cpu-smoke | --preinstalled]
#
#   --dry-run       print every command, run none (no install, no device needed)
#   --cpu-smoke     the same steps on CPU at the tiny size, with the Python that
#                   is already set up (no install): checks the script itself
#   --preinstalled  the full size with $PYTHON as it is, no venv, no install:
#                   for a machine that already has JAX for its accelerator
#                   (and PyTorch), e.g. one without network access
#
# Environment: PYTHON (default python3), VENV (default .venv-KIND),
# RESULTS (default benchmarks/results/KIND-UTCDATE), LEVERS (default
# benchmarks/levers.txt: the levers measured one by one), ARCHIVE (a .tar.gz
# rewritten after every step with the results so far: for a machine that
# returns few files, or a run that may be cut short).
#
# One failing step does not stop the others (their results are still worth
# having); the script then exits 1 and names the steps that failed.
set -uo pipefail

KIND=${1:?usage: run.sh gpu|tpu [--dry-run|--cpu-smoke|--preinstalled]}
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
DTYPES=(bfloat16 float32)  # bfloat16 first: the figures the bars are about.
# Sized to finish in under 5 minutes on one H200 (the machine's window).
TIMING=(--steps=10 --warmup=2 --repeats=3)
PEAK=()  # The table's peak on accelerators.
VS_TIMING=(--steps=10 --warmup=2 --repeats=3)
VS_BATCH=256
LEVER_BATCH=256
LEVER_TIMING=(--steps=10 --warmup=2 --repeats=3)
# Predicted split on real links beside the table (tools/benchmarking/links.py).
LINKS=--links=2xthis-NVLink,2xthis-PCIe5,2xthis-PCIe4,2xH100-NVLink,2xGTX580-PCIe2
LEVERS=${LEVERS:-benchmarks/levers.txt}

case "$KIND" in
  gpu) EXTRA="jax[cuda12]==$JAX_VERSION"; TORCH="torch==$TORCH_VERSION"
       TRACE_XLA_FLAGS=" --xla_gpu_enable_command_buffer=" ;;
  # PyTorch on TPUs is PyTorch/XLA, another stack: no comparison there.
  tpu) EXTRA="jax[tpu]==$JAX_VERSION"; TORCH=""; TRACE_XLA_FLAGS="" ;;
  *) echo "run.sh: unknown kind '$KIND' (gpu or tpu)" >&2; exit 2 ;;
esac

case "$MODE" in
  run|--dry-run|--preinstalled) ;;
  --cpu-smoke)
    # The same steps at the test size, on CPU, with the Python given.
    CONFIG=configs/two_gpu.py:tiny
    BATCH_SIZES=8
    TIMING=(--steps=2 --warmup=1 --repeats=2)
    PEAK=(--peak_matmul_size=256)
    VS_TIMING=(--steps=1 --warmup=1 --repeats=2)
    VS_BATCH=8
    LEVER_BATCH=8
    LEVER_TIMING=(--steps=1 --warmup=1 --repeats=1)
    LINKS=--links=2xthis-PCIe4,2xGTX580-PCIe2
    export JAX_PLATFORMS=cpu
    ;;
  *) echo "run.sh: unknown option '$MODE' (--dry-run, --cpu-smoke or --preinstalled)" >&2
     exit 2 ;;
esac

FAILED=()
bundle() {  # With ARCHIVE set: the results so far in one archive, after each step.
  if [[ -n "${ARCHIVE:-}" && "$MODE" != --dry-run ]]; then
    tar czf "$ARCHIVE.part" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")" \
      && mv "$ARCHIVE.part" "$ARCHIVE"
  fi
}

run() {  # run COMMAND...: a failure is noted, and the next step still runs.
  echo "+ ${XLA_FLAGS:+XLA_FLAGS='$XLA_FLAGS' }$*" >&2
  if [[ "$MODE" != --dry-run ]]; then
    "$@" || { echo "run.sh: FAILED (exit $?): $*" >&2; FAILED+=("$1 ${*:2:3}"); }
  fi
  bundle
}

run_to() {  # run_to FILE COMMAND...: stdout to FILE.
  local out=$1; shift
  echo "+ $* > $out" >&2
  if [[ "$MODE" != --dry-run ]]; then
    "$@" > "$out" || { echo "run.sh: FAILED (exit $?): $*" >&2; FAILED+=("$*"); }
  fi
  bundle
}

if [[ "$MODE" == run || "$MODE" == --dry-run ]]; then
  PY="$VENV/bin/python"
  echo "+ $PYTHON -m venv $VENV" >&2
  echo "+ $PY -m pip install -q -r requirements.txt $EXTRA${TORCH:+ $TORCH}" >&2
  if [[ "$MODE" == run ]]; then
    # Without its install nothing below can run: stop here.
    "$PYTHON" -m venv "$VENV" && "$PY" -m pip install -q -r requirements.txt \
      "$EXTRA" ${TORCH:+"$TORCH"} || { echo "run.sh: the install failed" >&2; exit 1; }
  fi
else
  PY="$PYTHON"
fi
run mkdir -p "$RESULTS"
# The programs of one setting compile once for the table and again for the
# PyTorch comparison: one cache for both.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/alexnet_jax-bench-cache}

# What the machine and the software are, next to the figures.
if [[ "$MODE" != --dry-run ]]; then
  {
    if [[ "$KIND" == gpu && "$MODE" != --cpu-smoke ]]; then
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    fi
    "$PY" -c 'import sys, jax, flax, optax; print("python", sys.version.split()[0]);
print("jax", jax.__version__, "| flax", flax.__version__, "| optax", optax.__version__);
print("devices", jax.devices())'
  } > "$RESULTS/versions.txt" 2>&1
fi

# Several devices: every strategy that fits; one device: the baseline alone.
STRATEGIES=all
[[ "$MODE" != --cpu-smoke ]] || STRATEGIES=towers
if [[ "$MODE" == run || "$MODE" == --preinstalled ]]; then
  DEVICES=$("$PY" -c 'import jax; print(jax.device_count())') || DEVICES=1
  [[ "$DEVICES" -gt 1 ]] || STRATEGIES=
fi

HAVE_TORCH=
if [[ -n "$TORCH" ]]; then
  if [[ "$MODE" == --dry-run ]] || "$PY" -c 'import torch' 2>/dev/null; then
    HAVE_TORCH=1
  else
    echo "run.sh: PyTorch is not importable by $PY; skipping vs_pytorch" >&2
    [[ "$MODE" == --cpu-smoke ]] || FAILED+=("import torch")
  fi
fi

# Per dtype, bfloat16 first (the figures the bars are about): the table, then
# the PyTorch comparison, so that a run cut short keeps what it finished.
for DTYPE in "${DTYPES[@]}"; do
  # The full table with roofline fractions, compile time of the full step
  # and the predicted split on real links.
  run "$PY" -m alexnet_jax.benchmark --config="$CONFIG" --strategies="$STRATEGIES" \
    --batch_sizes="$BATCH_SIZES" --dtypes="$DTYPE" "${TIMING[@]}" ${PEAK[@]+"${PEAK[@]}"} \
    "$LINKS" --json="$RESULTS/benchmark-$DTYPE.json"
  # The same rows as docs/benchmarks.md's tables.
  if [[ "$MODE" == --dry-run || -e "$RESULTS/benchmark-$DTYPE.json" ]]; then
    run_to "$RESULTS/benchmark-$DTYPE.md" "$PY" -m alexnet_jax.benchmark \
      --config="$CONFIG" --markdown_from="$RESULTS/benchmark-$DTYPE.json"
  fi
  if [[ -n "$HAVE_TORCH" ]]; then
    # Both kernel gradients: XLA's (cuDNN's on a GPU) and core/convolution.py's
    # matrix-product one (the faster on CPU; on this device?).
    # PyTorch eager and torch.compile (inductor), AMP and channels_last.
    run "$PY" -m benchmarks.vs_pytorch --config="$CONFIG" --strategies= \
      --batch_size="$VS_BATCH" --dtype="$DTYPE" "${VS_TIMING[@]}" \
      --json="$RESULTS/vs_pytorch-$DTYPE.json"
  fi
  # Where one step's time goes, per kernel (a jax.profiler trace read by
  # benchmarks/profile_summary.py; the trace itself is not kept). Command
  # buffers off: inside one, the trace shows no kernels to attribute.
  TRACES=/tmp/alexnet_jax-traces-$STAMP
  XLA_FLAGS="${XLA_FLAGS:-}${TRACE_XLA_FLAGS}" run "$PY" \
    -m alexnet_jax.benchmark --config="$CONFIG" --strategies= \
    --batch_sizes="$VS_BATCH" --dtypes="$DTYPE" --steps=2 --warmup=1 --repeats=1 \
    ${PEAK[@]+"${PEAK[@]}"} --trace_dir="$TRACES"
  run_to "$RESULTS/profile-$DTYPE-$VS_BATCH.txt" "$PY" -m benchmarks.profile_summary \
    "$TRACES/b$VS_BATCH-$DTYPE-one_device"
  [[ "$MODE" == --dry-run ]] || rm -rf "$TRACES"
done
# Each lever of $LEVERS on its own against the default (bfloat16, one device).
run "$PY" -m alexnet_jax.benchmark --config="$CONFIG" --strategies= \
  --batch_sizes="$LEVER_BATCH" --dtypes=bfloat16 "${LEVER_TIMING[@]}" \
  ${PEAK[@]+"${PEAK[@]}"} --json="$RESULTS/lever-default.json"
N=0
while IFS= read -r LEVER || [[ -n "$LEVER" ]]; do
  [[ -z "${LEVER// }" || "$LEVER" == \#* ]] && continue
  N=$((N + 1))
  OUT_JSON="$RESULTS/lever-$N.json"
  [[ "$MODE" == --dry-run ]] || echo "lever $N: $LEVER" >> "$RESULTS/levers.txt"
  if [[ "$LEVER" == XLA_FLAGS=* ]]; then
    XLA_FLAGS="${XLA_FLAGS:-} ${LEVER#XLA_FLAGS=}" run "$PY" -m alexnet_jax.benchmark \
      --config="$CONFIG" --strategies= --batch_sizes="$LEVER_BATCH" --dtypes=bfloat16 \
      "${LEVER_TIMING[@]}" ${PEAK[@]+"${PEAK[@]}"} --json="$OUT_JSON"
  else
    # shellcheck disable=SC2086  # One line, several flags.
    run "$PY" -m alexnet_jax.benchmark --config="$CONFIG" --strategies= \
      --batch_sizes="$LEVER_BATCH" --dtypes=bfloat16 "${LEVER_TIMING[@]}" \
      ${PEAK[@]+"${PEAK[@]}"} $LEVER --json="$OUT_JSON"
  fi
done < "$LEVERS"

echo "run.sh: results in $RESULTS" >&2
if [[ ${#FAILED[@]} -gt 0 ]]; then
  printf 'run.sh: failed: %s\n' "${FAILED[@]}" >&2
  exit 1
fi
