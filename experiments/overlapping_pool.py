"""Sec. 3.4: does overlapping max-pooling (3x3, stride 2) beat non-overlapping (2x2, stride 2)?

The paper (on ImageNet): overlapping pooling lowers the top-1 and top-5 error
rates by 0.4% and 0.3%. Here in the four-layer CIFAR-10 CNN.

    python -m alexnet_jax.sweep --sweep=experiments/overlapping_pool.py --workdir=/work/sweeps/overlapping_pool --parallel=2

The measured runs (command, hardware, date, the table and the curves) are
in experiments/results/overlapping_pool/.
"""

PAPER = 'Sec. 3.4 (ImageNet): overlapping pooling (3x3, stride 2) lowers top-1 and top-5 error by 0.4% and 0.3% against 2x2, stride 2'
BASE = 'configs/cifar10.py:cifar_4layer,small'
OVERRIDES = {
    'batch_size': 32, 'num_train_steps': 150, 'log_every_steps': 10,
    'eval_every_steps': 75, 'checkpoint_every_steps': 75,
    'model.init': 'he',
}
PRODUCT = {'model.overlapping_pool': [True, False]}
SEEDS = [0, 1]
