"""Sec. 4.2: what does dropout (p = 0.5 in fc6 and fc7) do to the test error?

The paper (on ImageNet): without dropout the network overfits substantially;
dropout roughly doubles the iterations needed to converge.

    python -m alexnet_jax.sweep --sweep=experiments/dropout.py --workdir=/work/sweeps/dropout --parallel=2

Measured 2026-11-26 on the shared 2-core AMD EPYC CPU (load average 12-17):
6 min wall for the 4 points, 150 steps of 32 images each (4,800 images of the
10,000-image `small` split), cifar_two_tower at width 0.5, He initialisation.
Test error on 2,000 test images, mean ± std over seeds 0, 1: dropout 0.5
73.5 ± 2.7%, no dropout 67.4 ± 0.5% (the dropout points equal, to the last
digit, the two-tower points of towers.py: the same config and seeds). Half
an epoch is long before any overfitting, so dropout only slows learning here,
as the paper's "roughly doubles the number of iterations" leads one to expect;
its benefit is not reachable at this length.
Table and curves: experiments/results/dropout/.
"""

BASE = 'configs/cifar10.py:cifar_two_tower,small'
OVERRIDES = {
    'batch_size': 32, 'num_train_steps': 150, 'log_every_steps': 10,
    'eval_every_steps': 75, 'checkpoint_every_steps': 75,
    'model.init': 'he', 'model.width': 0.5,
    'strategy': 'data', 'mesh.model': 1, 'mesh.data': 1,
}
PRODUCT = {'model.dropout_rate': [0.5, 0.0]}
SEEDS = [0, 1]
