"""Figure 1 (Sec. 3.1): how much faster does the four-layer CNN train with ReLUs than with tanh?

The paper: ReLUs reach 25% training error on CIFAR-10 six times faster than
tanh units, each with its best learning rate, no regularisation. Run in two
setups: paper-era (weights N(0, 0.01), zero biases: model.init=paper; inputs
minus a mean pixel only, Sec. 2: input.normalization=mean_pixel, ILSVRC-2012's
mean pixel as no stats file is given) and modern (He initialisation, inputs
standardised per channel). No weight decay, no crops or flips, one constant
rate (0.01) for both activations: no time here for a per-activation grid.

    python -m alexnet_jax.sweep --sweep=experiments/relu_tanh.py --workdir=/work/sweeps/relu_tanh --parallel=2

Measured 2026-11-26 on the shared 2-core AMD EPYC CPU (load average 12-17),
27 min wall for the 8 points, 150 steps of 32 images each (4,800 images,
about half an epoch of the 10,000-image `small` split; test error on its
2,000 test images). Steps to 80% training error (the mean of three logging
windows of 10 steps; 25% is far out of reach here), mean ± std over seeds 0, 1:
paper-era ReLU 55 ± 7, tanh 85 ± 7 (ReLU 1.5x faster); modern ReLU 40 ± 0,
tanh 45 ± 7 (1.1x). Final test error: paper-era ReLU 75.5 ± 1.1%, tanh
71.2 ± 1.3%; modern 63.9 ± 0.2% and 62.2 ± 2.1%. The gap, such as it is,
shows only in the paper-era setup, and far smaller than six times.
Table and curves: experiments/results/relu_tanh/.
"""

BASE = 'configs/cifar10.py:cifar_4layer,small'
OVERRIDES = {
    'batch_size': 32, 'num_train_steps': 150, 'log_every_steps': 10,
    'eval_every_steps': 75, 'checkpoint_every_steps': 75,
    'optimizer.schedule': 'constant', 'optimizer.learning_rate': 0.01,
    'optimizer.weight_decay': 0.0,
    'input.random_crop': False, 'input.random_flip': False,
}
ZIP = {'model.init': ['paper', 'he'],
       'input.normalization': ['mean_pixel', 'standardize']}
PRODUCT = {'model.activation': ['relu', 'tanh']}
SEEDS = [0, 1]
TARGET_TRAIN_ERROR = 0.80
