"""Train-step throughput, compile time, memory and MFU, per placement and setting.

    python -m alexnet_jax.benchmark --config=configs/two_gpu.py [--strategies=all|towers,...]
        [--batch_sizes=128,256] [--dtypes=float32,bfloat16] [--input=synthetic|real] [--json=FILE]
        [--roofline=auto|on|off] [--links=2xGTX580-PCIe2,2xthis-NVLink,...]
    python -m alexnet_jax.benchmark --markdown_from=FILE

The one-device baseline and each strategy on its usual mesh over all devices,
per batch size x dtype, in one table with roofline fractions (tools/benchmarking/).
"""

import shlex
import sys

from absl import flags

from alexnet_jax.errors import UserError
from alexnet_jax.run import cli

_CONFIG = cli.define_config_flag()
_STRATEGIES = flags.DEFINE_string(
    'strategies', 'all', 'Strategies beside the one-device baseline, each on its usual'
    ' mesh over all devices; "all": every one that fits (the others say why); empty: none.')
_BATCH_SIZES = flags.DEFINE_string('batch_sizes', '', "Global batch sizes (default: the config's).")
_DTYPES = flags.DEFINE_string('dtypes', '', "float32 and/or bfloat16 (default: the config's).")
_NUM_DEVICES = flags.DEFINE_integer(
    'num_devices', 0, 'Devices to use (0: all; on CPU, how many host devices to make).')
_INPUT = flags.DEFINE_string(
    'input', 'synthetic', 'synthetic: one batch kept on the devices; real:'
    ' every step draws from the input pipeline (config.dataset).')
_PEAK = flags.DEFINE_string(
    'peak', 'auto', 'Peak for MFU: auto (table; measured on CPU), table, matmul, none.')
_LINKS = flags.DEFINE_string('links', '', 'Predict the split on these pairs (links.PAIRS).')
_ROOFLINE = flags.DEFINE_string('roofline', 'auto', 'Roofline: auto (bandwidth known), on, off.')
_PEAK_MATMUL_SIZE = flags.DEFINE_integer(
    'peak_matmul_size', 0, 'Side of the measured matmul (0: 8192; 2048 on CPU).')
_TRACE_DIR = flags.DEFINE_string(
    'trace_dir', '', 'After timing, trace one more step of each placement with'
    ' jax.profiler into DIR/b{batch}-{dtype}-{placement}'
    ' (benchmarks/profile_summary.py reads them).')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps per repeat.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps per placement after compiling.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed repeats, interleaved; the median is reported.')
_JSON = flags.DEFINE_string('json', '', 'Also write the report to this file (JSON).')
_MARKDOWN_FROM = flags.DEFINE_string(
    'markdown_from', '', 'Print the markdown table of a saved --json report (runs nothing).')


def _csv(text: str, parse=str) -> tuple:
  try:
    return tuple(parse(x.strip()) for x in text.split(',') if x.strip())
  except ValueError:
    raise UserError(f'Expected a comma-separated list, got {text!r}.') from None


def main(argv):
  del argv
  from alexnet_jax.run.settings import Settings  # pylint: disable=import-outside-toplevel
  from alexnet_jax.tools.benchmarking import report, timing  # pylint: disable=import-outside-toplevel
  if _MARKDOWN_FROM.value:
    print(report.markdown_from(_MARKDOWN_FROM.value))
    return
  if _CONFIG.value is None:
    raise UserError('Pass --config=FILE, e.g. --config=configs/two_gpu.py.')
  settings = Settings.from_config(_CONFIG.value)
  options = timing.Options(
      strategies=_csv(_STRATEGIES.value),
      batch_sizes=_csv(_BATCH_SIZES.value, int) or (settings.data.batch_size,),
      dtypes=_csv(_DTYPES.value) or (settings.model.dtype,),
      steps=_STEPS.value, warmup=_WARMUP.value, repeats=_REPEATS.value,
      input=_INPUT.value, peak=_PEAK.value, roofline_mode=_ROOFLINE.value,
      link_pairs=_csv(_LINKS.value),
      peak_matmul_size=_PEAK_MATMUL_SIZE.value, trace_dir=_TRACE_DIR.value)
  timing.benchmark(
      settings, options, num_devices=_NUM_DEVICES.value, json_path=_JSON.value,
      command=shlex.join(['python', '-m', 'alexnet_jax.benchmark', *sys.argv[1:]]))


if __name__ == '__main__':
  cli.run(main, _CONFIG, config_required=False)
