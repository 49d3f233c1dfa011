"""Sec. 3.3 on a CPU: LRN or not in the four-layer CNN, full CIFAR-10, 10 epochs, 2 seeds.

The paper: 13% test error without LRN, 11% with it, on CIFAR-10. The
full-length sweep (30 epochs, 3 seeds, two setups) is experiments/lrn.py;
this is the length a 2-core CPU finishes in the background. Run as:

    python -m alexnet_jax.sweep --sweep=experiments/lrn_cpu.py --workdir=DIR \
        --set dataset=image_folder --set data_dir=CIFAR10_FOLDER

(the measured run, at commit 9a83a7e, read the JPEG copy of CIFAR-10 that
configs/cifar10.py then unpacked itself; experiments/results/lrn_cpu/run.json).
"""

PAPER = "Sec. 3.3: the four-layer CNN's CIFAR-10 test error, 13% without LRN, 11% with it"
CLAIM = {'factor': 'model.lrn', 'better': True, 'metric': 'eval_top1',
         'figure': '11% with LRN, 13% without (test error)',
         'paper_values': {True: 0.11, False: 0.13}}
BASE = 'configs/cifar10.py:cifar_4layer'
OVERRIDES = {
    'num_epochs': 10, 'log_every_steps': 50,
    'eval_every_steps': 390, 'checkpoint_every_steps': 390,
    'model.init': 'he',
}
PRODUCT = {'model.lrn': [True, False]}
SEEDS = [0, 1]
