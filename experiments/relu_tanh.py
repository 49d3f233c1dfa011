"""Figure 1 (Sec. 3.1): how much faster does the four-layer CNN train with ReLUs than with tanh?

The paper: ReLUs reach 25% training error on CIFAR-10 six times faster than
tanh units, each with its best learning rate, no regularisation. Two setups:
paper-era (weights N(0, 0.01), zero biases: model.init=paper; inputs minus a
mean pixel only, Sec. 2: input.normalization=mean_pixel, ILSVRC-2012's mean
pixel as no stats file is given) and modern (He initialisation, inputs
standardised per channel). No weight decay, no crops or flips, a constant
rate from the grid {0.01, 0.04} for each activation, batch 128 as Sec. 5.

    python -m alexnet_jax.sweep --sweep=experiments/relu_tanh.py --workdir=DIR [--set dataset=image_folder --set data_dir=FOLDER]

Full length: all of CIFAR-10 (50,000 training, 10,000 test images), 30
epochs, 3 seeds, in both setups (paper-era: N(0, 0.01) weights, inputs minus
the mean pixel; modern: He initialisation, standardised inputs). All five on
one GPU: experiments/all_on_one_gpu.py. The committed runs are in
experiments/results/relu_tanh/ (each row of docs/ablations.md's table says
their length, seeds and hardware).
"""

PAPER = 'Sec. 3.1, Fig. 1: the four-layer CNN reaches 25% CIFAR-10 training error six times faster with ReLUs than with tanh units'
CLAIM = {'factor': 'model.activation', 'better': 'relu',
         'metric': 'steps_to_target', 'best_over': 'optimizer.learning_rate',
         'figure': '6x fewer epochs to 25% training error'}
BASE = 'configs/cifar10.py:cifar_4layer'
OVERRIDES = {
    'num_epochs': 30, 'log_every_steps': 50,
    'eval_every_steps': 1950, 'checkpoint_every_steps': 390,
    'optimizer.schedule': 'constant', 'optimizer.weight_decay': 0.0,
    'input.random_crop': False, 'input.random_flip': False,
}
# The two setups (Fig. 1 showed that the answers depend on them).
ZIP = {'model.init': ['paper', 'he'],
       'input.normalization': ['mean_pixel', 'standardize']}
PRODUCT = {'model.activation': ['relu', 'tanh'],
           'optimizer.learning_rate': [0.01, 0.04]}
SEEDS = [0, 1, 2]
TARGET_TRAIN_ERROR = 0.25
