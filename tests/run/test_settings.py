"""The config resolved once: every setting of configs/default.py reaches the
typed settings, and the strategy's table is derived there."""

import dataclasses

import pytest

from alexnet_jax.core import parallel
from alexnet_jax.core.network import ModelConfig
from alexnet_jax.errors import UserError
from alexnet_jax.run import cli
from alexnet_jax.run.settings import Settings
from configs import default


def _given(settings, key):
  """One setting of the config as given (`resolved`), by its dotted key."""
  value = settings.resolved
  for part in key.split('.'):
    value = value[part]
  return value


def _changed(key, value):
  """Another value of the same type, one that resolves."""
  if key == 'strategy':
    return 'towers'
  if key == 'sharding_rules':
    return 'batch=data,tower=model,fc_batch=data,fc_units=,fc_in='
  if isinstance(value, bool):
    return not value
  if isinstance(value, int):
    return value + 3
  if isinstance(value, float):
    return value * 2 + 1
  return value + 'x'


@pytest.mark.parametrize('key', cli.config_keys(default.get_config()))
def test_every_setting_reaches_the_typed_settings(key):
  config = default.get_config()
  before = Settings.from_config(config)
  config.update_from_flattened_dict({key: _changed(key, _given(before, key))})
  after = Settings.from_config(config)
  assert after != before, key  # `resolved`, the record, is not compared.
  assert _given(after, key) != _given(before, key)


def test_model_config_defaults_are_the_papers_as_configs_say():
  assert ModelConfig() == Settings.from_config(default.get_config()).model


def test_the_rules_are_derived_once_from_the_strategy_or_the_table():
  config = default.get_config()
  config.strategy, config.mesh.model = 'towers', 2
  assert Settings.from_config(config).rules == parallel.STRATEGIES['towers']
  config.strategy = 'pipeline'
  with pytest.raises(UserError, match="Unknown strategy 'pipeline'"):
    Settings.from_config(config)
  config.sharding_rules = 'batch=data'  # Given, it replaces the strategy.
  with pytest.raises(UserError, match='no rule covers'):
    Settings.from_config(config)


def test_a_placement_is_another_strategy_on_another_mesh():
  from alexnet_jax.run.settings import with_strategy
  settings = Settings.from_config(default.get_config())
  placed = with_strategy(settings, 'hybrid', data=4, model=1)
  assert placed.rules == parallel.STRATEGIES['hybrid']
  assert placed.mesh == parallel.MeshConfig(4, 1)
  assert dataclasses.replace(placed, strategy=settings.strategy, rules=settings.rules,
                             mesh=settings.mesh) == settings
