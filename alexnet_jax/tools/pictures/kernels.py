"""conv1's kernels per tower, as Fig. 3 of the paper shows its 96 (48 per GPU),
and how colour-selective each tower is.

Fig. 3's finding: the towers specialise, one GPU's kernels largely
colour-agnostic, the other's colour-specific. `colour_selectivity` measures
that per kernel, `neighbour_correlation` whether a kernel is a learned
filter at all; `picture_kernels` draws a checkpoint's kernels, one panel per
tower, and writes the measures as JSON beside the picture.
"""

import json
import math
from pathlib import Path
import textwrap

import numpy as np

from alexnet_jax.errors import UserError
from alexnet_jax.run import checkpoint
from alexnet_jax.tools.pictures.output import DPI, writable_file


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
  saved = checkpoint.saved_steps(workdir, step)
  step_dir = Path(workdir) / 'checkpoints' / str(saved[-1] if step is None else step)
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


def summary_lines(measure: dict) -> list[str]:
  """What the `kernels` command prints: the measures per tower, the picture."""
  lines = []
  for t, (mean, median, smooth) in enumerate(zip(
      measure['per_tower_mean'], measure['per_tower_median'],
      measure['neighbour_correlation_per_tower_mean'])):
    lines.append(f'tower {t}: colour selectivity {mean:.3f} (mean over'
                 f' {len(measure["per_kernel"][t])} kernels; median {median:.3f});'
                 f' neighbour correlation {smooth:.3f}')
  return lines + [measure['picture']]


def tower_split(conv1: np.ndarray, seed: int = 0) -> tuple[np.ndarray, bool]:
  """Per tower, the mean colour selectivity of its kernels, and whether the
  towers are real: a one-tower net's kernels are split into two halves at
  random (seeded), the control for how far apart two towers fall by chance."""
  if conv1.shape[0] >= 2:
    return colour_selectivity(conv1).mean(-1), True
  per_kernel = colour_selectivity(conv1[0])
  order = np.random.default_rng(seed).permutation(per_kernel.shape[-1])
  halves = np.array_split(per_kernel[order], 2)
  return np.array([h.mean() for h in halves]), False


def picture_sweep(sweep_dir: Path) -> dict:
  """Figure 3 over a sweep's seeds: conv1 per tower of every completed
  point (figure3.png), and in figure3.json, per point (over seeds), the
  less and the more colour-selective tower's mean selectivity and their gap,
  mean and sample standard deviation. Which tower ends up colour-specific
  differs between runs, so towers are ordered by selectivity within a run.
  The towers specialise if the two-tower gap exceeds the one-tower control's
  (random halves of one tower) by more than twice their spreads combined."""
  sweep_dir = Path(sweep_dir)
  runs = []
  for folder in sorted(p for p in sweep_dir.iterdir() if (p / 'summary.json').is_file()):
    if '"completed"' not in (folder / 'summary.json').read_text():
      continue
    step_dir = folder / 'checkpoints' / str(checkpoint.saved_steps(folder)[-1])
    conv1 = conv1_kernels(checkpoint.load_numpy(step_dir), str(step_dir))
    means, real = tower_split(conv1)
    config = json.loads((folder / 'config.json').read_text())
    runs.append({'folder': folder.name, 'variant': config['model']['variant'],
                 'seed': config['seed'], 'towers': means.tolist(), 'real_towers': real,
                 'conv1': conv1})
  if not runs:
    return {}
  summary = {'definition': 'colour selectivity of a kernel: the share of its'
                           ' energy outside the grey (R=G=B) direction; per'
                           ' tower the mean over its kernels', 'points': {}}
  for variant in dict.fromkeys(r['variant'] for r in runs):
    mine = [r for r in runs if r['variant'] == variant]
    low = [min(r['towers']) for r in mine]
    high = [max(r['towers']) for r in mine]
    gap = [h - l for h, l in zip(high, low)]
    summary['points'][variant] = {
        'seeds': [r['seed'] for r in mine], 'real_towers': mine[0]['real_towers'],
        **{f'{name}_mean': float(np.mean(v)) for name, v in
           (('less_selective_tower', low), ('more_selective_tower', high), ('gap', gap))},
        **{f'{name}_std': float(np.std(v, ddof=1)) if len(v) > 1 else None
           for name, v in (('less_selective_tower', low),
                           ('more_selective_tower', high), ('gap', gap))}}
  real = [v for v in summary['points'].values() if v['real_towers']]
  control = [v for v in summary['points'].values() if not v['real_towers']]
  if real and control and real[0]['gap_std'] is not None and control[0]['gap_std'] is not None:
    spread = 2 * math.hypot(real[0]['gap_std'], control[0]['gap_std'])
    summary['towers_specialise'] = bool(real[0]['gap_mean'] - control[0]['gap_mean'] > spread)
    summary['rule'] = ('two-tower gap minus the one-tower control\'s gap beyond'
                       ' twice their seeds\' spreads combined')
  _draw_sweep([r for r in runs if r['real_towers']] or runs, sweep_dir / 'figure3.png')
  summary['picture'] = str(sweep_dir / 'figure3.png')
  (sweep_dir / 'figure3.json').write_text(json.dumps(summary, indent=1) + '\n')
  return summary


def _draw_sweep(runs: list[dict], out_path: Path) -> None:
  """conv1 per tower (columns) for every seed (rows)."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  towers = runs[0]['conv1'].shape[0]
  fig = Figure(figsize=(4.5 * towers, 1.9 * len(runs) + 0.5), layout='constrained')
  axes = fig.subplots(len(runs), towers, squeeze=False)
  for row, run in zip(axes, runs):
    for t, ax in enumerate(row):
      ax.imshow(kernel_grid(run['conv1'][t]), interpolation='nearest')
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(f'{run["variant"]} seed {run["seed"]}, tower {t}: colour'
                   f' selectivity {run["towers"][t]:.2f}', fontsize=8)
  fig.suptitle('conv1 per tower (Fig. 3), each kernel scaled alone', fontsize=9)
  fig.savefig(out_path, dpi=DPI)
