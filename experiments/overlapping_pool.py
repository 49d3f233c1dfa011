"""Sec. 3.4: does overlapping max-pooling (3x3, stride 2) beat non-overlapping (2x2, stride 2)?

The paper (on ImageNet): overlapping pooling lowers the top-1 and top-5 error
rates by 0.4% and 0.3%. Here in the four-layer CIFAR-10 CNN.

    python -m alexnet_jax.sweep --sweep=experiments/overlapping_pool.py --workdir=/work/sweeps/overlapping_pool --parallel=2

Measured 2026-11-26 on the shared 2-core AMD EPYC CPU: 4 min wall for the
4 points, 150 steps of
32 images each (4,800 images of the 10,000-image `small` split), He
initialisation, the paper's recipe otherwise. Test error on 2,000 test images,
mean ± std over seeds 0, 1: overlapping 63.0 ± 1.1% top-1, 13.8 ± 1.4% top-5;
non-overlapping 61.8 ± 0.0% and 14.9 ± 0.6%. Mixed and within the spread: no
effect resolvable at this length (the paper's is 0.4%). The overlapping
points equal, to the last digit, the LRN-on points of lrn.py (same config).
Table and curves: experiments/results/overlapping_pool/.
"""

BASE = 'configs/cifar10.py:cifar_4layer,small'
OVERRIDES = {
    'batch_size': 32, 'num_train_steps': 150, 'log_every_steps': 10,
    'eval_every_steps': 75, 'checkpoint_every_steps': 75,
    'model.init': 'he',
}
PRODUCT = {'model.overlapping_pool': [True, False]}
SEEDS = [0, 1]
