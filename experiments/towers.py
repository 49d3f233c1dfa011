"""Sec. 3.2: are two towers better than one tower of the same total width?

The paper (on ImageNet): the two-GPU net has 1.7% lower top-1 and 1.2% lower
top-5 error than a one-GPU net with half the kernels in most layers. Here the
one-tower net has the same total width as the two towers together
(cifar_one_tower against cifar_two_tower, both at model.width=0.5); only the
connectivity differs (conv2, conv4, conv5 read their own tower).

    python -m alexnet_jax.sweep --sweep=experiments/towers.py --workdir=/work/sweeps/towers --parallel=2

Measured 2026-11-26 on the shared 2-core AMD EPYC CPU (load average 12-17):
8 min wall for the 4 points, 150 steps of 32 images each (4,800 images of the
10,000-image `small` split), He initialisation, dropout 0.5, the paper's
recipe otherwise. Test error on 2,000 test images, mean ± std over seeds 0, 1:
two towers 73.5 ± 2.7% (top-5 21.5 ± 0.9%), one tower 78.2 ± 4.7% (top-5
23.2 ± 1.9%). Two towers ahead by 4.7 points top-1, within about one standard
deviation of the one-tower runs: the direction of the paper's 1.7%, not
established at this length.
Table and curves: experiments/results/towers/.
"""

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
