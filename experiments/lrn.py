"""Sec. 3.3: does local response normalisation lower the test error of the four-layer CNN?

The paper: 13% test error without LRN, 11% with it, on CIFAR-10.

    python -m alexnet_jax.sweep --sweep=experiments/lrn.py --workdir=DIR [--set dataset=image_folder --set data_dir=FOLDER]

Full length: all of CIFAR-10 (50,000 training, 10,000 test images), 30
epochs, 3 seeds, in both setups (paper-era: N(0, 0.01) weights, inputs minus
the mean pixel; modern: He initialisation, standardised inputs). All five on
one GPU: experiments/all_on_one_gpu.py. The committed runs are in
experiments/results/lrn/ (each row of docs/ablations.md's table says
their length, seeds and hardware).
"""

PAPER = "Sec. 3.3: the four-layer CNN's CIFAR-10 test error, 13% without LRN, 11% with it"
CLAIM = {'factor': 'model.lrn', 'better': True, 'metric': 'eval_top1',
         'figure': '11% with LRN, 13% without (test error)',
         'paper_values': {True: 0.11, False: 0.13}}
BASE = 'configs/cifar10.py:cifar_4layer'
OVERRIDES = {'num_epochs': 30, 'log_every_steps': 50,
             'eval_every_steps': 1950, 'checkpoint_every_steps': 390}
PRODUCT = {'model.lrn': [True, False]}
# The two setups (Fig. 1 showed that the answers depend on them).
ZIP = {'model.init': ['paper', 'he'],
       'input.normalization': ['mean_pixel', 'standardize']}
SEEDS = [0, 1, 2]
