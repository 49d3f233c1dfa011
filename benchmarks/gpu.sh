#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, per dtype (bfloat16 first): the benchmark
# table (batch 128, 256, 512; every strategy that fits when there are several
# GPUs) with roofline fractions, compile times and the split predicted on real
# links; the PyTorch comparison (batch 256, AMP + channels_last, eager and
# torch.compile); one traced step with command buffers off (every kernel
# attributed). Then each lever of benchmarks/levers.txt on its own against the
# default. JSON and tables in benchmarks/results/gpu-DATE/, each written as
# soon as it is done (ARCHIVE=FILE.tar.gz: all of it, after every step). Sized
# for under 5 minutes on one H200. One unattended command:
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
