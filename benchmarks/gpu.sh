#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: the benchmark table (batch 128, 256, 512 x
# float32, bfloat16; every strategy that fits when there are several GPUs) and
# the PyTorch comparison (batch 256, bfloat16 and float32, AMP + channels_last),
# JSON and tables in benchmarks/results/gpu-DATE/. One unattended command:
#
#   bash benchmarks/gpu.sh              # installs jax[cuda12] and torch into .venv-gpu
#   bash benchmarks/gpu.sh --dry-run    # prints the commands only
#   bash benchmarks/gpu.sh --cpu-smoke  # the same steps, tiny size, on CPU
#
# Needs python3 (3.11 tested) and an NVIDIA driver for CUDA 12. Planned to
# take under 10 minutes (install ~3, benchmark ~5, comparison ~2); not yet
# run on a GPU by this project.
exec bash "$(dirname "$0")/run.sh" gpu "$@"
