"""Train-step throughput, memory and MFU per placement (`python -m alexnet_jax.benchmark`)."""
