"""Sec. 3.3: does local response normalisation lower the test error of the four-layer CNN?

The paper: 13% test error without LRN, 11% with it, on CIFAR-10.

    python -m alexnet_jax.sweep --sweep=experiments/lrn.py --workdir=/work/sweeps/lrn --parallel=2

Measured 2026-11-26 on the shared 2-core AMD EPYC CPU (load average 12-17):
7 min wall for the 4 points, 150 steps of 32 images each (4,800 images of the
10,000-image `small` split), He initialisation, the paper's recipe otherwise
(weight decay 5e-4, crops and flips, cosine decay from 0.01). Test error on
2,000 test images, mean ± std over seeds 0, 1: with LRN 63.0 ± 1.1%, without
71.3 ± 3.5%. LRN helps, by more than the paper's 2 points, at this very early
stage; with k=2 it also divides every activation by about 2^0.75, a change of
scale that this short run cannot tell apart from the normalisation itself.
Table and curves: experiments/results/lrn/.
"""

BASE = 'configs/cifar10.py:cifar_4layer,small'
OVERRIDES = {
    'batch_size': 32, 'num_train_steps': 150, 'log_every_steps': 10,
    'eval_every_steps': 75, 'checkpoint_every_steps': 75,
    'model.init': 'he',
}
PRODUCT = {'model.lrn': [True, False]}
SEEDS = [0, 1]
