"""Figure 1 (Sec. 3.1): how much faster does the four-layer CNN train with ReLUs than with tanh?

The paper: ReLUs reach 25% training error on CIFAR-10 six times faster than
tanh units, each with its best learning rate, no regularisation. Run in two
setups: paper-era (weights N(0, 0.01), zero biases: model.init=paper; inputs
minus a mean pixel only, Sec. 2: input.normalization=mean_pixel, ILSVRC-2012's
mean pixel as no stats file is given) and modern (He initialisation, inputs
standardised per channel). No weight decay, no crops or flips, a constant
rate from the grid {0.01, 0.04} for each activation, batch 128 as Sec. 5.

    python -m alexnet_jax.sweep --sweep=experiments/relu_tanh.py --workdir=/work/sweeps2/relu_tanh --parallel=2

The measured runs (command, hardware, date, the table and the curves) are
in experiments/results/relu_tanh/.
"""

PAPER = 'Sec. 3.1, Fig. 1: the four-layer CNN reaches 25% CIFAR-10 training error six times faster with ReLUs than with tanh units'
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
