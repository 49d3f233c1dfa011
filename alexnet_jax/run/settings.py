"""The config resolved once: the ConfigDict of configs/ as typed settings.

An entry point calls `Settings.from_config(config)` once; the layers below
take the typed parts (`model`, `optimizer`, `data`, `mesh`, `rules`, `run`),
never the ConfigDict. The strategy's rules table is derived here and handed
down. `resolved` keeps the config as config.json records it, for the
workdir's history and the comparisons of a resume and of several processes.
"""

import dataclasses
import json

import ml_collections

from alexnet_jax.core import parallel
from alexnet_jax.core.network import ModelConfig
from alexnet_jax.core.optim import OptimizerConfig
from alexnet_jax.data.settings import DataConfig
from alexnet_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """How long a run is and what it does along the way (configs/default.py)."""
  num_epochs: float
  num_train_steps: int  # > 0 overrides num_epochs.
  eval_every_steps: int
  checkpoint_every_steps: int
  log_every_steps: int
  keep_checkpoints: int
  allow_config_change: bool
  # jax.distributed, in seconds (`distributed.*`).
  initialization_timeout: int
  heartbeat_timeout: int
  shutdown_timeout: int


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything a command needs from its config, typed."""
  model: ModelConfig
  optimizer: OptimizerConfig
  data: DataConfig
  mesh: parallel.MeshConfig
  strategy: str
  sharding_rules: str  # '' or the table given instead of the strategy's.
  rules: parallel.Rules  # The one table every layer below uses.
  seed: int
  run: RunConfig
  resolved: dict = dataclasses.field(compare=False, repr=False)

  @property
  def rules_source(self) -> str:
    """Where the rules came from, as a user wrote it (for messages)."""
    if self.sharding_rules:
      return f'sharding_rules={self.sharding_rules!r}'
    return f'strategy={self.strategy}'

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'Settings':
    """UserError for a strategy or rules table that does not exist; every
    other value is checked against the devices by run/validation.py."""
    m, o, i, d = config.model, config.optimizer, config.input, config.distributed
    return cls(
        model=ModelConfig(
            variant=str(m.variant), lrn=bool(m.lrn),
            lrn_convention=str(m.lrn_convention),
            overlapping_pool=bool(m.overlapping_pool),
            activation=str(m.activation), dropout_rate=float(m.dropout_rate),
            width=float(m.width), num_classes=int(m.num_classes),
            init=str(m.init), image_size=int(config.image_size),
            dtype=str(config.dtype),
            conv_kernel_grad=str(config.conv_kernel_grad),
            lrn_sum=str(m.lrn_sum), pool_grad=str(m.pool_grad),
            tower_conv=str(m.tower_conv),
            pad_conv1_channels=bool(m.pad_conv1_channels)),
        optimizer=OptimizerConfig(
            learning_rate=float(o.learning_rate), momentum=float(o.momentum),
            weight_decay=float(o.weight_decay), schedule=str(o.schedule),
            decay_factor=float(o.decay_factor), max_decays=int(o.max_decays),
            plateau_patience=int(o.plateau_patience),
            step_every_epochs=float(o.step_every_epochs),
            warmup_epochs=float(o.warmup_epochs)),
        data=DataConfig(
            dataset=str(config.dataset), data_dir=str(config.data_dir),
            train_split=str(config.train_split),
            eval_split=str(config.eval_split),
            image_size=int(config.image_size),
            batch_size=int(config.batch_size),
            random_crop=bool(i.random_crop), random_flip=bool(i.random_flip),
            resize_ratio=float(i.resize_ratio),
            shuffle_buffer=int(i.shuffle_buffer),
            skip_bad_images=bool(i.skip_bad_images),
            shapes_train_examples=int(i.shapes_train_examples),
            shapes_eval_examples=int(i.shapes_eval_examples),
            pca_lighting=float(i.pca_lighting),
            normalization=str(i.normalization), stats_file=str(i.stats_file)),
        mesh=parallel.MeshConfig(data=int(config.mesh.data),
                                 model=int(config.mesh.model)),
        strategy=str(config.strategy),
        sharding_rules=str(config.sharding_rules),
        rules=resolve_rules(str(config.strategy), str(config.sharding_rules)),
        seed=int(config.seed),
        run=RunConfig(
            num_epochs=float(config.num_epochs),
            num_train_steps=int(config.num_train_steps),
            eval_every_steps=int(config.eval_every_steps),
            checkpoint_every_steps=int(config.checkpoint_every_steps),
            log_every_steps=int(config.log_every_steps),
            keep_checkpoints=int(config.keep_checkpoints),
            allow_config_change=bool(config.allow_config_change),
            initialization_timeout=int(d.initialization_timeout),
            heartbeat_timeout=int(d.heartbeat_timeout),
            shutdown_timeout=int(d.shutdown_timeout)),
        resolved=json.loads(config.to_json_best_effort()))


def resolve_rules(strategy: str, sharding_rules: str) -> parallel.Rules:
  """`sharding_rules` if given, else the strategy's table; UserError if neither exists."""
  if sharding_rules:
    try:
      return parallel.parse_rules(sharding_rules)
    except ValueError as e:
      raise UserError(
          f'sharding_rules={sharding_rules!r}: {e}. Give one'
          f' logical=mesh_axis pair per logical axis'
          f' ({", ".join(parallel.LOGICAL_AXES)}), an empty mesh axis for'
          ' "not split", e.g. sharding_rules="batch=data,tower=model,'
          'fc_batch=data,fc_units=,fc_in=".') from None
  if strategy not in parallel.STRATEGIES:
    raise UserError(f'Unknown strategy {strategy!r}; choose one of'
                    f' {", ".join(parallel.STRATEGIES)}, or give your own'
                    ' table as --config.sharding_rules.')
  return parallel.STRATEGIES[strategy]


def with_strategy(settings: Settings, strategy: str, *, data: int, model: int
                  ) -> Settings:
  """`settings` placed by `strategy`'s own table on a data x model mesh."""
  return dataclasses.replace(
      settings, strategy=strategy, sharding_rules='',
      rules=resolve_rules(strategy, ''), mesh=parallel.MeshConfig(data, model))
