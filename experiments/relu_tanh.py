"""Figure 1 (Sec. 3.1): how much faster does the four-layer CNN train with ReLUs than with tanh?

The paper: ReLUs reach 25% training error on CIFAR-10 six times faster than
tanh units, each with its best learning rate, no regularisation. Run in two
setups: paper-era (weights N(0, 0.01), zero biases: model.init=paper) and
modern (He initialisation: model.init=he); inputs are standardised with fixed
per-channel statistics in both (the only normalisation the input pipeline
offered when this ran). No weight decay, no crops or flips, constant rate.

    python -m alexnet_jax.sweep --sweep=experiments/relu_tanh.py --workdir=/work/sweeps/relu_tanh --parallel=2

Result: see experiments/results/relu_tanh/ (filled in when measured).
"""

BASE = 'configs/cifar10.py:cifar_4layer,small'
OVERRIDES = {
    'batch_size': 32, 'num_train_steps': 150, 'log_every_steps': 10,
    'eval_every_steps': 75, 'checkpoint_every_steps': 75,
    'optimizer.schedule': 'constant', 'optimizer.learning_rate': 0.01,
    'optimizer.weight_decay': 0.0,
    'input.random_crop': False, 'input.random_flip': False,
}
ZIP = {'model.init': ['paper', 'he']}
PRODUCT = {'model.activation': ['relu', 'tanh']}
SEEDS = [0, 1]
TARGET_TRAIN_ERROR = 0.75
