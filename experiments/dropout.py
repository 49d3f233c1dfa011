"""Sec. 4.2: what does dropout (p = 0.5 in fc6 and fc7) do to the test error?

The paper (on ImageNet): without dropout the network overfits substantially;
dropout roughly doubles the iterations needed to converge.

    python -m alexnet_jax.sweep --sweep=experiments/dropout.py --workdir=/work/sweeps/dropout --parallel=2

The measured runs (command, hardware, date, the table and the curves) are
in experiments/results/dropout/.
"""

PAPER = 'Sec. 4.2 (ImageNet): without dropout the network overfits substantially; dropout roughly doubles the iterations to converge'
BASE = 'configs/cifar10.py:cifar_two_tower,small'
OVERRIDES = {
    'batch_size': 32, 'num_train_steps': 150, 'log_every_steps': 10,
    'eval_every_steps': 75, 'checkpoint_every_steps': 75,
    'model.init': 'he', 'model.width': 0.5,
    'strategy': 'data', 'mesh.model': 1, 'mesh.data': 1,
}
PRODUCT = {'model.dropout_rate': [0.5, 0.0]}
SEEDS = [0, 1]
