"""The pictures of `python -m alexnet_jax.visualize`: the split as compiled, conv1's kernels, curves."""
