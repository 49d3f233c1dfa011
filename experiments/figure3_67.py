"""Figure 3 at the smallest size that keeps the 2012 conv1 (11x11, stride 4).

The paper's own layer stack (configs/default.py: 48 conv1 kernels of
11x11x3 per tower) on CIFAR-10 resized to 67x67, the smallest input that
stack accepts; for a GPU (20 M parameters at width 1: fc6 reads a 1x1 map). Read with
`kernels.picture_sweep(DIR)`, as figure3.py.

    python -m alexnet_jax.sweep --sweep=experiments/figure3_67.py --workdir=DIR [--set dataset=image_folder --set data_dir=FOLDER]
"""

PAPER = 'Sec. 6.1, Fig. 3 (ImageNet): one tower\'s conv1 kernels largely colour-agnostic, the other\'s largely colour-specific, in every run'
BASE = 'configs/cifar10.py:cifar_two_tower'
OVERRIDES = {'num_epochs': 30, 'log_every_steps': 50,
             'eval_every_steps': 1950, 'checkpoint_every_steps': 390,
             'image_size': 67, 'model.init': 'he', 'strategy': 'data',
             'mesh.model': 1, 'mesh.data': 1}
PRODUCT = {'model.variant': ['two_tower', 'one_tower']}
SEEDS = [0, 1, 2]
