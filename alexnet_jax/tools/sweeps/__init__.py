"""Ablation sweeps (`python -m alexnet_jax.sweep`): sweep files, the runner, the results."""
