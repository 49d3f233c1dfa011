"""Sec. 4.2: what does dropout (p = 0.5 in fc6 and fc7) do to the test error?

The paper (on ImageNet): without dropout the network overfits substantially;
dropout roughly doubles the iterations needed to converge.

    python -m alexnet_jax.sweep --sweep=experiments/dropout.py --workdir=DIR [--set dataset=image_folder --set data_dir=FOLDER]

Full length: all of CIFAR-10 (50,000 training, 10,000 test images), 30
epochs, 3 seeds, in both setups (paper-era: N(0, 0.01) weights, inputs minus
the mean pixel; modern: He initialisation, standardised inputs). All five on
one GPU: experiments/all_on_one_gpu.py. The committed runs are in
experiments/results/dropout/ (each row of docs/ablations.md's table says
their length, seeds and hardware).
"""

PAPER = 'Sec. 4.2 (ImageNet): without dropout the network overfits substantially; dropout roughly doubles the iterations to converge'
CLAIM = {'factor': 'model.dropout_rate', 'better': 0.5, 'metric': 'eval_top1',
         'figure': 'qualitative: less overfitting (ImageNet)'}
BASE = 'configs/cifar10.py:cifar_two_tower'
OVERRIDES = {'num_epochs': 30, 'log_every_steps': 50,
             'eval_every_steps': 1950, 'checkpoint_every_steps': 390,
             'model.width': 0.5, 'strategy': 'data', 'mesh.model': 1,
             'mesh.data': 1}
PRODUCT = {'model.dropout_rate': [0.5, 0.0]}
# The two setups (Fig. 1 showed that the answers depend on them).
ZIP = {'model.init': ['paper', 'he'],
       'input.normalization': ['mean_pixel', 'standardize']}
SEEDS = [0, 1, 2]
