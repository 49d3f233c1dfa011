"""Sec. 3.2: are two towers better than one tower of the same total width?

The paper (on ImageNet): the two-GPU net has 1.7% lower top-1 and 1.2% lower
top-5 error than a one-GPU net with half the kernels in most layers. Here the
one-tower net has the same total width as the two towers together
(cifar_one_tower against cifar_two_tower, both at model.width=0.5); only the
connectivity differs (conv2, conv4, conv5 read their own tower). Both towers
run on one device in both points: the split over devices is placement, not
the question (it computes the same function).

    python -m alexnet_jax.sweep --sweep=experiments/towers.py --workdir=DIR [--set dataset=image_folder --set data_dir=FOLDER]

Full length: all of CIFAR-10 (50,000 training, 10,000 test images), 30
epochs, 3 seeds, in both setups (paper-era: N(0, 0.01) weights, inputs minus
the mean pixel; modern: He initialisation, standardised inputs). All five on
one GPU: experiments/all_on_one_gpu.py. The committed runs are in
experiments/results/towers/ (each row of docs/ablations.md's table says
their length, seeds and hardware).
"""

PAPER = 'Sec. 3.2 (ImageNet): two towers have 1.7% lower top-1 and 1.2% lower top-5 error than a one-GPU net with half the kernels'
CLAIM = {'factor': 'model.variant', 'better': 'cifar_two_tower',
         'metric': 'eval_top1', 'figure': '-1.7% top-1 (ImageNet)'}
BASE = 'configs/cifar10.py:cifar_two_tower'
OVERRIDES = {'num_epochs': 30, 'log_every_steps': 50,
             'eval_every_steps': 1950, 'checkpoint_every_steps': 390,
             'model.width': 0.5, 'strategy': 'data', 'mesh.model': 1,
             'mesh.data': 1}
PRODUCT = {'model.variant': ['cifar_two_tower', 'cifar_one_tower']}
# The two setups (Fig. 1 showed that the answers depend on them).
ZIP = {'model.init': ['paper', 'he'],
       'input.normalization': ['mean_pixel', 'standardize']}
SEEDS = [0, 1, 2]
