"""The paper's two-tower network on a single device (both towers on it).

    python -m alexnet_jax.main --config=configs/one_gpu.py --workdir=DIR

Same parameters and outputs as `two_gpu.py`; the towers' exchanges become
plain concatenations. `configs/one_gpu.py:demo` is the demo on one device:

    python -m alexnet_jax.main --config=configs/one_gpu.py:demo --workdir=/tmp/alexnet-demo-1gpu

It trains the same run, bit for bit, as `two_gpu.py:demo` (tested:
`test_one_device_run_equals_the_two_device_run`). The full recipe has not
been run by this project.
"""

from configs import two_gpu


def get_config(arg: str | None = None):
  config = two_gpu.get_config(arg)
  config.strategy = 'data'
  config.mesh.model = 1
  config.mesh.data = 1
  return config
