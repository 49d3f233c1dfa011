"""Sec. 3.2: are two towers better than one tower of the same total width?

The paper (on ImageNet): the two-GPU net has 1.7% lower top-1 and 1.2% lower
top-5 error than a one-GPU net with half the kernels in most layers. Here the
one-tower net has the same total width as the two towers together
(cifar_one_tower against cifar_two_tower, both at model.width=0.5); only the
connectivity differs (conv2, conv4, conv5 read their own tower).

    python -m alexnet_jax.sweep --sweep=experiments/towers.py --workdir=/work/sweeps/towers --parallel=2

The measured runs (command, hardware, date, the table and the curves) are
in experiments/results/towers/.
"""

PAPER = 'Sec. 3.2 (ImageNet): two towers have 1.7% lower top-1 and 1.2% lower top-5 error than a one-GPU net with half the kernels'
BASE = 'configs/cifar10.py:cifar_two_tower,small'
OVERRIDES = {
    'batch_size': 32, 'num_train_steps': 150, 'log_every_steps': 10,
    'eval_every_steps': 75, 'checkpoint_every_steps': 75,
    'model.init': 'he', 'model.width': 0.5,
    # Both towers on one device in both points: the split is not the question.
    'strategy': 'data', 'mesh.model': 1, 'mesh.data': 1,
}
PRODUCT = {'model.variant': ['cifar_two_tower', 'cifar_one_tower']}
SEEDS = [0, 1]
