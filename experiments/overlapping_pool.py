"""Sec. 3.4: does overlapping max-pooling (3x3, stride 2) beat non-overlapping (2x2, stride 2)?

The paper (on ImageNet): overlapping pooling lowers the top-1 and top-5 error
rates by 0.4% and 0.3%. Here in the four-layer CIFAR-10 CNN.

    python -m alexnet_jax.sweep --sweep=experiments/overlapping_pool.py --workdir=DIR [--set dataset=image_folder --set data_dir=FOLDER]

Full length: all of CIFAR-10 (50,000 training, 10,000 test images), 30
epochs, 3 seeds, in both setups (paper-era: N(0, 0.01) weights, inputs minus
the mean pixel; modern: He initialisation, standardised inputs). All five on
one GPU: experiments/all_on_one_gpu.py. The committed runs are in
experiments/results/overlapping_pool/ (each row of docs/ablations.md's table says
their length, seeds and hardware).
"""

PAPER = 'Sec. 3.4 (ImageNet): overlapping pooling (3x3, stride 2) lowers top-1 and top-5 error by 0.4% and 0.3% against 2x2, stride 2'
CLAIM = {'factor': 'model.overlapping_pool', 'better': True,
         'metric': 'eval_top1', 'figure': '-0.4% top-1 (ImageNet)'}
BASE = 'configs/cifar10.py:cifar_4layer'
OVERRIDES = {'num_epochs': 30, 'log_every_steps': 50,
             'eval_every_steps': 1950, 'checkpoint_every_steps': 390}
PRODUCT = {'model.overlapping_pool': [True, False]}
# The two setups (Fig. 1 showed that the answers depend on them).
ZIP = {'model.init': ['paper', 'he'],
       'input.normalization': ['mean_pixel', 'standardize']}
SEEDS = [0, 1, 2]
