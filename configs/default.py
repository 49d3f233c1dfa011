"""The paper's recipe (Krizhevsky, Sutskever and Hinton, NIPS 2012, Sec. 5).

    python -m alexnet_jax.main --config=configs/default.py --workdir=DIR

Batch 128, SGD with momentum 0.9 and weight decay 5e-4, learning rate 0.01
divided by 10 when the validation error stops improving (at most three times),
about 90 epochs of ImageNet (ILSVRC-2012, TFDS `imagenet2012`, manual download).
This file is the single home of every setting; `two_gpu.py` and `one_gpu.py`
only change the mesh. Not yet run to completion on ImageNet by this project:
the paper reports 40.7% top-1 / 18.2% top-5 error for one CNN (Table 2).

Argument string (`configs/default.py:ARG`): `tiny` shrinks the network and the
images to the test size (width 1/16, 67x67 pixels) on the built-in dataset.
"""

import ml_collections

# The tiny size used by tests, next to the real one (227x227, width 1).
TINY_IMAGE_SIZE = 67  # The smallest image the 2012 layer stack accepts.
TINY_WIDTH = 1 / 16


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  # Data (alexnet_jax/data/). `dataset` is a TFDS name (`imagenet2012`,
  # `cifar10`, ...), `shapes10` (built in, no download) or `image_folder`
  # (then `data_dir` is the folder holding `split/class/image.jpg`).
  config.dataset = 'imagenet2012'
  config.data_dir = ''  # TFDS data dir; '' means TFDS's default.
  config.train_split = 'train'
  config.eval_split = 'validation'
  config.image_size = 227  # The paper says 224; 55 = (227 - 11) / 4 + 1 needs 227.
  config.input = ml_collections.ConfigDict()
  config.input.random_crop = True  # Sec. 4.1: random crops of the resized image.
  config.input.random_flip = True  # Sec. 4.1: horizontal reflections.
  config.input.resize_ratio = 256 / 224  # Sec. 2: shorter side to 256 for 224 crops.
  config.input.shuffle_buffer = 10_000
  config.input.skip_bad_images = False  # Folder datasets: skip (and count) unreadable files.
  config.input.shapes_train_examples = 10_000  # Built-in dataset sizes.
  config.input.shapes_eval_examples = 2_000
  # Sec. 4.1's colour shift and Sec. 2's normalisation (data/preprocess.py).
  config.input.pca_lighting = 0.0  # Std of a_i in Sec. 4.1's PCA colour shift (paper: 0.1); 0 = off.
  config.input.normalization = 'standardize'  # 'standardize' | 'mean_pixel' (Sec. 2: mean pixel only).
  config.input.stats_file = ''  # JSON of `python -m alexnet_jax.data_stats`; '' = ImageNet's values.

  # Schedule, counted in optimiser steps of `batch_size` images (global batch).
  config.batch_size = 128
  config.num_epochs = 90
  config.num_train_steps = -1  # > 0 overrides num_epochs.
  config.eval_every_steps = 5_000
  config.checkpoint_every_steps = 5_000
  config.log_every_steps = 100
  config.keep_checkpoints = 3
  config.seed = 0
  config.dtype = 'float32'  # Compute dtype; parameters stay float32.
  # How convolutions' kernel gradients are computed (core/convolution.py): 'xla'
  # (autodiff), 'patches' (matrix products, faster on XLA's CPU backend) or
  # 'auto' (patches on CPU, xla elsewhere); the same gradients either way, so
  # it may change on resume.
  config.conv_kernel_grad = 'auto'

  # Sec. 5: SGD, momentum 0.9, weight decay 5e-4, lr 0.01 divided by 10 on a
  # validation plateau, three times at most.
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 0.01
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.optimizer.schedule = 'plateau'  # 'plateau' | 'step' | 'cosine' | 'constant'
  config.optimizer.decay_factor = 0.1
  config.optimizer.max_decays = 3  # plateau: at most three divisions.
  config.optimizer.plateau_patience = 1  # plateau: evaluations without improvement.
  config.optimizer.step_every_epochs = 30.0  # step: divide every this many epochs.
  config.optimizer.warmup_epochs = 0.0  # cosine: linear warm-up.

  # The network (core/network.py). Variants: `two_tower` (the paper, Fig. 2),
  # `one_tower` (the 1-GPU comparison net, Sec. 3.2 footnote 2) and `owt`
  # (torchvision's single-tower "one weird trick" net).
  config.model = ml_collections.ConfigDict()
  config.model.variant = 'two_tower'
  config.model.lrn = True  # Sec. 3.3.
  config.model.lrn_convention = 'paper'  # 'paper' (= TensorFlow) or 'caffe' (alpha / n).
  config.model.overlapping_pool = True  # Sec. 3.4: 3x3 stride 2; False: 2x2 stride 2.
  config.model.activation = 'relu'  # Sec. 3.1; 'tanh' for the saturating comparison.
  config.model.dropout_rate = 0.5  # Sec. 4.2, fc6 and fc7.
  config.model.width = 1.0  # Multiplies every layer's width.
  config.model.num_classes = 1000
  config.model.init = 'paper'  # 'paper' (Sec. 5: N(0, 0.01), some biases 1) or 'he'.
  # Forms of the same function, for speed only (same outputs and gradients,
  # tests/core/test_forms.py). LRN's 5-channel sum: 'window' (reduce_window)
  # or 'banded' (a matrix product). Max-pool's backward: 'xla'
  # (select-and-scatter) or 'slices' (strided slices, first maximum wins as
  # in XLA). Towers on one device: 'separate' convolutions, one 'grouped'
  # (feature_group_count=2) or one with 'block_diagonal' kernels. conv1's 3
  # input channels padded to 4 with zeros.
  config.model.lrn_sum = 'window'
  config.model.pool_grad = 'xla'
  config.model.tower_conv = 'separate'
  config.model.pad_conv1_channels = False

  # The device mesh: `model` splits the towers (2 = one tower per device, as
  # in 2012), `data` splits the batch; -1 takes all devices left.
  # `two_gpu.py` is this recipe split as in 2012; here every device holds
  # both towers and takes a slice of the batch.
  # A strategy is the name of a rules table in core/parallel.py's STRATEGIES (logical
  # axis -> mesh axis): 'towers' (2012, mesh.model = 2), 'data', 'hybrid'
  # (Krizhevsky 2014: conv data parallel, fc model parallel, mesh.model = 1)
  # or 'fsdp'. `sharding_rules` replaces the table, e.g.
  # 'batch=data,tower=model,fc_batch=data,fc_units=,fc_in=' (empty: not split).
  config.strategy = 'data'
  config.sharding_rules = ''
  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1
  config.mesh.model = 1

  # Robustness (run/rundir.py, run/supervision.py). A resume that changes what the run means
  # (dataset, model.*, batch_size, seed, ...) is refused unless this is True;
  # the change is then recorded in WORKDIR/config_history.jsonl.
  config.allow_config_change = False
  # Several processes (jax.distributed), in seconds: how long to wait for
  # every process to join, after how long a silent process counts as lost,
  # and how long processes wait for each other at exit (generous: a slow
  # process finishing its last evaluation is not a lost one).
  config.distributed = ml_collections.ConfigDict()
  config.distributed.initialization_timeout = 120
  config.distributed.heartbeat_timeout = 20
  config.distributed.shutdown_timeout = 300

  if arg:
    for flag in arg.split(','):
      if flag == 'tiny':
        config.dataset = 'shapes10'
        config.eval_split = 'validation'
        config.image_size = TINY_IMAGE_SIZE
        config.model.width = TINY_WIDTH
        config.model.num_classes = 10
        config.batch_size = 8
        config.num_train_steps = 4
        config.eval_every_steps = 2
        config.checkpoint_every_steps = 2
        config.log_every_steps = 1
        config.input.shapes_train_examples = 64
        config.input.shapes_eval_examples = 16
      else:
        raise ValueError(f'Unknown config argument {flag!r}; known: tiny.')
  return config
