"""The paper's two-tower network on a single device (both towers on it).

    python -m alexnet_jax.main --config=configs/one_gpu.py --workdir=DIR

Same parameters and outputs as `two_gpu.py`; the towers' exchanges become
plain concatenations. `configs/one_gpu.py:demo` is the demo on one device:

    python -m alexnet_jax.main --config=configs/one_gpu.py:demo --workdir=/tmp/alexnet-demo-1gpu

Measured 2026-11-25 on a 2-core Intel Xeon CPU (one JAX device), with the
code of that day: 1,500 steps, 1 min 55 s wall in all, 94.90% validation
top-1, the same run bit for bit as `two_gpu.py:demo`; not re-run since
(the equality of the two placements is tested). The full recipe has not been run by this project.
"""

from configs import two_gpu


def get_config(arg: str | None = None):
  config = two_gpu.get_config(arg)
  config.strategy = 'data'
  config.mesh.model = 1
  config.mesh.data = 1
  return config
