"""The pictures: drawn from the same analysis `describe` prints, from real
checkpoints and metrics. Tiny configs; the tests read the data each picture
is drawn from (not its pixels) and check that a non-empty PNG was written.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from clirun import finish, start_module

from alexnet_jax.core import parallel
from alexnet_jax.errors import UserError
from alexnet_jax.run import checkpoint
from alexnet_jax.run.settings import Settings
from alexnet_jax.tools import placement
from alexnet_jax.tools.pictures import architecture
from alexnet_jax.tools.pictures import curves
from alexnet_jax.tools.pictures import kernels
from alexnet_jax.tools.pictures import output
from configs import default
from configs import one_gpu

# One xdist worker runs this file's tests, which share costly session-scoped
# fixtures (tests/conftest.py says why).
pytestmark = [pytest.mark.xdist_group('pictures'),
              pytest.mark.slow(seconds=35)]  # All of this file's tests together.

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
FLOAT32 = 4


def assert_png(path: Path):
  data = Path(path).read_bytes()
  assert data[:8] == PNG_MAGIC and len(data) > 10_000, path


def crossing_keys(rows):
  return [(r['crossing'], r['direction'], r['kind'], r['axis'], r['tensors'],
           r['bytes'], r['sent_bytes']) for r in rows]


# --- Architecture --------------------------------------------------------------------


@pytest.fixture(scope='session')
def two_gpu_clis(tmp_path_factory):
  """`visualize architecture` and `describe --json` on the same tiny config, as
  two programs: started by the first test so that their compiles overlap
  with the one in this process."""
  out = tmp_path_factory.mktemp('architecture')
  config = '--config=configs/two_gpu.py:tiny'
  processes = [start_module('alexnet_jax.visualize', 'architecture', config,
                            f'--out={out}'),
               start_module('alexnet_jax.describe', config, '--json')]
  yield out, processes
  for process in processes:
    if process.poll() is None:
      process.kill()
      process.communicate()


def describe(config):
  settings = Settings.from_config(config)
  return placement.describe(settings, parallel.make_mesh(settings.mesh))


def test_data_parallel_draws_the_gradient_all_reduce_one_device_no_arrow(
    two_gpu_clis, tmp_path):
  del two_gpu_clis  # Started here, to compile beside this test.
  config = one_gpu.get_config('tiny')
  config.mesh.data = 2
  report = describe(config)
  elements = architecture.architecture_elements(report)
  assert crossing_keys(elements['crossings']) == crossing_keys(
      report['collectives_summary'])
  # Both towers on each device: one frame around both columns, the other
  # device a data replica; only the data axis carries anything.
  assert [f['columns'] for f in elements['frames']] == [[0, 1]]
  assert elements['replicas'] == {'axis': 'data', 'count': 2, 'devices': [1]}
  assert {c['between'] for c in elements['crossings']} == {'replicas'}
  grads = [c for c in elements['crossings'] if c['crossing'] == 'gradients']
  assert [(g['kind'], g['direction']) for g in grads] == [('all-reduce', 'backward')]
  assert grads[0]['bytes'] == FLOAT32 * report['params']
  assert elements['rows'][grads[0]['row']]['name'] == 'gradients'
  # The towers meet on the device: conv3, fc6..fc8 and the softmax concatenate.
  read_both = [elements['rows'][i]['name'] for i in elements['local_reads']]
  assert read_both == ['conv3', 'fc6', 'fc7', 'fc8', 'softmax']
  labels = architecture.draw_architecture(elements, [tmp_path / 'dp.png'])
  assert len(labels) == len({c['crossing'] for c in elements['crossings']})
  assert any('all-reduce bwd' in l for l in labels)
  assert_png(tmp_path / 'dp.png')

  # configs/one_gpu.py: one device, nothing crosses.
  one = architecture.architecture_elements(describe(one_gpu.get_config('tiny')))
  assert one['crossings'] == [] and one['replicas'] is None
  assert architecture.draw_architecture(one, [tmp_path / 'one.png']) == []
  assert_png(tmp_path / 'one.png')


def test_architecture_draws_exactly_the_collectives_describe_lists(two_gpu_clis):
  out, processes = two_gpu_clis
  results = [finish(p) for p in processes]
  for returncode, _, stderr in results:
    assert returncode == 0, stderr[-3000:]
  listed = json.loads(results[1][1])
  drawn = json.loads((out / 'architecture_two_gpu_tiny.json').read_text())
  elements = drawn['elements']
  # Every collective of the compiled step is drawn once, with its bytes, and
  # nothing else is: the picture's crossings are describe's, row for row.
  assert crossing_keys(elements['crossings']) == crossing_keys(
      listed['collectives_summary'])
  assert {c['crossing'] for c in elements['crossings']} == {
      'conv3', 'fc6', 'fc7', 'fc8', 'softmax'}
  assert all(c['between'] == 'towers' and c['axis'] == 'model'
             for c in elements['crossings'])
  # Each arrow sits at the input of the layer whose name the collective carries.
  rows = elements['rows']
  assert all(rows[c['row']]['name'] == c['crossing'] for c in elements['crossings'])
  # The pure function gives the same picture from describe's own output.
  assert architecture.architecture_elements(listed) == elements
  # One column per tower, each on its own device; a frame per device.
  assert elements['columns'] == [{'tower': 0, 'devices': [0]},
                                 {'tower': 1, 'devices': [1]}]
  assert [f['columns'] for f in elements['frames']] == [[0], [1]]
  assert elements['replicas'] is None and elements['local_reads'] == []
  layers = [r for r in rows if r['kind'] == 'layer']
  assert [(r['name'], r['output_per_tower'], r['params_per_tower'])
          for r in layers] == [(l['name'], l['output_per_tower'],
                                l['params_per_tower']) for l in listed['layers']]
  assert_png(out / 'architecture_two_gpu_tiny.png')
  assert (out / 'architecture_two_gpu_tiny.svg').read_text().lstrip().startswith('<?xml')


# --- Kernels -------------------------------------------------------------------------


@pytest.fixture(scope='session')
def trained_workdir(tmp_path_factory):
  """Four steps of the tiny two-tower net, one tower per device."""
  from alexnet_jax.run import loop  # pylint: disable=import-outside-toplevel
  config = default.get_config('tiny')
  config.mesh.model, config.mesh.data, config.strategy = 2, 1, 'towers'
  config.data_dir = str(tmp_path_factory.mktemp('tfds'))
  workdir = tmp_path_factory.mktemp('run') / 'workdir'
  loop.train_and_evaluate(Settings.from_config(config), str(workdir))
  return workdir


def test_kernels_of_a_trained_checkpoint_one_panel_per_tower(trained_workdir, tmp_path):
  assert checkpoint.saved_steps(trained_workdir)[-1] == 4
  step_dir = trained_workdir / 'checkpoints' / '4'
  state = checkpoint.load_numpy(step_dir)
  conv1 = kernels.conv1_kernels(state, str(step_dir))
  # Width 1/16: 3 kernels 11x11x3 per tower.
  assert conv1.shape == (2, 11, 11, 3, 3)
  grid = kernels.kernel_grid(conv1[1])
  assert grid.shape == (11, 3 * 11 + 2, 3) and 0 <= grid.min() <= grid.max() <= 1
  # The second kernel of tower 1 sits in its cell, scaled on its own.
  w = conv1[1, ..., 1]
  np.testing.assert_allclose(grid[:, 12:23], 0.5 + w / (2 * np.abs(w).max()),
                             rtol=1e-6)
  measure = kernels.picture_kernels(trained_workdir)
  out = trained_workdir / 'kernels_step4.png'
  assert measure['picture'] == str(out) and measure['step'] == 4
  assert_png(out)
  assert json.loads(out.with_suffix('.json').read_text()) == measure
  np.testing.assert_allclose(measure['per_kernel'],
                             kernels.colour_selectivity(conv1))
  np.testing.assert_allclose(measure['per_tower_mean'],
                             kernels.colour_selectivity(conv1).mean(-1))


def test_colour_selectivity_is_zero_for_grey_and_large_for_one_channel():
  rng = np.random.default_rng(0)
  pattern = rng.normal(size=(11, 11, 1, 4))
  grey = np.repeat(pattern, 3, axis=2)
  red = np.concatenate([pattern, np.zeros_like(pattern), np.zeros_like(pattern)], 2)
  opponent = np.concatenate([pattern, -pattern, np.zeros_like(pattern)], 2)
  np.testing.assert_allclose(kernels.colour_selectivity(grey), 0, atol=1e-12)
  np.testing.assert_allclose(kernels.colour_selectivity(red), 2 / 3)
  np.testing.assert_allclose(kernels.colour_selectivity(opponent), 1)
  # Untrained noise: 2/3 as well, but no structure; smooth kernels have some.
  noise = rng.normal(size=(2, 11, 11, 3, 400))
  assert abs(kernels.colour_selectivity(noise).mean() - 2 / 3) < 0.01
  assert abs(kernels.neighbour_correlation(noise).mean()) < 0.01
  ramp = np.linspace(-1, 1, 11)[:, None, None, None] * np.ones((11, 11, 3, 1))
  assert kernels.neighbour_correlation(ramp)[0] > 0.9
  # Towers on a leading axis: one value per tower and kernel.
  both = np.stack([grey, red])
  np.testing.assert_allclose(kernels.colour_selectivity(both),
                             [[0] * 4, [2 / 3] * 4], atol=1e-12)


# --- Curves --------------------------------------------------------------------------


def test_curves_of_two_runs(trained_workdir, tmp_path):
  other = tmp_path / 'other'
  other.mkdir()
  rows = [{'step': s, 'train_loss': 2.0 / s, 'train_top1': 0.1 * s,
           'learning_rate': 0.01} for s in (1, 2, 3, 4)]
  rows.append({'step': 4, 'eval_loss': 0.9, 'eval_top1': 0.5, 'eval_top5': 0.9})
  (other / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  out = tmp_path / 'curves.png'
  figure = curves.plot_curves([trained_workdir, other], out, labels=['tiny', 'made up'])
  assert_png(out)
  loss, top1, rate = figure.axes[:3]
  # Per run: a train line and an evaluation line in the loss and top-1
  # panels (plus the legend's two style samples in the loss panel).
  mine = lambda ax, i: (list(ax.lines[i].get_xdata()), list(ax.lines[i].get_ydata()))
  assert mine(loss, 2) == ([1, 2, 3, 4], [2.0, 1.0, 2 / 3, 0.5])
  assert mine(loss, 3) == ([4], [0.9])
  assert mine(top1, 2) == ([1, 2, 3, 4], pytest.approx([0.1, 0.2, 0.3, 0.4]))
  assert mine(top1, 3) == ([4], [0.5])
  assert mine(rate, 1) == ([1, 2, 3, 4], [0.01] * 4)
  # The trained run's lines are its metrics.jsonl, step by step.
  logged = [r for r in curves.read_metrics(trained_workdir) if 'train_loss' in r]
  assert mine(loss, 0) == ([r['step'] for r in logged],
                           pytest.approx([r['train_loss'] for r in logged]))
  assert loss.lines[1].get_linestyle() == '--' and loss.lines[0].get_linestyle() == '-'
  # One colour per run, the same in every panel; the legend names the runs.
  assert loss.lines[0].get_color() == top1.lines[0].get_color() == rate.lines[0].get_color()
  assert loss.lines[0].get_color() != loss.lines[2].get_color()
  assert [t.get_text() for t in figure.legends[0].get_texts()] == ['tiny', 'made up']


def test_sweep_curves_are_drawn_as_fig_1(tmp_path):
  """One panel per setup, the better value solid and the other dashed, the
  seeds a band around their mean; a legend of the two styles only."""
  series = [{'panel': f'init={init}', 'colour': '', 'style': f'activation={act}',
             'solid': act == 'relu', 'x': [1, 2, 3], 'seed': seed,
             'y': [90 - step * (20 if act == 'relu' else 5) - seed for step in (1, 2, 3)]}
            for init in ('paper', 'he') for act in ('relu', 'tanh') for seed in (0, 2)]
  figure = curves.plot_sweep_curves(series, tmp_path / 'f.png')
  panels = [ax for ax in figure.axes if ax.get_title()]
  assert [ax.get_title() for ax in panels] == ['init=paper', 'init=he']
  relu, tanh = panels[0].lines[:2]
  assert (relu.get_linestyle(), tanh.get_linestyle()) == ('-', '--')
  assert list(relu.get_ydata()) == [69, 49, 29]  # Mean of seeds 0 and 2.
  band = panels[0].collections[0].get_paths()[0].vertices[:, 1]
  assert band.min() == 28 and band.max() == 70  # Min to max over the seeds.
  assert panels[0].get_xlabel() == 'epochs' and panels[0].get_ylabel().startswith('training error')
  legend = [t.get_text() for t in figure.legends[0].get_texts()]
  assert legend == ['activation=relu', 'activation=tanh']


# --- Bad input -----------------------------------------------------------------------


@pytest.mark.parametrize('count', [2, 16, 40])
def test_every_run_of_a_sweep_gets_its_own_colour(count):
  colours = curves.run_colours(count)
  assert len(colours) == count and len(set(map(str, colours))) == count


def test_bad_input_is_one_sentence(tmp_path):
  with pytest.raises(UserError, match='holds no checkpoint'):
    kernels.picture_kernels(tmp_path)
  owt_like = {'params': {'features': {'kernel': np.zeros((11, 11, 3, 64))}}}
  with pytest.raises(UserError, match='no conv1 kernels'):
    kernels.conv1_kernels(owt_like, 'x')
  with pytest.raises(UserError, match='no conv1 kernels'):
    kernels.conv1_kernels({'params': {'conv1': {'kernel': np.zeros((11, 11, 3, 8))}}}, 'x')
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  with pytest.raises(UserError, match='Cannot write'):
    output.writable_dir(str(blocker / 'pictures'))
  with pytest.raises(UserError, match='should end in'):
    output.writable_file(str(tmp_path / 'curves.txt'))
  with pytest.raises(UserError, match='no metrics.jsonl'):
    curves.plot_curves([tmp_path], tmp_path / 'c.png')


@pytest.mark.parametrize('args', [
    ['kernels', '--workdir={tmp}'],
    ['curves', '--workdir={tmp}', '--out={tmp}/a_file/c.png'],
])
def test_cli_bad_input_exits_2_with_one_paragraph(tmp_path, args):
  (tmp_path / 'a_file').write_text('')
  returncode, stdout, stderr = finish(start_module(
      'alexnet_jax.visualize', *[a.format(tmp=tmp_path) for a in args]))
  assert returncode == 2, stderr[-3000:]
  message = stderr.strip()
  assert message.startswith('error:') and 'Traceback' not in message, message
  assert '\n\n' not in message and stdout == ''
