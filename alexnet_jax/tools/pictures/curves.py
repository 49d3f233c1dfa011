"""Learning curves: train and eval loss, top-1 and the learning rate against
step from each workdir's metrics.jsonl, runs on shared axes, one colour each;
and a sweep's training error as Fig. 1 draws it (`plot_sweep_curves`)."""

from pathlib import Path
import textwrap

from alexnet_jax.errors import UserError
from alexnet_jax.run import metric_writer
from alexnet_jax.tools.pictures.output import DPI


def read_metrics(run_dir: Path) -> list[dict]:
  """A workdir's metrics.jsonl rows; UserError if it has none."""
  if not (Path(run_dir) / 'metrics.jsonl').is_file():
    raise UserError(f'{run_dir} has no metrics.jsonl: not a training workdir'
                    ' (python -m alexnet_jax.main --workdir=DIR writes one).')
  return metric_writer.read_rows(run_dir)


def run_colours(count: int) -> list:
  """One colour per run, none twice: matplotlib's 10-colour cycle, tab20 up
  to 20 runs, evenly spaced along `turbo` beyond."""
  from matplotlib import colormaps  # pylint: disable=import-outside-toplevel
  if count <= 10:
    return [f'C{i}' for i in range(count)]
  if count <= 20:
    return [colormaps['tab20'](i) for i in range(count)]
  return [colormaps['turbo'](i / (count - 1)) for i in range(count)]


def plot_curves(run_dirs: list, out_path, labels=None):
  """Train/eval loss, top-1 and the learning rate against step, one colour per run.

  `run_dirs`: workdirs holding metrics.jsonl; `labels`: one per run (default:
  the folder names). Train values are lines, evaluations dots on dashed lines.
  The format follows `out_path`'s suffix (.png, .svg, .pdf). Returns the
  matplotlib Figure drawn.
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
  return fig


def _run_labels(run_dirs: list[Path]) -> list[str]:
  names = [d.resolve().name for d in run_dirs]
  if len(set(names)) == len(names):
    return names
  return [f'{d.resolve().parent.name}/{d.resolve().name}' for d in run_dirs]


def plot_sweep_curves(series: list[dict], out_path, *, x_label='epochs',
                      title=''):
  """Training error (%) against epochs as Fig. 1 draws it: one panel per
  setup, the claim's factor by line style (its better value solid, the
  other dashed: ReLU and tanh in Fig. 1), one colour per value of the other
  keys, and the seeds of a point as a band (min to max) around their mean.

  `series`: one dict per run with 'panel', 'colour', 'style' (labels),
  'solid' (bool), 'x', 'y' (lists) and 'seed'. The legend names only what
  varies: the colours' values and the two line styles. Returns the Figure.
  """
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  panels = list(dict.fromkeys(s['panel'] for s in series))
  colour_names = list(dict.fromkeys(s['colour'] for s in series))
  colours = dict(zip(colour_names, run_colours(len(colour_names))))
  fig = Figure(figsize=(4.6 * len(panels) + 1.6, 3.9), layout='constrained')
  axes = fig.subplots(1, len(panels), squeeze=False)[0]
  styles = {}
  for ax, panel in zip(axes, panels):
    groups = {}
    for s in series:
      if s['panel'] == panel:
        groups.setdefault((s['colour'], s['solid'], s['style']), []).append(s)
    for (colour, solid, style), runs in groups.items():
      length = min(len(r['x']) for r in runs)
      if not length:
        continue
      x = np.asarray(runs[0]['x'][:length])
      y = np.asarray([r['y'][:length] for r in runs])
      linestyle = '-' if solid else '--'
      ax.plot(x, y.mean(0), color=colours[colour], linestyle=linestyle, lw=1.4)
      if len(runs) > 1:
        ax.fill_between(x, y.min(0), y.max(0), color=colours[colour],
                        alpha=0.18, lw=0)
      styles[linestyle] = style
    ax.set_title(panel or 'all points', fontsize=9)
    ax.set_xlabel(x_label, fontsize=9)
    ax.set_ylim(0, 100)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel('training error %', fontsize=9)
  handles = [axes[0].plot([], [], color='black', linestyle=ls, label=label)[0]
             for ls, label in sorted(styles.items()) if label]
  if len(colour_names) > 1 or colour_names[0]:
    handles += [axes[0].plot([], [], color=c, lw=4, label=name)[0]
                for name, c in colours.items()]
  seeds = max(len({s['seed'] for s in series if (s['panel'], s['colour'], s['solid'])
                   == (o['panel'], o['colour'], o['solid'])}) for o in series)
  if handles:
    # Below the panels, in one row: clear of the title however long it is.
    fig.legend(handles=handles, loc='outside lower center', ncols=len(handles),
               fontsize=8, title=f'band: {seeds} seeds, min-max' if seeds > 1 else None,
               title_fontsize=7)
  if title:  # Wrapped to the figure's width (about 15 characters an inch at 9 pt).
    fig.suptitle(textwrap.fill(title, int(15 * fig.get_figwidth())), fontsize=9)
  fig.savefig(out_path, dpi=DPI)
  return fig
