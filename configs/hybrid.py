"""Krizhevsky 2014, "One weird trick for parallelizing convolutional neural
networks" (arXiv 1404.5997): convolutions data parallel, fully connected
layers model parallel, on a `data` axis over every device.

    python -m alexnet_jax.main --config=configs/hybrid.py --workdir=DIR
    python -m alexnet_jax.describe --config=configs/two_gpu.py --strategies=towers,data,hybrid,fsdp

Each device convolves its slice of the batch; before fc6 it gathers the
whole batch's activations and computes its share of every fully connected
layer's units (both towers' parameters stay on each device for the
convolutions). The same network and function as `two_gpu.py` (tested to
float32 tolerance); only where the arrays live changes, by the rules table
`STRATEGIES['hybrid']` in alexnet_jax/core/parallel.py. Not yet trained to completion by this
project (no ImageNet, no accelerator here). The logits are split too, so
`model.num_classes` must divide by towers x devices (1000 over 2 x 4: yes).
"""

from configs import default


def get_config(arg: str | None = None):
  config = default.get_config(arg)
  config.strategy = 'hybrid'
  config.mesh.model = 1
  config.mesh.data = -1
  return config
