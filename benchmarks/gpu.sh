#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: the benchmark table (batch 128, 256, 512 x
# bfloat16, float32; every strategy that fits when there are several GPUs) and
# the PyTorch comparison (batch 256, AMP + channels_last, both kernel
# gradients), JSON and tables in benchmarks/results/gpu-DATE/. One unattended
# command:
#
#   bash benchmarks/gpu.sh                 # installs jax[cuda12] and torch into .venv-gpu
#   bash benchmarks/gpu.sh --preinstalled  # no install: $PYTHON (python3) as it is
#   bash benchmarks/gpu.sh --dry-run       # prints the commands only
#   bash benchmarks/gpu.sh --cpu-smoke     # the same steps, tiny size, on CPU
#
# Needs python3 and an NVIDIA driver. What it measured, and how it was run
# there, is in benchmarks/results/ (docs/benchmarks.md lists each run). The
# install path (jax[cuda12] from PyPI) has not been run on a GPU.
exec bash "$(dirname "$0")/run.sh" gpu "$@"
