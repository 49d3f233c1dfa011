"""The benchmark CLI at the tiny size, and the PyTorch twin where torch exists.

Nothing here asserts a speed (a loaded machine would fail it); the figures
are checked against each other: images/s against the timed seconds and the
step time, ratios against the one-device baseline, MFU against FLOPs and the
peak. The subprocesses compile with JAX's optimisations mostly off (as
Flax's tests do): the report's arithmetic does not depend on them.
"""

import json
import re
import statistics
import subprocess
import sys

import numpy as np
import pytest

from alexnet_jax.core import flops
from alexnet_jax.errors import UserError
from alexnet_jax.run.settings import Settings
from alexnet_jax.tools.benchmarking import links
from alexnet_jax.tools.benchmarking import peaks
from alexnet_jax.tools.benchmarking import placements
from alexnet_jax.tools.benchmarking import report
from alexnet_jax.tools.benchmarking import roofline
from alexnet_jax.tools.benchmarking import timing
from clirun import ROOT, cli_env, finish

# One xdist worker runs this file's tests, which share costly session-scoped
# fixtures (tests/conftest.py says why).
pytestmark = [pytest.mark.xdist_group('benchmark'),
              pytest.mark.slow(seconds=55)]  # All of this file's tests together.

TIMED = ('--steps=2', '--warmup=1', '--repeats=2', '--peak_matmul_size=256')
# Batch sizes x dtypes in one call, one-device baseline only (4 compiles).
# XLA's own kernel gradients, whose FLOPs its cost analysis counts (the CPU's
# `auto` choice, patches, runs products in loops that it does not).
SWEEP = ('--config=configs/two_gpu.py:tiny', '--config.conv_kernel_grad=xla',
         '--strategies=',
         '--batch_sizes=8,16', '--dtypes=float32,bfloat16', *TIMED)
# The placements, fed by the real input pipeline (3 compiles).
STRATEGIES = ('--config=configs/two_gpu.py:tiny', '--config.conv_kernel_grad=xla',
              '--strategies=towers,data',
              '--batch_sizes=8', '--input=real', *TIMED,
              '--links=2xGTX580-PCIe2,2xthis-PCIe4')
RESULTS = ROOT / 'benchmarks' / 'results'


def start_cli(*args, env=None) -> subprocess.Popen:
  return subprocess.Popen(
      [sys.executable, '-m', 'alexnet_jax.benchmark', *args], cwd=ROOT,
      env=cli_env({'JAX_DISABLE_MOST_OPTIMIZATIONS': '1'} | (env or {})),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope='session')
def reports(tmp_path_factory):
  """Both runs started at once; the error tests below run while they compile."""
  tmp = tmp_path_factory.mktemp('benchmark')
  runs = {
      'sweep': start_cli(*SWEEP, f'--json={tmp / "sweep.json"}'),
      'strategies': start_cli(*STRATEGIES, f'--json={tmp / "strategies.json"}',
                              f'--config.data_dir={tmp / "data"}',
                              f'--trace_dir={tmp / "traces"}'),
  }
  out = {}

  def get(name):
    if name not in out:
      returncode, stdout, stderr = finish(runs[name])
      assert returncode == 0, stderr[-3000:]
      out[name] = (json.loads((tmp / f'{name}.json').read_text()), stdout)
    return out[name]
  get.traces = tmp / 'traces'

  yield get
  for process in runs.values():
    if process.poll() is None:
      process.kill()
      process.communicate()


@pytest.mark.parametrize('args, env, words', [
    (('--dtypes=float16',), None, ('float16', 'bfloat16')),
    # The towers strategy needs two devices; JAX is given one.
    (('--strategies=towers',),
     {'XLA_FLAGS': '--xla_force_host_platform_device_count=1'}, ('2', 'found 1')),
    (('--strategies=', '--links=2xGTX480-PCIe1'), None,
     ('2xGTX480-PCIe1', '2xGTX580-PCIe2')),
    # Asked for a roofline on a CPU: no bandwidth is known, none is guessed.
    (('--strategies=', '--roofline=on'), None,
     ('memory bandwidth', "'cpu'", '--roofline=auto')),
])
def test_bad_settings_exit_2_with_one_paragraph(reports, args, env, words):
  del reports  # Started first, to overlap.
  returncode, stdout, stderr = finish(start_cli(
      '--config=configs/two_gpu.py:tiny', *args, env=env))
  assert returncode == 2, stderr[-3000:]
  message = stderr.strip()
  assert message.startswith('error:'), message
  assert all(w in message for w in words), message
  assert 'Traceback' not in message and stdout == ''


def _tiny():
  from configs import two_gpu  # pylint: disable=import-outside-toplevel
  return Settings.from_config(two_gpu.get_config('tiny'))


def _options(**kwargs):
  return timing.Options(**{'strategies': ('towers',), 'batch_sizes': (8,),
                              'dtypes': ('float32',)} | kwargs)


@pytest.mark.parametrize('options, words', [
    (_options(strategies=('towers', 'pipeline')), ('pipeline', 'hybrid')),
    # strategy=data splits the batch over both devices: 7 does not divide.
    (_options(strategies=('data',), batch_sizes=(7,)), ('batch_size=7', 'data')),
    (_options(steps=0), ('--steps',)),
    (_options(input='imagenet'), ('--input', 'real')),
])
def test_bad_options_are_refused_before_compiling(options, words):
  with pytest.raises(UserError) as e:
    timing.check_options(_tiny(), options, num_devices=2)
  assert all(w in str(e.value) for w in words), str(e.value)


def test_all_strategies_keeps_those_that_fit_and_says_why_not():
  options, skipped = timing.resolve_strategies(
      _tiny(), _options(strategies=('all',)), num_devices=2)
  # Since units that do not divide are padded (fc8's 5 per tower), all fit.
  assert options.strategies == ('towers', 'data', 'hybrid', 'fsdp')
  assert not skipped


def test_no_peak_for_the_cpu_in_the_table():
  import jax  # pylint: disable=import-outside-toplevel
  with pytest.raises(UserError, match="No peak rate.*'cpu'.*--peak=matmul"):
    peaks.peaks(jax.devices()[0], ['float32'], 'table', 0)


def check_row_arithmetic(row, steps, peak_known=True):
  """Every derived figure of a row, recomputed from the raw timings."""
  batch = row['batch_size']
  assert len(row['images_per_sec']) == len(row['seconds_per_repeat']) == 2
  for rate, seconds in zip(row['images_per_sec'], row['seconds_per_repeat']):
    assert seconds > 0 and rate == pytest.approx(steps * batch / seconds)
  median = statistics.median(row['images_per_sec'])
  assert row['median_images_per_sec'] == pytest.approx(median)
  assert row['seconds_per_step'] == pytest.approx(batch / median)
  assert row['min_images_per_sec'] <= median <= row['max_images_per_sec']
  assert row['spread'] == pytest.approx(
      (row['max_images_per_sec'] - row['min_images_per_sec']) / median)
  assert row['compile_seconds'] > 0
  assert row['compiled_peak_bytes_per_device'] > 0
  assert row['allocator_peak_bytes_per_device'] is None  # CPU keeps none.
  flops = row['model_flops_per_image']
  assert flops > 0
  assert row['achieved_flops_per_sec'] == pytest.approx(flops * median)
  if peak_known:
    assert row['peak_source'].startswith('measured: 256x256 ' + row['dtype'])
    assert row['mfu'] == pytest.approx(
        row['achieved_flops_per_sec'] / row['peak_flops_per_sec'])
    assert 0 < row['mfu'] <= 1


def test_sweep_batch_sizes_and_dtypes_in_one_table(reports):
  record, table = reports('sweep')
  assert record['backend'] == 'cpu' and record['num_devices'] == 2
  for key in ('date', 'jax_version', 'jaxlib_version', 'platform_version',
              'device_kind', 'load_average_before', 'host_cpu'):
    assert record[key], key
  assert record['command'].startswith('python -m alexnet_jax.benchmark ')
  assert record['input'] == 'synthetic'
  rows = record['rows']
  assert [(r['name'], r['batch_size'], r['dtype']) for r in rows] == [
      ('one_device', 8, 'float32'), ('one_device', 8, 'bfloat16'),
      ('one_device', 16, 'float32'), ('one_device', 16, 'bfloat16')]
  for row in rows:
    check_row_arithmetic(row, steps=2)
    assert row['ratio_to_one_device'] == 1.0
  # The useful work per image is the layer table's, whatever the batch and
  # dtype; XLA's own count of each compiled step is within 10% of it (on CPU
  # it sees every convolution; the rest is elementwise work and the update).
  assert {r['model_flops_per_image'] for r in rows} == {
      flops.train_flops_per_image(_tiny().model)}
  for row in rows:
    assert 0.9 < row['compiled_flops_per_image'] / row['model_flops_per_image'] < 1.1
  # Each dtype is its own program (the dtype lives in the graphdef: a shared
  # graphdef would time float32 under both names).
  for f32, bf16 in zip(rows[::2], rows[1::2]):
    assert f32['compiled_flops_per_image'] != bf16['compiled_flops_per_image']
  # The table holds one line per row, in the same order.
  lines = [l for l in table.splitlines() if l.startswith('one_device')]
  assert [l.split()[4:6] for l in lines] == [
      [str(r['batch_size']), r['dtype']] for r in rows]
  assert 'Peak for MFU: measured: 256x256 float32 matmul' in table
  # No bandwidth for a CPU: no roofline, and the report says why.
  assert all(r['roofline'] is None and r['roofline_fraction'] is None for r in rows)
  assert record['roofline_source'].startswith('no roofline: the memory bandwidth')
  assert 'Roofline: no roofline' in table


def test_roofline_counts_of_conv2_by_hand():
  """conv2 of the 2012 net, per tower 27x27x48 -> 27x27x128 with a 5x5
  kernel, two towers, batch 1, bfloat16 (2 bytes)."""
  from alexnet_jax.core.network import ModelConfig  # pylint: disable=import-outside-toplevel
  costs = {c['layer']: c for c in roofline.layer_costs(ModelConfig(), 1, 'bfloat16')}
  macs = 2 * 27 * 27 * 5 * 5 * 48 * 128  # = 223,948,800
  assert costs['conv2']['flops'] == 3 * 2 * macs == 1_343_692_800
  w = 2 * (5 * 5 * 48 + 1) * 128  # Kernels and biases: 307,456.
  x, y = 2 * 27 * 27 * 48, 2 * 27 * 27 * 128  # In and out: 69,984, 186,624.
  # Forward x, W -> y; backward dy, x, W -> dx, dW.
  assert costs['conv2']['bytes'] == 2 * (3 * x + 2 * y + 3 * w) == 3_011_136
  # conv1 computes no input gradient; the update is float32 on every parameter.
  assert costs['conv1']['bytes'] == 2 * (2 * 2 * 227 * 227 * 3 + 2 * 2 * 55 * 55 * 48
                                         + 3 * 2 * (11 * 11 * 3 + 1) * 48)
  assert costs['update']['bytes'] == 20 * 60_965_224
  # Batch 64: activations scale, kernels do not.
  big = {c['layer']: c for c in roofline.layer_costs(ModelConfig(), 64, 'bfloat16')}
  assert big['conv2']['bytes'] == 2 * (64 * (3 * x + 2 * y) + 3 * w)
  # On an H100 SXM (989 TFLOP/s, 3.35 TB/s) conv2 is compute-bound.
  b = roofline.bound([costs['conv2']], 989e12, 3.35e12)
  assert b['layers'][0]['limited_by'] == 'compute'
  assert b['bound_seconds'] == pytest.approx(1_343_692_800 / 989e12)
  # The update is memory-bound; two devices halve both.
  u = roofline.bound([costs['update']], 989e12, 3.35e12, devices=2)
  assert u['bound_seconds'] == pytest.approx(20 * 60_965_224 / (2 * 3.35e12))


@pytest.mark.parametrize('kind, bandwidth', [
    ('NVIDIA H100 80GB HBM3', 3.35e12), ('NVIDIA H100 PCIe', 2.0e12),
    ('NVIDIA H200', 4.8e12), ('NVIDIA A100-SXM4-80GB', 2.039e12),
    ('NVIDIA A100-PCIE-40GB', 1.555e12), ('Tesla V100-SXM2-16GB', 900e9),
    ('TPU v4', 1.2e12), ('TPU v5 lite', 819e9), ('TPU v6 lite', 1.64e12),
])
def test_bandwidth_table(kind, bandwidth):
  value, source = roofline.table_bandwidth(kind)
  assert value == bandwidth and ('datasheet' in source or 'TPU documentation' in source)


def test_unknown_bandwidth_is_said_never_guessed():
  assert roofline.bandwidth('cpu', 'auto') is None
  assert roofline.bandwidth('NVIDIA H200', 'off') is None
  with pytest.raises(UserError, match="No memory bandwidth is known for device kind 'NVIDIA GeForce GTX 580'"):
    roofline.bandwidth('NVIDIA GeForce GTX 580', 'on')


def test_strategies_on_real_input_against_one_device(reports):
  record, table = reports('strategies')
  assert record['input'] == 'real' and 'pipeline' in record['input_description']
  rows = {r['name']: r for r in record['rows']}
  assert list(rows) == ['one_device', 'towers', 'data']
  assert [(r['strategy'], r['mesh'], r['devices']) for r in rows.values()] == [
      ('data', {'data': 1, 'model': 1}, [0]),
      ('towers', {'data': 1, 'model': 2}, [0, 1]),
      ('data', {'data': 2, 'model': 1}, [0, 1]),
  ]
  base = rows['one_device']
  for row in rows.values():
    check_row_arithmetic(row, steps=2)
    assert row['ratio_to_one_device'] == pytest.approx(
        row['median_images_per_sec'] / base['median_images_per_sec'])
    # MFU counts the one-device program's work, whatever the placement.
    assert row['model_flops_per_image'] == base['model_flops_per_image']
  # Each device of the split computes one tower: together the same work.
  assert rows['towers']['compiled_flops_per_image'] == pytest.approx(
      base['compiled_flops_per_image'], rel=0.1)
  assert 'real: each step draws its batch' in table


def test_link_prediction_of_each_strategy_beside_the_measured_rows(reports):
  record, table = reports('strategies')
  pred = record['link_prediction']
  assert pred['kind'] == 'prediction' and 'assumed efficiency' in pred['assumptions'] + table
  rows = {(r['pair'], r['strategy']): r for r in pred['rows']}
  # Every strategy that fits two devices.
  assert set(rows) == {(p, s) for p in ('2xGTX580-PCIe2', '2xthis-PCIe4')
                       for s in ('towers', 'data', 'hybrid', 'fsdp')}
  base = next(r for r in record['rows'] if r['name'] == 'one_device')
  for (pair, strategy), r in rows.items():
    assert r['collectives'] > 0 and r['sent_bytes_per_device'] > 0
    assert 0.4 < r['share'] < 0.6  # Each device does about half the work.
    assert r['predicted_seconds_full_overlap'] <= r['predicted_seconds_no_overlap']
    if pair == '2xthis-PCIe4':
      assert r['single_device_seconds'] == base['seconds_per_step']
    else:  # No roofline fraction on CPU: the assumed one, said so.
      assert '(assumed)' in r['single_device_source']
  # The towers send less than data parallelism's gradients.
  assert (rows['2xthis-PCIe4', 'towers']['sent_bytes_per_device']
          < rows['2xthis-PCIe4', 'data']['sent_bytes_per_device'])
  assert 'PREDICTED (not measured)' in table and 'Sanity check' in table


def test_link_prediction_is_monotone_and_exact_when_nothing_is_sent():
  slow, fast = links.LINKS['PCIe 2.0 x16'], links.LINKS['NVLink 4']
  for overlap in (False, True):
    # Nothing sent, the whole program on one device: the measured time.
    assert links.step_seconds(0.25, 1.0, 0, 0, slow, overlap) == 0.25
    times = [links.step_seconds(0.25, 0.5, 1e9, 40, links.Link(
        'l', bw, 0.8, 10e-6, ''), overlap) for bw in (1e9, 8e9, 64e9, 450e9)]
    assert times == sorted(times, reverse=True) and times[0] > times[-1]
    assert (links.step_seconds(0.25, 0.5, 1e8, 40, fast, overlap)
            <= links.step_seconds(0.25, 0.5, 1e8, 40, slow, overlap))
  with pytest.raises(UserError, match="Unknown pair.*'2xTPU'"):
    links.check_pairs(['2xTPU'])


def test_profile_summary_reads_each_placements_trace(reports):
  """`--trace_dir` traces one step per placement; profile_summary (jaxlib's
  trace reader, no TensorFlow) finds the step's HLO ops on the CPU threads."""
  from benchmarks import profile_summary  # pylint: disable=import-outside-toplevel
  reports('strategies')
  folders = sorted(p.name for p in reports.traces.iterdir())
  assert folders == ['b8-float32-data', 'b8-float32-one_device', 'b8-float32-towers']
  for folder in folders:
    path = next((reports.traces / folder).rglob('*.xplane.pb'))
    events = profile_summary.ops(profile_summary.load(str(path)))
    summary = profile_summary.summarise(events)
    assert summary['wall_ms'] > 0
    assert summary['busy_ms'] and all(ms > 0 for ms in summary['busy_ms'].values())
    assert sum(summary['concurrency_ms'].values()) == pytest.approx(summary['wall_ms'])
    assert any('conv' in kind for kind in summary['by_kind_ms']), summary['by_kind_ms']


@pytest.mark.parametrize('kind, dtype, peak', [
    ('NVIDIA H100 80GB HBM3', 'bfloat16', 989e12),
    ('NVIDIA H100 PCIe', 'bfloat16', 756e12),
    ('NVIDIA H100 NVL', 'float32', 418e12),
    ('NVIDIA H200', 'bfloat16', 989e12),
    ('NVIDIA A100-SXM4-80GB', 'float32', 156e12),
    ('Tesla V100-SXM2-16GB', 'float32', 15.7e12),
    ('TPU v4', 'bfloat16', 275e12),
    ('TPU v5 lite', 'bfloat16', 197e12),
    ('TPU v5', 'bfloat16', 459e12),
    ('TPU v6 lite', 'bfloat16', 918e12),
])
def test_peak_table(kind, dtype, peak):
  value, source = peaks.table_peak(kind, dtype)
  assert value == peak
  assert 'datasheet' in source or 'TPU documentation' in source


@pytest.mark.parametrize('kind, dtype', [
    ('Tesla V100-SXM2-16GB', 'bfloat16'),  # No bfloat16 tensor cores.
    ('NVIDIA GeForce GTX 580', 'float32'),
])
def test_unknown_peak_is_an_error_not_a_guess(kind, dtype):
  class Device:
    platform, device_kind = 'gpu', kind
  assert peaks.table_peak(kind, dtype) is None
  with pytest.raises(UserError, match='No peak rate is known'):
    peaks.peaks(Device(), [dtype], 'auto', 0)


def test_docs_tables_are_generated_from_the_committed_results():
  """Every benchmark table in docs/benchmarks.md is `--markdown_from` of a
  JSON report kept in benchmarks/results/."""
  page = (ROOT / 'docs' / 'benchmarks.md').read_text()
  saved = sorted(RESULTS.glob('*.json'))
  assert saved, f'no benchmark results in {RESULTS}'
  for path in saved:
    record = json.loads(path.read_text())
    if 'rows' not in record or 'agreement' in record:
      continue  # vs_pytorch reports have their own lines.
    for line in report.format_markdown(record).splitlines():
      assert line in page, f'{path.name}: docs/benchmarks.md lacks {line!r}'


# --- PyTorch (not a project dependency: skipped where it is not installed) --


def _torch_or_skip():
  return pytest.importorskip(
      'torch', reason='PyTorch is not installed (not a project dependency;'
      ' pip install -r benchmarks/requirements.txt to run the vs_pytorch checks)')


def _tiny_config():
  from configs import two_gpu  # pylint: disable=import-outside-toplevel
  config = two_gpu.get_config('tiny')
  config.model.init = 'he'  # Logits well away from zero.
  config.conv_kernel_grad = 'xla'  # The runs named without a suffix.
  return Settings.from_config(config)


def test_pytorch_twin_gives_the_same_logits():
  _torch_or_skip()
  from benchmarks import vs_pytorch  # pylint: disable=import-outside-toplevel
  check = vs_pytorch.agreement(_tiny_config())
  assert check['params_torch'] == check['params_jax']
  assert check['agrees'], check
  assert check['max_abs_logit'] > 0.1
  # The check can fail: PyTorch's alpha convention left unconverted (alpha
  # divided by n) changes the logits beyond the tolerance.
  from alexnet_jax.core import layers  # pylint: disable=import-outside-toplevel
  wrong = vs_pytorch.agreement(_tiny_config(), lrn_alpha=layers.LRN_ALPHA)
  assert not wrong['agrees'], wrong


def test_pytorch_comparison_times_each_kernel_gradient_side_by_side():
  _torch_or_skip()
  from benchmarks import vs_pytorch  # pylint: disable=import-outside-toplevel
  compared = vs_pytorch.compare(
      _tiny_config(), strategies=('towers',), batch_size=8, dtype='float32',
      steps=1, warmup=0, repeats=2, command='test',
      kernel_grads=('xla', 'patches'),
      # torch.compile's own path (dynamo, AOT autograd) without inductor's
      # C++ compile, which takes minutes here; the script runs inductor.
      compile_backend='aot_eager')
  rows = {r['name']: r for r in compared['rows']}
  assert list(rows) == ['pytorch', 'pytorch+compile', 'one_device', 'towers',
                        'one_device+patches', 'towers+patches']
  assert [rows[n]['conv_kernel_grad'] for n in list(rows)[2:]] == [
      'xla', 'xla', 'patches', 'patches']
  assert 'torch.compile (aot_eager)' in compared['pytorch_setup']
  for name, row in rows.items():
    assert len(row['images_per_sec']) == 2 and min(row['images_per_sec']) > 0
    assert row['ratio_to_pytorch'] == pytest.approx(
        row['median_images_per_sec'] / rows['pytorch']['median_images_per_sec'])
    assert row['ratio_to_pytorch_compiled'] == pytest.approx(
        row['median_images_per_sec']
        / rows['pytorch+compile']['median_images_per_sec'])
    assert (row['compile_seconds'] is None) == (name == 'pytorch')
  assert 'vs compiled' in vs_pytorch.format_report(compared)


def test_torch_compile_failing_is_a_row_that_says_why():
  torch = _torch_or_skip()
  from benchmarks import vs_pytorch  # pylint: disable=import-outside-toplevel
  settings = _tiny_config()
  from alexnet_jax.core import model  # pylint: disable=import-outside-toplevel
  flat = model.export_params(model.create(settings.model, 0))
  images = torch.from_numpy(vs_pytorch.fixed_batch(settings.model, 2).transpose(
      0, 3, 1, 2).copy())
  labels = torch.zeros(2, dtype=torch.int64)
  steps, compile_seconds, failed = vs_pytorch.torch_runs(
      settings, flat, torch.device('cpu'), 'float32', images, labels, warmup=0,
      compile_backend='no_such_backend')
  assert list(steps) == ['pytorch'] and compile_seconds == {}
  assert list(failed) == ['pytorch+compile']
  assert 'no_such_backend' in failed['pytorch+compile'], failed


def test_each_setting_compiles_its_own_step():
  """The kernel gradient and the dtype live in the graphdef: each run must be
  built from its own (patches: matrix products in a loop over kernel rows,
  one more HLO while per convolution; bfloat16: bf16 convolutions). A
  graphdef shared by every setting would time float32 under every name."""
  from benchmarks import vs_pytorch  # pylint: disable=import-outside-toplevel
  config = _tiny_config()
  runs = vs_pytorch.jax_runs(config, (), 8, 'bfloat16',
                             kernel_grads=('xla', 'patches'))
  assert [p.name for p in runs] == ['one_device', 'one_device+patches']
  state = placements.initial_state(config)
  host = placements.synthetic_batch(runs[0].settings)
  texts = []
  for p in runs:
    placements.prepare(p, state, host)
    texts.append(p.step.as_text())
  assert texts[1].count(' while(') > texts[0].count(' while(')
  for text in texts:  # The CPU backend computes in float32 around bf16 values.
    assert ' bf16[' in text


def test_pytorch_twin_of_the_2012_net_has_caffes_parameter_count():
  _torch_or_skip()
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from alexnet_jax.core import model  # pylint: disable=import-outside-toplevel
  from alexnet_jax.core.network import ModelConfig  # pylint: disable=import-outside-toplevel
  from benchmarks import vs_pytorch  # pylint: disable=import-outside-toplevel
  cfg = ModelConfig()  # two_tower, 227x227, 1000 classes.
  net = nnx.eval_shape(lambda: model.create(cfg))  # Shapes only.
  flat = {}
  for layer in cfg.network.layers:
    for part in ('kernel', 'bias'):
      towers, *shape, out = getattr(getattr(net, layer.name), part).shape
      flat[f'{layer.name}/{part}'] = np.zeros((*shape, towers * out), np.float32)
  twin = vs_pytorch.torch_network(cfg, flat)
  assert vs_pytorch.count_params(twin) == 60_965_224
  groups = {name: op.groups for name, op in twin.ops.items() if hasattr(op, 'groups')}
  assert groups == {'conv1': 1, 'conv2': 2, 'conv3': 1, 'conv4': 2, 'conv5': 2}


# --- The accelerator scripts (only their plan here: no device, no install) --


@pytest.mark.parametrize('script, extra, torch', [
    ('gpu.sh', 'jax[cuda12]', True), ('tpu.sh', 'jax[tpu]', False)])
def test_accelerator_script_plans_the_pinned_installs_and_the_full_table(
    script, extra, torch):
  out = subprocess.run(['bash', f'benchmarks/{script}', '--dry-run'], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr
  commands = [l[2:] for l in out.stderr.splitlines() if l.startswith('+ ')]
  pins = dict(l.split('==') for l in (ROOT / 'requirements.txt').read_text(
      ).splitlines() if '==' in l and not l.startswith('#'))
  torch_pin = next(l for l in (ROOT / 'benchmarks' / 'requirements.txt'
                               ).read_text().splitlines() if l.startswith('torch=='))
  install = next(c for c in commands if ' pip install ' in c)
  assert f'{extra}=={pins["jax"]}' in install and '-r requirements.txt' in install
  assert (f'torch=={torch_pin.split("==")[1].split("+")[0]}' in install) == torch
  tables = [c.split() for c in commands if '-m alexnet_jax.benchmark' in c
            and '--json=' in c and '/benchmark-' in c]
  for table in tables:
    for flag in ('--config=configs/two_gpu.py', '--batch_sizes=128,256,512'):
      assert flag in table, table
  # One table per dtype, bfloat16 first; the same dtypes against PyTorch.
  assert [f for t in tables for f in t if f.startswith('--dtypes=')] == [
      '--dtypes=bfloat16', '--dtypes=float32']
  versus = [c.split() for c in commands if '-m benchmarks.vs_pytorch' in c]
  assert [f for v in versus for f in v if f.startswith('--dtype=')] == (
      ['--dtype=bfloat16', '--dtype=float32'] if torch else [])
  assert all('--notorch_compile' not in v for v in versus)  # Eager and compiled.
  # The table predicts the split on links; one step traced per dtype, command
  # buffers off so the trace attributes every kernel.
  assert all(any(f.startswith('--links=') for f in t) for t in tables)
  traced = [c for c in commands if '--trace_dir=' in c]
  assert len(traced) == 2 and all(
      bool(re.search(r"--xla_gpu_enable_command_buffer=['\s]", c)) == torch
      for c in traced)
  # Each lever of benchmarks/levers.txt once, after the default.
  levers = [l for l in (ROOT / 'benchmarks' / 'levers.txt').read_text().splitlines()
            if l.strip() and not l.startswith('#')]
  runs = [c for c in commands if '/lever-' in c]
  assert len(runs) == len(levers) + 1 and '/lever-default.json' in runs[0]
  for lever, command in zip(levers, runs[1:]):
    assert lever.removeprefix('XLA_FLAGS=') in command, (lever, command)
