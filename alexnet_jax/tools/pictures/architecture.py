"""The architecture picture: `describe`'s report of the compiled split, drawn.

A column per tower, a block per layer (output per tower, parameters per
tower), and an arrow between columns wherever the compiled train step has a
collective, labelled with its kind and the bytes each device sends per
step. `architecture_elements` (pure) says what is drawn, from the report
that `python -m alexnet_jax.describe --json` prints; `draw_architecture`
draws it; `picture_architecture` writes DIR/NAME.png, .svg and .json.
"""

import json
from pathlib import Path
import textwrap

import numpy as np

from alexnet_jax.core import parallel
from alexnet_jax.tools import placement
from alexnet_jax.tools.pictures.output import DPI
from alexnet_jax.tools.tables import format_bytes

TOWER_COLOURS = ('#cfe2f3', '#fce5cd', '#d9ead3', '#ead1dc')  # Fills, tower 0..3.
ARROW_COLOUR = '#b45f06'
REPLICA_COLOUR = '#38761d'


# Crossings that are not a layer's input get a row of their own, in this order,
# below the layers (`gradients`, `loss/metrics`: hlo.classify's names for
# collectives over `data` outside the towers' scopes).
SOFTMAX = 'softmax'


def _device_grid(report: dict) -> np.ndarray:
  """Device ids laid out as the mesh (report['mesh'] order, row-major)."""
  ids = [d['id'] for d in report['devices']]
  return np.array(ids).reshape(tuple(report['mesh'].values()))


def architecture_elements(report: dict) -> dict:
  """What the architecture picture draws, from `placement.describe`'s report.

  Pure (reads only the report, draws nothing), so a test can hold it
  against `describe --json`. Returns
    columns:  one per tower of the first data replica, with the devices
              holding it; `frames` groups columns by device (one frame per
              device when split, one around both towers when not).
    replicas: the other devices along `data` (drawn as one dashed stack), or
              None when the mesh has no data axis of size > 1.
    rows:     input, the report's layers (output per tower, parameters per
              tower), the softmax, then one row per crossing that is not a
              layer's input (e.g. `gradients`).
    crossings: one per row of report['collectives_summary'], unchanged keys
              (crossing, direction, kind, axis, tensors, bytes, sent_bytes),
              plus where it is drawn: `row` (index into rows: the arrow sits
              just above it, at that row's input) and `between` ('towers':
              between the tower columns; 'replicas': from the first replica to
              the others).
    local_reads: rows where a layer reads the other tower with no collective
              drawn there (both towers on one device: a plain concatenation).
  """
  mesh = report['mesh']
  grid = _device_grid(report)
  data_axis = list(mesh).index(parallel.DATA) if parallel.DATA in mesh else None
  first = grid.take(0, axis=data_axis) if data_axis is not None else grid
  first_ids = [int(i) for i in np.ravel(first)]
  towers = report['towers']
  held = next((l['devices_by_tower'] for l in report['layers']
               if l['devices_by_tower']), [first_ids] * towers)
  columns = []
  for t in range(towers):
    devices = [d for d in held[t] if d in first_ids] or first_ids
    columns.append({'tower': t, 'devices': devices})
  frames = []
  for i, column in enumerate(columns):
    if frames and frames[-1]['devices'] == column['devices']:
      frames[-1]['columns'].append(i)
    else:
      frames.append({'devices': column['devices'], 'columns': [i]})
  others = sorted(set(int(i) for i in grid.flat) - set(first_ids))
  replicas = ({'axis': parallel.DATA, 'count': int(mesh[parallel.DATA]),
               'devices': others}
              if data_axis is not None and mesh[parallel.DATA] > 1 else None)

  size = report['image_size']
  rows = [{'name': 'input', 'kind': 'input', 'label': f'image {size}x{size}x3'}]
  for layer in report['layers']:
    rows.append({'name': layer['name'], 'kind': 'layer',
                 'output_per_tower': list(layer['output_per_tower']),
                 'params_per_tower': layer['params_per_tower'],
                 'reads_other_tower': layer['reads_other_tower']})
  classes = report['layers'][-1]['output_per_tower'][-1] * towers
  # Sec. 3.5: one softmax over all classes, whose logits the towers split.
  rows.append({'name': SOFTMAX, 'kind': 'softmax', 'reads_other_tower': towers > 1,
               'label': f'softmax (all {classes} classes)'})
  index = {r['name']: i for i, r in enumerate(rows)}
  model_split = mesh.get(parallel.MODEL, 1) > 1

  crossings = []
  for c in report['collectives_summary']:
    # At the input of the layer it is named after (`fc6`, or `fc6_weights`:
    # fc6's kernel gathered under fsdp); else on a row of its own.
    layer = c['crossing'].split('_')[0]
    if c['crossing'] not in index and layer in index:
      index[c['crossing']] = index[layer]
    if c['crossing'] not in index:
      index[c['crossing']] = len(rows)
      rows.append({'name': c['crossing'], 'kind': 'crossing',
                   'label': c['crossing']})
    axes = c['axis'].split('+')
    between = 'towers' if model_split and parallel.MODEL in axes else 'replicas'
    crossings.append({
        **{k: c[k] for k in ('crossing', 'direction', 'kind', 'axis', 'tensors',
                             'bytes', 'sent_bytes')},
        'row': index[c['crossing']], 'between': between})
  drawn = {c['row'] for c in crossings if c['between'] == 'towers'}
  local_reads = [i for i, r in enumerate(rows)
                 if r.get('reads_other_tower') and i not in drawn]

  mesh_text = ' x '.join(f'{k}={v}' for k, v in mesh.items())
  platform = report['devices'][0]['platform']
  strategy = f', strategy {report["strategy"]}' if 'strategy' in report else ''
  title = (f'AlexNet {report["variant"]}: {size}x{size} images, batch'
           f' {report["batch_size"]} ({report["dtype"]})\n{report["params"]:,}'
           f' parameters; mesh {mesh_text}{strategy}, {len(report["devices"])}'
           f' {platform} device(s)')
  sent = {}
  for c in crossings:
    sent[c['axis']] = sent.get(c['axis'], 0) + c['sent_bytes']
  return {'title': title, 'columns': columns, 'frames': frames,
          'replicas': replicas, 'rows': rows, 'crossings': crossings,
          'local_reads': local_reads, 'sent_per_axis': sent,
          'params': report['params']}


_COL_W, _GAP_W, _ROW_H, _BLOCK_H, _UNIT_IN = 3.3, 4.8, 1.0, 0.66, 0.52


def _block_text(row: dict) -> str:
  if row['kind'] != 'layer':
    return row['label']
  shape = 'x'.join(map(str, row['output_per_tower']))
  if not row['params_per_tower']:
    return f'{row["name"]}  {shape}'
  return f'{row["name"]}  {shape}\n{row["params_per_tower"]:,} params'


def _arrow_label(group: list[dict]) -> str:
  """The crossing's name(s), then a line per collective: kind, pass, bytes sent."""
  names = list(dict.fromkeys(c['crossing'] for c in group))
  lines = [', '.join(names)]
  for c in group:
    short = {'forward': 'fwd', 'backward': 'bwd'}.get(c['direction'], c['direction'])
    # XLA may combine several tensors into one op.
    tensors = f' ({c["tensors"]} tensors)' if c['tensors'] > 1 else ''
    lines.append(f'{c["kind"]} {short}: {format_bytes(c["sent_bytes"])}{tensors}')
  return '\n'.join(lines)


def draw_architecture(elements: dict, out_paths: list[Path]) -> list[str]:
  """Draws `elements` (architecture_elements) to each path; returns the
  arrow labels drawn, one per arrow (a crossing's collectives share one)."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  from matplotlib import patches  # pylint: disable=import-outside-toplevel

  columns, rows, replicas = elements['columns'], elements['rows'], elements['replicas']
  col_x = [i * (_COL_W + _GAP_W) for i in range(len(columns))]
  left, right = col_x[0], col_x[-1] + _COL_W
  ghost_x = right + _GAP_W if replicas else None
  width = max((ghost_x + _COL_W if replicas else right) + 0.5, 10.0)
  y = lambda i: -i * _ROW_H  # Row centres, top to bottom.
  top, bottom = y(0) + 0.75, y(len(rows) - 1) - 0.5
  y_min, y_max = bottom - 1.5, top + 1.6
  fig = Figure(figsize=((width + 0.5) * _UNIT_IN, (y_max - y_min) * _UNIT_IN))
  ax = fig.add_axes((0, 0, 1, 1))
  ax.set_xlim(-0.5, width)
  ax.set_ylim(y_min, y_max)
  ax.axis('off')
  text = dict(ha='center', va='center', fontsize=8)
  wrap = int((width + 0.5) * _UNIT_IN * 72 / (7.5 * 0.56))  # Characters a line holds.

  title = '\n'.join(textwrap.fill(line, wrap * 3 // 4)
                    for line in elements['title'].split('\n'))
  ax.text(left - 0.3, top + 1.05, title,
          ha='left', va='center', fontsize=9, weight='bold')
  # Device frames around the tower columns they hold.
  for frame in elements['frames']:
    x0 = col_x[frame['columns'][0]] - 0.25
    x1 = col_x[frame['columns'][-1]] + _COL_W + 0.25
    ax.add_patch(patches.FancyBboxPatch(
        (x0, bottom), x1 - x0, top - bottom, boxstyle='round,pad=0.05',
        fill=False, edgecolor='#666666', linewidth=1.2))
    ids = '+'.join(map(str, frame['devices']))
    n = len(frame['columns'])
    what = ('both towers' if n == 2 else f'{n} towers' if n > 2 else
            f'tower {columns[frame["columns"][0]]["tower"]}')
    ax.text((x0 + x1) / 2, top + 0.3, f'device {ids}: {what}', **text, weight='bold')
  if replicas:
    ax.add_patch(patches.FancyBboxPatch(
        (ghost_x, bottom), _COL_W, top - bottom, boxstyle='round,pad=0.05',
        fill=False, edgecolor=REPLICA_COLOUR, linestyle='--', linewidth=1.2))
    ids = '+'.join(map(str, replicas['devices']))
    ax.text(ghost_x + _COL_W / 2, top + 0.3, f'device {ids}', **text,
            weight='bold', color=REPLICA_COLOUR)
    ax.text(ghost_x + _COL_W / 2, (top + bottom) / 2,
            f'{replicas["count"] - 1} more data\nreplica(s) of all\nthe towers, each\n'
            'on its own slice\nof the batch', **text, color=REPLICA_COLOUR)

  # A block per row and tower; crossing-only rows (gradients, ...) in grey.
  for i, row in enumerate(rows):
    for c, x in zip(columns, col_x):
      layer = row['kind'] == 'layer'
      fill = (TOWER_COLOURS[c['tower'] % len(TOWER_COLOURS)]
              if layer and row['params_per_tower'] else
              'white' if layer else '#eeeeee')
      ax.add_patch(patches.FancyBboxPatch(
          (x, y(i) - _BLOCK_H / 2), _COL_W, _BLOCK_H, boxstyle='round,pad=0.02',
          facecolor=fill, edgecolor='#444444',
          linewidth=1.8 if row.get('reads_other_tower') else 0.8))
      ax.text(x + _COL_W / 2, y(i), _block_text(row), **text)
  # The forward flow down each column (image .. softmax).
  for i in range(len(rows) - 1):
    if rows[i + 1]['kind'] == 'crossing':
      continue
    for x in col_x:
      ax.annotate('', xy=(x + _COL_W / 2, y(i + 1) + _BLOCK_H / 2),
                  xytext=(x + _COL_W / 2, y(i) - _BLOCK_H / 2),
                  arrowprops=dict(arrowstyle='->', color='#444444', lw=0.8))
  # Layers that read the other tower on the same device: no transfer.
  for i in elements['local_reads']:
    ya = y(i) + _ROW_H / 2
    for x0, x1 in zip(col_x, col_x[1:]):
      ax.plot([x0 + _COL_W, x1], [ya, ya], linestyle=':', color='#444444', lw=1.2)
      ax.text((x0 + _COL_W + x1) / 2, ya + 0.07, 'concatenated on the device',
              ha='center', va='bottom', fontsize=7, color='#444444')

  # Collectives: one arrow per (row, between): at a layer's input, or level
  # with a crossing-only row.
  groups = {}
  for c in elements['crossings']:
    groups.setdefault((c['row'], c['between']), []).append(c)
  labels = []
  for (i, between), group in groups.items():
    ya = y(i) if rows[i]['kind'] == 'crossing' else y(i) + _ROW_H / 2
    if between == 'towers':
      pairs, colour = [(x0 + _COL_W, x1) for x0, x1 in zip(col_x, col_x[1:])], ARROW_COLOUR
    else:
      pairs, colour = [(right + 0.3, ghost_x - 0.1)], REPLICA_COLOUR
    label = _arrow_label(group)
    labels.append(label)
    for x0, x1 in pairs:
      ax.annotate('', xy=(x1, ya), xytext=(x0, ya),
                  arrowprops=dict(arrowstyle='<|-|>', color=colour, lw=1.6,
                                  shrinkA=0, shrinkB=0))
      ax.text((x0 + x1) / 2, ya + 0.07, label, ha='center', va='bottom',
              fontsize=6.5, color=colour,
              bbox=dict(facecolor='white', edgecolor='none', pad=0.5, alpha=0.85))

  sent = elements['sent_per_axis']
  footer = ('Arrows: the collectives XLA compiled into the train step (read from'
            ' its HLO, as python -m alexnet_jax.describe lists them), with the'
            ' bytes each device sends per step. ')
  footer += ('Sent per device per step: ' + ', '.join(
      f'{format_bytes(v)} over {k}' for k, v in sent.items()) + '.' if sent else
             'No collective: no device sends anything to another.')
  footer += (' Each block shows one tower\'s output and parameters (bold: the'
             ' layer reads both towers).')
  ax.text(left - 0.3, bottom - 0.3, textwrap.fill(footer, wrap), ha='left',
          va='top', fontsize=7.5)
  for path in out_paths:
    fig.savefig(path, dpi=DPI)
  return labels


def picture_architecture(settings, out_dir: Path, name: str) -> list[Path]:
  """The `architecture` command: OUT_DIR/NAME.png, .svg, .json (after
  `run.launch.start`)."""
  report = placement.describe(settings, parallel.make_mesh(settings.mesh))
  elements = architecture_elements(report)
  paths = [out_dir / f'{name}.png', out_dir / f'{name}.svg']
  draw_architecture(elements, paths)
  json_path = out_dir / f'{name}.json'
  json_path.write_text(json.dumps({'elements': elements, 'report': report}))
  return paths + [json_path]
