"""The benchmark's report as text: the console table, and `--markdown_from`'s
markdown rows, from which every benchmark table in the docs is generated."""

import json

from alexnet_jax.errors import UserError
from alexnet_jax.tools.tables import format_table


def _mib(x) -> str:
  if not x:
    return 'n/a'
  return f'{x / 2**20:,.0f}' if x >= 10 * 2**20 else f'{x / 2**20:.2f}'


def _mfu(x) -> str:
  return f'{100 * x:.1f}%' if x is not None else 'n/a'


def _roofline_table(row: dict) -> list[str]:
  """One placement's roofline, layer by layer (roofline.py)."""
  r = row['roofline']
  lines = [(f'Roofline of {row["name"]}, batch {row["batch_size"]}, {row["dtype"]}:'
            f' {1e3 * r["bound_seconds"]:.3f} ms per step at best, measured'
            f' {1e3 * row["seconds_per_step"]:.3f} ms ({_mfu(row["roofline_fraction"])}'
            ' of the bound reached).')]
  lines += format_table(
      ['layer', 'GFLOP/step', 'MB/step', 'FLOP/byte', 'bound ms', 'limited by'],
      [[l['layer'], f'{l["flops"] / 1e9:.2f}', f'{l["bytes"] / 1e6:.1f}',
        f'{l["flops_per_byte"]:.1f}', f'{1e3 * l["bound_seconds"]:.3f}',
        l['limited_by']] for l in r['layers']], right={1, 2, 3, 4})
  return lines


def format_report(report: dict) -> str:
  r = report
  lines = [
      f'AlexNet {r["variant"]} (width {r["width"]:g}), {r["image_size"]}x'
      f'{r["image_size"]} images: train step (forward, backward, SGD update);'
      f' input {r["input_description"]}.',
      f'{r["num_devices"]} {r["backend"]} device(s) ({r["device_kind"]};'
      f' host: {r["host_cpu"]}, {r["host_cpu_count"]} CPUs), jax'
      f' {r["jax_version"]}, jaxlib {r["jaxlib_version"]}'
      f' ({r["platform_version"]}), flax {r["flax_version"]}, {r["date"]}.',
      f'Command: {r["command"]}',
      f'Load average (1, 5, 15 min): before {r["load_average_before"]},'
      f' after {r["load_average_after"]}.',
      f'{r["repeats"]} repeat(s) of {r["steps"]} step(s) after {r["warmup"]}'
      ' warm-up step(s), interleaved across placements; median images/s over'
      ' repeats, spread = (max - min) / median.',
      '']
  rows = [[p['name'], ' x '.join(f'{k}={v}' for k, v in p['mesh'].items()),
           str(p['batch_size']), p['dtype'],
           f'{p["median_images_per_sec"]:.1f}', f'{100 * p["spread"]:.0f}%',
           f'{p["seconds_per_step"]:.3f}', f'{p["ratio_to_one_device"]:.2f}',
           f'{p["compile_seconds"]:.1f}', _mib(p['compiled_peak_bytes_per_device']),
           _mfu(p['mfu']), _mfu(p.get('roofline_fraction'))]
          for p in r['rows']]
  lines += format_table(
      ['placement', 'mesh', 'batch', 'dtype', 'images/s', 'spread', 's/step',
       'vs one device', 'compile s', 'MiB/device', 'MFU', 'of roofline'],
      rows, right={2, 4, 5, 6, 7, 8, 9, 10, 11})
  lines.append('')
  for p in r['rows']:
    if p.get('roofline') and p['name'] == r['baseline']:
      lines += _roofline_table(p) + ['']
  flops = sorted({p['model_flops_per_image'] for p in r['rows']})
  lines.append('Train-step FLOPs per image: ' + ', '.join(
      f'{f / 1e9:.4g}' for f in flops) + f' GFLOP ({r["flops_source"]}).')
  for name, reason in r['skipped_strategies'].items():
    lines.append(f'Not run: strategy {name} ({reason})')
  for source in dict.fromkeys(p['peak_source'] for p in r['rows']):
    if source:
      lines.append(f'Peak for MFU: {source}.')
  lines.append(f'Memory: {r["memory_source"]}.')
  if 'roofline_source' in r:
    lines.append(f'Roofline: {r["roofline_source"]}.')
  if 'link_prediction' in r:
    from alexnet_jax.tools.benchmarking import links  # pylint: disable=import-outside-toplevel
    lines += [''] + links.format_prediction(r['link_prediction'], r)
  if r['backend'] == 'cpu':
    lines.append('On CPU the host devices share the same cores: a split adds no'
                 ' compute, so these ratios measure overheads, not what separate'
                 ' accelerators would give; MFU is over the whole host.')
  return '\n'.join(lines)


def format_markdown(report: dict) -> str:
  """The README's results table for a saved report (one line per row)."""
  r = report
  lines = [
      '| placement | mesh | batch | dtype | images/s (median, min-max) | s/step'
      ' | vs one device | compile s | MiB/device | MFU | of roofline |',
      '|---|---|---|---|---|---|---|---|---|---|---|']
  for p in r['rows']:
    mesh = ' x '.join(f'{k}={v}' for k, v in p['mesh'].items())
    lines.append(
        f'| {p["name"]} | {mesh} | {p["batch_size"]} | {p["dtype"]} |'
        f' {p["median_images_per_sec"]:.1f} ({p["min_images_per_sec"]:.1f}-'
        f'{p["max_images_per_sec"]:.1f}) | {p["seconds_per_step"]:.3f} |'
        f' {p["ratio_to_one_device"]:.2f} | {p["compile_seconds"]:.1f} |'
        f' {_mib(p["compiled_peak_bytes_per_device"])} | {_mfu(p["mfu"])} |'
        f' {_mfu(p.get("roofline_fraction"))} |')
  return '\n'.join(lines)


def markdown_from(path: str) -> str:
  """`--markdown_from=FILE`: the markdown rows of a saved `--json` report."""
  try:
    with open(path) as f:
      return format_markdown(json.load(f))
  except (OSError, ValueError, KeyError) as e:
    raise UserError(f'--markdown_from={path} could not be read as a benchmark'
                    f' report: {e}') from None
