"""Pictures: the split as compiled, conv1's kernels per tower, learning curves.

    python -m alexnet_jax.visualize architecture --config=configs/two_gpu.py --out=DIR
    python -m alexnet_jax.visualize kernels --workdir=DIR [--step=N] [--out=FILE.png]
    python -m alexnet_jax.visualize curves --workdir=DIR [--workdir=DIR2 | DIR2 ...] --out=FILE.png

`architecture` draws `inspect.describe`'s report (the analysis `inspect --json`
prints): a column per tower, a block per layer (output per tower, parameters
per tower), and an arrow between columns wherever the compiled train step has
a collective, labelled with its kind and the bytes each device sends per step.
Writes DIR/NAME.png, .svg and .json (the drawn elements and the report).

`kernels` draws the latest checkpoint's conv1 kernels, one panel per tower,
as the paper's Fig. 3 shows its 96 (48 per GPU), and measures how
colour-selective each tower is (`colour_selectivity`). Writes the PNG and a
JSON of the measure next to it, and prints the measure.

`curves` plots train and eval loss, top-1 and the learning rate against step
from each workdir's metrics.jsonl, runs on shared axes (`plot_curves`).

Figures are matplotlib `Figure` objects saved through the Agg canvas: no
pyplot, no GUI backend, nothing global set.
"""

import json
import math
import os
from pathlib import Path
import sys
import tempfile
import textwrap

from absl import flags
import numpy as np

from alexnet_jax import cli
from alexnet_jax import parallel
from alexnet_jax.errors import UserError

COMMANDS = ('architecture', 'kernels', 'curves')
FORMATS = ('.png', '.svg', '.pdf')
DPI = 150
TOWER_COLOURS = ('#cfe2f3', '#fce5cd', '#d9ead3', '#ead1dc')  # Fills, tower 0..3.
ARROW_COLOUR = '#b45f06'
REPLICA_COLOUR = '#38761d'


# --- Architecture: the report -> what is drawn (pure) ---------------------------

# Crossings that are not a layer's input get a row of their own, in this order,
# below the layers (`gradients`, `loss/metrics`: hlo.classify's names for
# collectives over `data` outside the towers' scopes).
SOFTMAX = 'softmax'


def _device_grid(report: dict) -> np.ndarray:
  """Device ids laid out as the mesh (report['mesh'] order, row-major)."""
  ids = [d['id'] for d in report['devices']]
  return np.array(ids).reshape(tuple(report['mesh'].values()))


def architecture_elements(report: dict) -> dict:
  """What the architecture picture draws, from `inspect.describe`'s report.

  Pure (reads only the report, draws nothing), so a test can hold it
  against `inspect --json`. Returns
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


# --- Architecture: drawing --------------------------------------------------------

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
  from alexnet_jax import inspect  # pylint: disable=import-outside-toplevel
  names = list(dict.fromkeys(c['crossing'] for c in group))
  lines = [', '.join(names)]
  for c in group:
    short = {'forward': 'fwd', 'backward': 'bwd'}.get(c['direction'], c['direction'])
    # XLA may combine several tensors into one op.
    tensors = f' ({c["tensors"]} tensors)' if c['tensors'] > 1 else ''
    lines.append(f'{c["kind"]} {short}: {inspect._size(c["sent_bytes"])}{tensors}')
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

  from alexnet_jax import inspect  # pylint: disable=import-outside-toplevel
  sent = elements['sent_per_axis']
  footer = ('Arrows: the collectives XLA compiled into the train step (read from'
            ' its HLO, as python -m alexnet_jax.inspect lists them), with the'
            ' bytes each device sends per step. ')
  footer += ('Sent per device per step: ' + ', '.join(
      f'{inspect._size(v)} over {k}' for k, v in sent.items()) + '.' if sent else
             'No collective: no device sends anything to another.')
  footer += (' Each block shows one tower\'s output and parameters (bold: the'
             ' layer reads both towers).')
  ax.text(left - 0.3, bottom - 0.3, textwrap.fill(footer, wrap), ha='left',
          va='top', fontsize=7.5)
  for path in out_paths:
    fig.savefig(path, dpi=DPI)
  return labels


# --- Kernels -----------------------------------------------------------------------


def latest_step_dir(workdir: Path, step: int | None = None) -> Path:
  """WORKDIR/checkpoints/STEP: the newest, or `step`; UserError if none."""
  root = Path(workdir) / 'checkpoints'
  steps = sorted(int(p.name) for p in root.iterdir()
                 if p.name.isdigit() and p.is_dir()) if root.is_dir() else []
  if not steps:
    raise UserError(f'{workdir} holds no checkpoint (no {root}/<step> folder);'
                    ' train first with python -m alexnet_jax.main --workdir='
                    f'{workdir}.')
  if step is None:
    return root / str(steps[-1])
  if step not in steps:
    raise UserError(f'{workdir} has no checkpoint of step {step}; it has steps'
                    f' {", ".join(map(str, steps))}.')
  return root / str(step)


def conv1_kernels(state: dict, where: str) -> np.ndarray:
  """conv1's kernels from a loaded checkpoint: (towers, kh, kw, 3, kernels)."""
  params = state.get('params') if isinstance(state, dict) else None
  conv1 = params.get('conv1') if isinstance(params, dict) else None
  kernel = conv1.get('kernel') if isinstance(conv1, dict) else None
  if isinstance(kernel, dict):  # An nnx Variable's state: {'value': array}.
    kernel = kernel.get('value')
  if kernel is None or np.ndim(kernel) != 5 or np.shape(kernel)[3] != 3:
    shape = 'none' if kernel is None else str(tuple(np.shape(kernel)))
    raise UserError(
        f'The checkpoint {where} has no conv1 kernels of shape (towers, kh, kw,'
        f' 3, kernels) (found {shape}): it is not of a network this project'
        ' builds with towers, so there are no first-layer colour filters to draw.')
  return np.asarray(kernel, np.float32)


def colour_selectivity(kernels: np.ndarray) -> np.ndarray:
  """Per kernel, the share of its energy outside the grey direction.

  A kernel w (kh, kw, 3) splits, pixel by pixel, into its grey part (each
  pixel's R, G, B replaced by their mean: the projection onto R=G=B) and the
  rest; the measure is |w - grey(w)|^2 / |w|^2. 0: colour-agnostic (a
  luminance filter, Fig. 3's upper GPU); 2/3: a kernel seeing one channel
  only; 1 at most (colours opposing with no brightness, e.g. red against
  green). Untrained iid noise also gives 2/3 on average, so read it next to
  `neighbour_correlation`: it speaks of learned filters only.
  Input (..., kh, kw, 3, n); output (..., n).
  """
  w = np.asarray(kernels, np.float64)
  grey = w.mean(axis=-2, keepdims=True)
  energy = np.square(w).sum(axis=(-4, -3, -2))
  chroma = np.square(w - grey).sum(axis=(-4, -3, -2))
  return chroma / np.maximum(energy, 1e-30)


def neighbour_correlation(kernels: np.ndarray) -> np.ndarray:
  """Per kernel, how alike horizontally and vertically adjacent pixels are.

  sum(a * b) / sum((a^2 + b^2) / 2) over all adjacent pairs (a, b) and the
  three channels: near 0 for iid noise (an untrained kernel), towards 1 for
  smooth blobs and edges like Fig. 3's. It says whether the colour measure
  is about learned filters at all. Input (..., kh, kw, 3, n); output (..., n).
  """
  w = np.asarray(kernels, np.float64)
  pairs = ((w[..., 1:, :, :, :], w[..., :-1, :, :, :]),
           (w[..., :, 1:, :, :], w[..., :, :-1, :, :]))
  num = sum((a * b).sum(axis=(-4, -3, -2)) for a, b in pairs)
  den = sum(((a * a + b * b) / 2).sum(axis=(-4, -3, -2)) for a, b in pairs)
  return num / np.maximum(den, 1e-30)


def grid_shape(n: int) -> tuple[int, int]:
  """(rows, columns) of a tower's panel: 3 x 16 for 48 kernels, as Fig. 3."""
  rows = math.ceil(n / 16) if n > 16 else (2 if n >= 8 else 1)
  return rows, math.ceil(n / rows)


def kernel_grid(kernels: np.ndarray, pad: int = 1) -> np.ndarray:
  """One tower's kernels (kh, kw, 3, n) as an RGB image in [0, 1].

  Each kernel is scaled alone, 0.5 + w / (2 max|w|), as Fig. 3 shows them: the
  same factor on R, G and B, so grey stays grey and hue is kept. Padding is
  white.
  """
  kh, kw, _, n = kernels.shape
  rows, cols = grid_shape(n)
  out = np.ones((rows * (kh + pad) - pad, cols * (kw + pad) - pad, 3), np.float32)
  for k in range(n):
    w = kernels[..., k]
    img = 0.5 + w / (2 * max(float(np.abs(w).max()), 1e-12))
    r, c = divmod(k, cols)
    out[r * (kh + pad):r * (kh + pad) + kh, c * (kw + pad):c * (kw + pad) + kw] = img
  return out


def draw_kernels(kernels: np.ndarray, out_path: Path, title: str) -> dict:
  """One panel per tower (Fig. 3); returns the colour measure drawn."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  towers = kernels.shape[0]
  selectivity = colour_selectivity(kernels)
  smooth = neighbour_correlation(kernels)
  grids = [kernel_grid(kernels[t]) for t in range(towers)]
  h, w = grids[0].shape[:2]
  panel_w = min(9.0, max(5.5, w / 12))
  wrap = int(panel_w * 14)
  title = textwrap.fill(title, wrap)
  note = textwrap.fill(
      'Colour selectivity: 0 for grey kernels, 0.67 for one-channel kernels and'
      ' for random ones; neighbour correlation: 0 for random kernels, towards 1'
      ' for smooth ones (visualize.py).', int(panel_w * 16))
  lines = title.count('\n') + note.count('\n') + 2
  fig = Figure(figsize=(panel_w + 0.4, towers * (panel_w * h / w + 0.35)
                        + 0.2 * lines + 0.3), layout='constrained')
  fig.suptitle(title, fontsize=9)
  fig.supxlabel(note, fontsize=7.5)
  for t, grid in enumerate(grids):
    ax = fig.add_subplot(towers, 1, t + 1)
    ax.imshow(grid, interpolation='nearest')
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f'tower {t}: {kernels.shape[-1]} kernels, colour selectivity'
                 f' {selectivity[t].mean():.2f}, neighbour correlation'
                 f' {smooth[t].mean():.2f}', fontsize=8)
  fig.savefig(out_path, dpi=DPI)
  return {'per_tower_mean': [float(s.mean()) for s in selectivity],
          'per_tower_median': [float(np.median(s)) for s in selectivity],
          'per_kernel': [[float(x) for x in s] for s in selectivity],
          'neighbour_correlation_per_tower_mean': [float(c.mean()) for c in smooth],
          'kernel_shape': list(kernels.shape[1:])}


# --- Curves ------------------------------------------------------------------------


def read_metrics(run_dir: Path) -> list[dict]:
  path = Path(run_dir) / 'metrics.jsonl'
  if not path.is_file():
    raise UserError(f'{run_dir} has no metrics.jsonl: not a training workdir'
                    ' (python -m alexnet_jax.main --workdir=DIR writes one).')
  rows = []
  for line in path.read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      continue  # A line cut by kill -9 while it was written.
  return rows


def run_colours(count: int) -> list:
  """One colour per run, none twice: matplotlib's 10-colour cycle, tab20 up
  to 20 runs, evenly spaced along `turbo` beyond (a 16-point sweep's curves
  once repeated colours)."""
  from matplotlib import colormaps  # pylint: disable=import-outside-toplevel
  if count <= 10:
    return [f'C{i}' for i in range(count)]
  if count <= 20:
    return [colormaps['tab20'](i) for i in range(count)]
  return [colormaps['turbo'](i / (count - 1)) for i in range(count)]


def plot_curves(run_dirs: list, out_path, labels=None) -> None:
  """Train/eval loss, top-1 and the learning rate against step, one colour per run.

  `run_dirs`: workdirs holding metrics.jsonl; `labels`: one per run (default:
  the folder names). Train values are lines, evaluations dots on dashed lines.
  The format follows `out_path`'s suffix (.png, .svg, .pdf).
  """
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  run_dirs = [Path(d) for d in run_dirs]
  labels = list(labels) if labels else _run_labels(run_dirs)
  if len(labels) != len(run_dirs):
    raise ValueError(f'{len(labels)} labels for {len(run_dirs)} runs')
  records = [read_metrics(d) for d in run_dirs]
  fig = Figure(figsize=(14, 3.9), layout='constrained')
  panels = fig.subplots(1, 3)
  colours = run_colours(len(run_dirs))
  for rows, label, colour in zip(records, labels, colours):
    def series(key):
      pts = [(r['step'], r[key]) for r in rows if key in r and 'step' in r]
      return ([p[0] for p in pts], [p[1] for p in pts])
    for ax, key in ((panels[0], 'loss'), (panels[1], 'top1')):
      ax.plot(*series(f'train_{key}'), color=colour, lw=1, alpha=0.8)
      ax.plot(*series(f'eval_{key}'), color=colour, lw=1, linestyle='--',
              marker='o', markersize=3.5)
    panels[2].plot(*series('learning_rate'), color=colour, lw=1.2, label=label)
  for ax, name in zip(panels, ('loss (cross-entropy)', 'top-1 accuracy',
                               'learning rate')):
    ax.set_title(name, fontsize=10)
    ax.set_xlabel('step', fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
  panels[1].set_ylim(0, 1)
  panels[2].ticklabel_format(axis='y', style='plain', useOffset=False)
  # Colour: the run; line style: train (solid) or evaluation (dashed, dots).
  panels[0].plot([], [], color='black', lw=1, label='train')
  panels[0].plot([], [], color='black', lw=1, linestyle='--', marker='o',
                 markersize=3.5, label='eval')
  panels[0].legend(fontsize=8, loc='upper right')
  fig.legend(*panels[2].get_legend_handles_labels(), loc='outside right upper',
             fontsize=8, title='run', title_fontsize=8)
  fig.savefig(out_path, dpi=DPI)


def _run_labels(run_dirs: list[Path]) -> list[str]:
  names = [d.resolve().name for d in run_dirs]
  if len(set(names)) == len(names):
    return names
  return [f'{d.resolve().parent.name}/{d.resolve().name}' for d in run_dirs]


# --- The command line --------------------------------------------------------------


def writable_file(path: str, formats=FORMATS) -> Path:
  """`path` if a picture can be written there, else UserError (before any work)."""
  out = Path(path)
  if out.suffix.lower() not in formats:
    raise UserError(f'--out={path} should end in one of {", ".join(formats)}'
                    ' (the picture format).')
  writable_dir(str(out.parent))
  if out.is_dir() or (out.exists() and not os.access(out, os.W_OK)):
    raise UserError(f'Cannot write {out}: it is a folder or read-only.')
  return out


def writable_dir(path: str) -> Path:
  out = Path(path)
  try:
    out.mkdir(parents=True, exist_ok=True)
    tempfile.TemporaryFile(dir=out).close()
  except OSError as e:
    raise UserError(f'Cannot write pictures to {out}: {e.strerror or e}; pass'
                    ' --out= a folder you can write to.') from None
  return out


def picture_architecture(config, out_dir: Path, name: str) -> list[Path]:
  """The `architecture` command: OUT_DIR/NAME.png, .svg, .json."""
  from alexnet_jax import inspect  # pylint: disable=import-outside-toplevel
  cli.check(config)  # Host devices, then the config: before anything compiles.
  report = inspect.describe(config, parallel.make_mesh(config))
  elements = architecture_elements(report)
  paths = [out_dir / f'{name}.png', out_dir / f'{name}.svg']
  draw_architecture(elements, paths)
  json_path = out_dir / f'{name}.json'
  json_path.write_text(json.dumps({'elements': elements, 'report': report}))
  return paths + [json_path]


def _run_description(workdir: Path) -> str:
  """'two_tower, width 0.25, shapes10 67x67' from the run's config.json."""
  try:
    config = json.loads((Path(workdir) / 'config.json').read_text())
    model = config['model']
    return (f'{model["variant"]}, width {model["width"]:g}, {config["dataset"]}'
            f' {config["image_size"]}x{config["image_size"]}')
  except (OSError, ValueError, KeyError, TypeError):
    return Path(workdir).resolve().name


def picture_kernels(workdir: Path, step: int | None = None,
                    out: Path | None = None) -> dict:
  """The `kernels` command: the picture (default WORKDIR/kernels_stepN.png)
  and, next to it, the measures as JSON; returns the measures."""
  from alexnet_jax import checkpoint  # pylint: disable=import-outside-toplevel
  step_dir = latest_step_dir(workdir, step)
  out = out or writable_file(str(Path(workdir) / f'kernels_step{step_dir.name}.png'))
  try:
    state = checkpoint.load_numpy(step_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'Could not read the checkpoint {step_dir}'
                    f' ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}).'
                    ' It may be damaged; pass --step= another one.') from None
  kernels = conv1_kernels(state, str(step_dir))
  title = (f'conv1 kernels ({kernels.shape[1]}x{kernels.shape[2]}x3) at step'
           f' {step_dir.name}, one panel per tower: {_run_description(workdir)}')
  measure = draw_kernels(kernels, out, title)
  measure = {'checkpoint': str(step_dir), 'step': int(step_dir.name),
             'definition': {
                 'colour_selectivity': 'share of each kernel\'s energy outside'
                                       ' the grey (R=G=B) direction: 0 grey,'
                                       ' 2/3 one channel only or iid noise',
                 'neighbour_correlation': 'sum(a*b) / sum((a^2+b^2)/2) over'
                                          ' adjacent pixels: 0 iid noise, 1 flat'},
             **measure, 'picture': str(out)}
  out.with_suffix('.json').write_text(json.dumps(measure, indent=1))
  return measure


def main(argv):
  command = argv[1] if len(argv) > 1 else ''
  if command not in COMMANDS:
    raise UserError(f'Say what to draw: python -m alexnet_jax.visualize'
                    f' {"|".join(COMMANDS)} ... (got {command or "nothing"}).')
  rest = argv[2:]
  if command == 'architecture':
    if _CONFIG.value is None or rest:
      raise UserError('architecture takes --config=FILE (e.g. configs/two_gpu.py)'
                      ' and --out=DIR, nothing else.')
    out_dir = writable_dir(_OUT.value or 'docs')
    name = _NAME.value or _default_name()
    for path in picture_architecture(_CONFIG.value, out_dir, name):
      print(path)
  elif command == 'kernels':
    if len(_WORKDIR.value or []) != 1 or rest:
      raise UserError('kernels takes one --workdir=DIR (a training run).')
    out = writable_file(_OUT.value) if _OUT.value else None
    measure = picture_kernels(Path(_WORKDIR.value[0]), _STEP.value, out)
    for t, (mean, median, smooth) in enumerate(zip(
        measure['per_tower_mean'], measure['per_tower_median'],
        measure['neighbour_correlation_per_tower_mean'])):
      print(f'tower {t}: colour selectivity {mean:.3f} (mean over'
            f' {len(measure["per_kernel"][t])} kernels; median {median:.3f});'
            f' neighbour correlation {smooth:.3f}')
    print(measure['picture'])
  else:
    runs = list(_WORKDIR.value or []) + rest
    if not runs or not _OUT.value:
      raise UserError('curves takes --workdir=DIR (one or more) and --out=FILE.png.')
    out = writable_file(_OUT.value)
    plot_curves(runs, out)
    print(out)
  sys.stdout.flush()


def _default_name() -> str:
  """architecture_<config file stem>[_<arg>] for the picture's files."""
  spec = flags.FLAGS['config'].config_filename
  path, _, arg = spec.partition(':')
  return '_'.join(['architecture', Path(path).stem] + ([arg] if arg else []))


class _OptionalConfig:
  """The --config flag, for cli.run, when only one command needs one."""

  def __init__(self, holder):
    self.holder = holder

  @property
  def value(self):
    return self.holder.value if self.holder.value is not None else {}


if __name__ == '__main__':
  _CONFIG = cli.define_config_flag()
  _OUT = flags.DEFINE_string('out', None, 'architecture: a folder (default docs/);'
                             ' kernels, curves: the picture file (.png, .svg, .pdf).')
  _NAME = flags.DEFINE_string('name', None, 'architecture: the files\' name'
                              ' (default architecture_<config>).')
  _WORKDIR = flags.DEFINE_multi_string('workdir', None, 'A training workdir'
                                       ' (curves: several).')
  _STEP = flags.DEFINE_integer('step', None, 'kernels: the checkpoint step'
                               ' (default the latest).')
  cli.run(main, _OptionalConfig(_CONFIG))
