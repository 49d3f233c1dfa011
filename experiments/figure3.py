"""Figure 3 (Sec. 6.1): do the two towers specialise, one colour-agnostic, one colour-specific?

The paper (ImageNet, "during every run"): GPU 1's conv1 kernels are largely
colour-agnostic, GPU 2's largely colour-specific. Here the CIFAR-10
two-tower net and its one-tower counterpart (the control: its kernels split
into two halves at random), trained as long as the other sweeps, 3 seeds.
`kernels.picture_sweep(DIR)` (alexnet_jax/tools/pictures/kernels.py, run by
experiments/all_on_one_gpu.py after this sweep) draws conv1 per tower for
every seed and writes each tower's colour selectivity with its spread over
seeds (DIR/figure3.json, DIR/figure3.png). Both towers train on one
device: which device holds a tower does not change what the net computes
(tests/core check the split against one device), and the towers still meet
only where Fig. 2 says.

    python -m alexnet_jax.sweep --sweep=experiments/figure3.py --workdir=DIR [--set dataset=image_folder --set data_dir=FOLDER]
"""

PAPER = 'Sec. 6.1, Fig. 3 (ImageNet): one tower\'s conv1 kernels largely colour-agnostic, the other\'s largely colour-specific, in every run'
BASE = 'configs/cifar10.py:cifar_two_tower'
OVERRIDES = {'num_epochs': 30, 'log_every_steps': 50,
             'eval_every_steps': 1950, 'checkpoint_every_steps': 390,
             'model.init': 'he', 'strategy': 'data', 'mesh.model': 1,
             'mesh.data': 1}
PRODUCT = {'model.variant': ['cifar_two_tower', 'cifar_one_tower']}
SEEDS = [0, 1, 2]
