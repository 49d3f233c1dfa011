"""Several seeds in one program (run/seeds.py): the same numbers as their
separate runs, each seed its own keys, and what it refuses."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.core import optim
from alexnet_jax.core import parallel
from alexnet_jax.core import train_state
from alexnet_jax.core import model
from alexnet_jax.errors import UserError
from alexnet_jax.run import checkpoint
from alexnet_jax.run import loop
from alexnet_jax.run import seeds
from alexnet_jax.run.settings import Settings
from alexnet_jax.tools.sweeps import runner
from clirun import read_metrics
from configs import default

pytestmark = pytest.mark.xdist_group('seeds')

# The tolerance of "the same numbers". Under vmap XLA's CPU backend runs the
# K seeds' convolutions and matrix products as one batched op, whose float32
# sums may be ordered differently than K separate ones: a rounding of about
# 1e-7 relative per op, a few ulps after four steps. The dropout masks, the
# data and every key are the same bits (a mask from another seed's key, or
# another seed's batch, would be off by 1e-2 or more).
RTOL, ATOL = 1e-5, 1e-6
TIMINGS = {'images_per_sec', 'input_wait_sec'}


def tiny(tmp_path, **overrides) -> Settings:
  config = default.get_config('tiny')
  config.data_dir = str(tmp_path / 'tfds')
  for key, value in overrides.items():
    node, *path = key.split('.')
    target = config if not path else config[node]
    target[path[-1] if path else node] = value
  return Settings.from_config(config)


@pytest.mark.slow(seconds=40)
def test_two_seeds_in_one_program_train_as_their_separate_runs(tmp_path):
  base = tiny(tmp_path)  # 4 steps, data parallel on the 2 host devices.
  separate = [tmp_path / f'alone-{s}' for s in (0, 1)]
  for seed, workdir in zip((0, 1), separate):
    loop.train_and_evaluate(seeds.seed_settings(base, seed), str(workdir))
  together = seeds.workdirs(str(tmp_path / 'vmap/seed={seed}'), [0, 1])
  # Two steps, then resumed to four: resume is part of what must agree.
  short = tiny(tmp_path, num_train_steps=2)
  seeds.train_and_evaluate([seeds.seed_settings(short, s) for s in (0, 1)], together)
  summaries = seeds.train_and_evaluate(
      [seeds.seed_settings(base, s) for s in (0, 1)], together)
  assert [s['resumed_from_step'] for s in summaries] == [2, 2]
  assert summaries[1]['seeds_in_program'] == [0, 1]

  for seed, (alone, vmapped) in enumerate(zip(separate, together)):
    config = json.loads((alone / 'config.json').read_text())
    assert json.loads((tmp_path / vmapped / 'config.json').read_text()) == config
    assert config['seed'] == seed
    # Rows alike but for the timings (the resumed run compiled at step 3).
    rows = [read_metrics(w) for w in (alone, vmapped)]
    assert [sorted(set(r) - TIMINGS) for r in rows[0]] == [
        sorted(set(r) - TIMINGS) for r in rows[1]]
    for key in ('train_loss', 'train_top1', 'learning_rate', 'eval_loss',
                'eval_top1', 'eval_top5'):
      got, want = ([r[key] for r in rs if key in r] for rs in (rows[1], rows[0]))
      np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=key)
    got, want = (checkpoint.restore_params(base, w).params
                 for w in (vmapped, alone))
    jax.tree.map(lambda g, w: np.testing.assert_allclose(
        np.asarray(g), np.asarray(w), rtol=RTOL, atol=ATOL), got, want)
  # And the seeds are not one another: their losses differ.
  losses = [[r['train_loss'] for r in read_metrics(w) if 'train_loss' in r]
            for w in together]
  assert not np.allclose(losses[0], losses[1], rtol=1e-3)
  # Seeds resume together: workdirs at different steps are refused, untouched.
  fresh = tmp_path / 'fresh'
  with pytest.raises(UserError, match=r'at different steps \(alone-0: 4, fresh: 0\)'):
    seeds.train_and_evaluate([seeds.seed_settings(base, s) for s in (0, 1)],
                             [separate[0], fresh])
  assert not (fresh / 'metrics.jsonl').exists()


@pytest.mark.slow(seconds=15)
def test_changing_one_seeds_key_changes_only_that_seed(tmp_path):
  settings = tiny(tmp_path, **{'mesh.data': 1})
  mesh = parallel.make_mesh(settings.mesh)
  opt, rules = settings.optimizer, settings.rules
  abstract = train_state.sharded_abstract_state(settings.model, opt, rules, mesh)
  step = seeds.make_train_step(
      model.graphdef(settings.model), opt, rules,
      optim.learning_rate_fn(opt, 1, 1), jax.tree.map(lambda x: x.sharding, abstract))
  batch = next(seeds.stacked_batches(settings.data, [0, 1], 0, 0, 1))
  state = seeds.stack([train_state.create_train_state(
      settings.model, opt, s, rules, mesh)[1] for s in (0, 1)])
  other = jax.random.key_data(model.prng_key(7))

  def run(changed: int | None):
    s = jax.tree.map(jnp.copy, state)
    if changed is not None:
      s = s.replace(rng=s.rng.at[changed].set(other))
    with jax.set_mesh(mesh):
      new, metrics = step(s, seeds.device_batch(batch, mesh, rules))
    return jax.device_get((new.params, metrics['train_loss']))

  (params, loss), *changed = run(None), run(0), run(1)
  for i, (new_params, new_loss) in enumerate(changed):
    kept = 1 - i
    assert new_loss[kept] == loss[kept]  # Bit for bit: the other seed is untouched.
    for a, b in zip(jax.tree.leaves(new_params), jax.tree.leaves(params)):
      np.testing.assert_array_equal(a[kept], b[kept])
    assert new_loss[i] != loss[i]  # Its own dropout masks changed.


def test_what_one_program_of_seeds_refuses(tmp_path):
  with pytest.raises(UserError, match=r'splits the towers over mesh.model=2'
                     r' devices, which it does not support'):
    seeds.check_supported(tiny(tmp_path, strategy='towers', **{'mesh.model': 2}), 2)
  with pytest.raises(UserError, match='uses strategy=fsdp'):
    seeds.check_supported(tiny(tmp_path, strategy='fsdp'), 1)
  seeds.check_supported(tiny(tmp_path, strategy='towers'), 1)  # On one device.
  with pytest.raises(UserError, match=r'has no \{seed\}'):
    seeds.workdirs(str(tmp_path / 'w'), [0, 1])
  with pytest.raises(UserError, match='give distinct integers'):
    seeds.parse_seeds(['0', '0'])
  assert seeds.parse_seeds(['2', '0']) == [2, 0]
  assert runner.VMAP_STRATEGIES == seeds.STRATEGIES  # The sweep runner's check.
