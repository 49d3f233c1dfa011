"""The paper's recipe split over two devices, one tower each, as in 2012.

    python -m alexnet_jax.main --config=configs/two_gpu.py --workdir=DIR

Each device holds half of every layer and the devices exchange activations
only before conv3, fc6, fc7 and fc8 and for the softmax (Sec. 3.2, Fig. 2).
With more than two devices the rest form a data axis.

`configs/two_gpu.py:demo` trains the real two-tower structure, scaled down
(DEMO_WIDTH, DEMO_IMAGE_SIZE), on the built-in `shapes10` dataset: no download.

    python -m alexnet_jax.main --config=configs/two_gpu.py:demo --workdir=/tmp/alexnet-demo

Expect 1,500 steps in a few minutes on a 2-core CPU (2 JAX host devices)
and a validation top-1 near 98-100%; the last digits depend on the CPU kind.
Each measured run, with its command, hardware and date, is in
experiments/results/demo/. The full recipe has not been run by this project.
"""

from configs import default

DEMO_IMAGE_SIZE = 67
DEMO_WIDTH = 1 / 4


def get_config(arg: str | None = None):
  flags = [f for f in (arg or '').split(',') if f]
  config = default.get_config(','.join(f for f in flags if f != 'demo') or None)
  config.strategy = 'towers'
  config.mesh.model = 2
  config.mesh.data = -1
  if 'demo' in flags:
    # The real two-tower structure, narrower and on small images. Two changes
    # from the paper's recipe make it learn in minutes instead of days: He
    # initialisation (the paper's N(0, 0.01) barely moves in 1,500 steps of
    # this narrow net) and no dropout (a regulariser for 90 epochs of
    # ImageNet, it halves the accuracy reached in this short run).
    config.dataset = 'shapes10'
    config.image_size = DEMO_IMAGE_SIZE
    config.model.width = DEMO_WIDTH
    config.model.num_classes = 10
    config.model.init = 'he'
    config.model.dropout_rate = 0.0
    config.batch_size = 64
    config.num_train_steps = 1500
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    config.log_every_steps = 20
    config.optimizer.learning_rate = 0.02
    config.optimizer.schedule = 'cosine'
  return config
