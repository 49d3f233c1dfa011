"""Figure 1 (Sec. 3.1): how much faster does the four-layer CNN train with ReLUs than with tanh?

The paper: ReLUs reach 25% training error on CIFAR-10 six times faster than
tanh units, each with its best learning rate, no regularisation. Run in two
setups: paper-era (weights N(0, 0.01), zero biases: model.init=paper; inputs
minus a mean pixel only, Sec. 2: input.normalization=mean_pixel, ILSVRC-2012's
mean pixel as no stats file is given) and modern (He initialisation, inputs
standardised per channel). No weight decay, no crops or flips, a constant
rate from the grid {0.01, 0.04} for each activation, batch 128 as Sec. 5.

    python -m alexnet_jax.sweep --sweep=experiments/relu_tanh.py --workdir=/work/sweeps2/relu_tanh --parallel=2

Measured 2026-11-26 on the shared 2-core AMD EPYC CPU: 16 points of 300 steps
(38,400 images, 3.8 epochs of the 10,000-image `small` split; test error on
its 2,000 test images), 1 h 56 min wall under load (about 40 minutes idle).
25% training error is out of reach in 300 steps; the target is 60% (mean of
three logging windows of 10 steps). Steps to it, mean ± std over seeds 0, 1,
each activation at its best rate:
  paper-era: ReLU (0.01) 150 ± 28, tanh (0.04) 175 ± 7: ReLU 1.17x faster;
    ReLU at 0.04 stayed at chance (loss 2.303 throughout), tanh at 0.01 never
    reached 60%.
  modern: ReLU (0.01 and 0.04 alike) 105, tanh (0.04) 85 ± 7: tanh 1.24x
    faster, and its test error lowest of all (43.1 ± 1.0% against ReLU's
    48.0 ± 0.5%).
So the paper's gap shows, much smaller than six times, only in the paper-era
setup, where a small initialisation leaves tanh units near their linear,
small-gradient regime; with He initialisation and standardised inputs tanh
trains as fast or faster at this length. Table and curves:
experiments/results/relu_tanh/.
"""

BASE = 'configs/cifar10.py:cifar_4layer,small'
OVERRIDES = {
    'batch_size': 128, 'num_train_steps': 300, 'log_every_steps': 10,
    'eval_every_steps': 150, 'checkpoint_every_steps': 150,
    'optimizer.schedule': 'constant', 'optimizer.weight_decay': 0.0,
    'input.random_crop': False, 'input.random_flip': False,
}
ZIP = {'model.init': ['paper', 'he'],
       'input.normalization': ['mean_pixel', 'standardize']}
PRODUCT = {'model.activation': ['relu', 'tanh'],
           'optimizer.learning_rate': [0.01, 0.04]}
SEEDS = [0, 1]
TARGET_TRAIN_ERROR = 0.60
