#!/usr/bin/env bash
# On a Cloud TPU VM: the benchmark table (batch 128, 256, 512 x float32,
# bfloat16; every strategy that fits the VM's chips), JSON and table in
# benchmarks/results/tpu-DATE/. No PyTorch comparison (PyTorch on TPUs is
# PyTorch/XLA, another stack). One unattended command:
#
#   bash benchmarks/tpu.sh              # installs jax[tpu] into .venv-tpu
#   bash benchmarks/tpu.sh --dry-run    # prints the commands only
#   bash benchmarks/tpu.sh --cpu-smoke  # the same steps, tiny size, on CPU
#
# Not yet run on a TPU by this project.
exec bash "$(dirname "$0")/run.sh" tpu "$@"
