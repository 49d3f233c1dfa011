"""Sec. 3.3: does local response normalisation lower the test error of the four-layer CNN?

The paper: 13% test error without LRN, 11% with it, on CIFAR-10.

    python -m alexnet_jax.sweep --sweep=experiments/lrn.py --workdir=/work/sweeps/lrn --parallel=2

The measured runs (command, hardware, date, the table and the curves) are
in experiments/results/lrn/.
"""

PAPER = "Sec. 3.3: the four-layer CNN's CIFAR-10 test error, 13% without LRN, 11% with it"
BASE = 'configs/cifar10.py:cifar_4layer,small'
OVERRIDES = {
    'batch_size': 32, 'num_train_steps': 150, 'log_every_steps': 10,
    'eval_every_steps': 75, 'checkpoint_every_steps': 75,
    'model.init': 'he',
}
PRODUCT = {'model.lrn': [True, False]}
SEEDS = [0, 1]
