"""Sweep files: which config to start from and which values to try.

A sweep file is Python (experiments/README.md has the format):

    BASE = 'configs/cifar10.py:cifar_4layer'    # a config file of configs/ [:arg]
    OVERRIDES = {'num_train_steps': 3000}       # optional, shared by every point
    PRODUCT = {'model.lrn': [True, False]}      # every combination, and/or
    ZIP = {'model.activation': ['relu', 'tanh'],   # lists taken side by side
           'optimizer.learning_rate': [0.01, 0.02]}
    SEEDS = [0, 1]                              # config.seed of each repeat
    TARGET_TRAIN_ERROR = 0.25                   # optional: steps to reach it
                                                # (train error, 3 log windows)
    PAPER = 'Sec. 3.3: 13% without LRN, 11% with'  # optional: the claim tested
    CLAIM = {'factor': 'model.lrn', 'better': True,   # optional: the claim as
             'metric': 'eval_top1',                  # the results table
             'figure': '11% with, 13% without'}      # judges it

Reading one builds and checks every point's config; nothing is trained.
Overrides given on the command line (`--set KEY=VALUE`) apply to every
point; those of LOCATION_KEYS (where the data is, not what is trained) are
not part of the sweep's identity, the others are.
"""

import ast
import dataclasses
import difflib
import itertools
import os
from pathlib import Path
import sys

from alexnet_jax.errors import UserError
from alexnet_jax.run import cli

# Names a sweep file may define; anything else in capitals is likely a typo.
FIELDS = ('BASE', 'OVERRIDES', 'PRODUCT', 'ZIP', 'SEEDS', 'TARGET_TRAIN_ERROR',
          'PAPER', 'CLAIM')
# Keys that say where things are, not what is trained: a sweep may move.
LOCATION_KEYS = ('data_dir',)
# What a CLAIM may be judged on (results.csv's columns; lower is better for
# each once top-1/top-5 are read as errors).
CLAIM_METRICS = ('eval_top1', 'eval_top5', 'steps_to_target')


@dataclasses.dataclass(frozen=True)
class Point:
  overrides: dict  # The varying keys only (PRODUCT and ZIP).
  seed: int

  @property
  def group(self) -> str:
    """The point without its seed: what the table averages over."""
    return ','.join(f'{k}={format_value(v)}' for k, v in self.overrides.items())

  @property
  def name(self) -> str:
    """Its folder: overrides and seed; readable, and unique within a sweep."""
    name = ','.join(filter(None, [self.group, f'seed={self.seed}']))
    # Orbax reads checkpoint paths as globs: no [ ] * ? in a folder name.
    for bad, good in (('/', '_'), (' ', ''), ('[', '('), (']', ')'),
                      ('*', 'x'), ('?', '_')):
      name = name.replace(bad, good)
    return name


@dataclasses.dataclass(frozen=True)
class Sweep:
  path: str
  base: str  # configs/FILE.py[:ARG]
  overrides: dict  # Shared by every point.
  points: tuple[Point, ...]
  target_train_error: float | None = None
  paper: str = ''  # The paper's claim and figure this sweep tests.
  claim: dict | None = None  # CLAIM: factor, better value, metric, figure.
  extra: dict = dataclasses.field(default_factory=dict)  # --set, every point.
  setup_keys: tuple = ()  # ZIP's keys: what a setup is (a panel of curves.png).

  def identity(self) -> dict:
    """What makes two folders comparable: the base and shared overrides
    (with the command line's, but for where the data is)."""
    identity = {'base': self.base, 'overrides': self.overrides}
    fixed = {k: v for k, v in self.extra.items() if k not in LOCATION_KEYS}
    return identity | ({'set': fixed} if fixed else {})

  def values(self, point: Point) -> dict:
    """Every override of one point, in the order they apply."""
    return {**self.overrides, **self.extra, **point.overrides, 'seed': point.seed}

  def command(self, point: Point, workdir: str | Path) -> list[str]:
    """`python -m alexnet_jax.main ...` for one point, as a list of arguments."""
    values = self.values(point)
    return [sys.executable, '-m', 'alexnet_jax.main', f'--config={self.base}',
            *(f'--config.{k}={format_value(v)}' for k, v in values.items()),
            f'--workdir={Path(workdir) / point.name}']


  def seeds_command(self, points: list[Point], workdir: str | Path) -> list[str]:
    """One `alexnet_jax.main --seeds=...` for points that differ only in
    their seed (run/seeds.py), each in its own folder as `command` gives it."""
    first = points[0]
    template = first.name.removesuffix(f'seed={first.seed}') + 'seed={seed}'
    return [a for a in self.command(first, workdir)
            if not a.startswith(('--config.seed=', '--workdir='))] + [
                f'--seeds={",".join(str(p.seed) for p in points)}',
                f'--workdir={Path(workdir) / template}']


def format_value(value) -> str:
  return value if isinstance(value, str) else repr(value)


def parse_sets(pairs) -> dict:
  """`--set KEY=VALUE` flags as overrides: VALUE a Python literal, else text."""
  extra = {}
  for pair in pairs or ():
    key, sep, text = pair.partition('=')
    if not sep or not key.strip():
      raise UserError(f'--set {pair!r} is not KEY=VALUE; give e.g.'
                      ' --set data_dir=/data/cifar10.')
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    extra[key.strip()] = value
  return extra


def load(path: str, extra: dict | None = None) -> Sweep:
  """Reads and checks a sweep file; UserError naming the file and the
  problem. `extra`: overrides for every point (`--set`)."""
  source_path = Path(path)
  if not source_path.is_file():
    raise UserError(f'The sweep file {path} does not exist. Give a file such'
                    ' as experiments/lrn.py (see experiments/README.md).')
  try:
    code = compile(source_path.read_text(), str(source_path), 'exec')
  except SyntaxError as e:
    raise UserError(f'The sweep file {path} has a syntax error on line'
                    f' {e.lineno}: {e.msg}. Fix it and run again.') from None
  namespace = {'__file__': str(source_path), '__name__': '__sweep__'}
  try:
    exec(code, namespace)  # pylint: disable=exec-used
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'The sweep file {path} failed to run:'
                    f' {type(e).__name__}: {e}. Fix it and run again.') from None
  unknown = [k for k in namespace if k.isupper() and k not in FIELDS]
  if unknown:
    raise UserError(
        f'The sweep file {path} defines {", ".join(unknown)}, which the runner'
        f' does not know (it reads {", ".join(FIELDS)}); a typo? Rename or'
        ' remove it.')

  def bad(problem):
    return UserError(f'The sweep file {path} {problem}')

  base = namespace.get('BASE')
  if not isinstance(base, str) or not base:
    raise bad("sets no BASE; add e.g. BASE = 'configs/cifar10.py:cifar_4layer'.")
  overrides = namespace.get('OVERRIDES', {})
  product = namespace.get('PRODUCT')
  zipped = namespace.get('ZIP')
  seeds = namespace.get('SEEDS', [0])
  for field, value in (('OVERRIDES', overrides), ('PRODUCT', product),
                       ('ZIP', zipped)):
    if value is not None and not isinstance(value, dict):
      raise bad(f'sets {field} to a {type(value).__name__}; it must be a dict'
                " of config keys, e.g. {'model.lrn': [True, False]}.")
  if (not isinstance(seeds, (list, tuple)) or not seeds
      or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
      or len(set(seeds)) != len(seeds)):
    raise bad(f'sets SEEDS = {seeds!r}; it must be a non-empty list of distinct'
              ' integers, e.g. SEEDS = [0, 1].')
  for field, value in (('PRODUCT', product), ('ZIP', zipped)):
    if value is None:
      continue
    empty = [k for k, v in value.items()
             if not isinstance(v, (list, tuple)) or not v]
    if not value or empty:
      raise bad(f'has an empty {field}' + (f' (no values for {", ".join(empty)})'
                if empty else '') + ': the sweep would have no points. Give'
                f' each key of {field} a non-empty list of values.')
  if zipped and len({len(v) for v in zipped.values()}) > 1:
    lengths = ', '.join(f'{k}: {len(v)}' for k, v in zipped.items())
    raise bad(f'has ZIP lists of different lengths ({lengths}); ZIP takes'
              ' them side by side, so they must be equally long.')
  keys = [*overrides, *(product or {}), *(zipped or {})]
  repeated = sorted({k for k in keys if keys.count(k) > 1})
  if repeated:
    raise bad(f'sets {", ".join(repeated)} in more than one of OVERRIDES,'
              ' PRODUCT and ZIP; set each key in one place.')
  if 'seed' in keys:
    raise bad("sets 'seed' as a config override; list the seeds in SEEDS.")
  target = namespace.get('TARGET_TRAIN_ERROR')
  if target is not None and not (isinstance(target, (int, float))
                                 and 0 < target < 1):
    raise bad(f'sets TARGET_TRAIN_ERROR = {target!r}; it must be a fraction'
              ' in (0, 1), e.g. 0.25.')

  # Every combination of PRODUCT, each with every row of ZIP, each seed.
  product_rows = [dict(zip(product, values))
                  for values in itertools.product(*product.values())
                  ] if product else [{}]
  zip_rows = ([dict(zip(zipped, values)) for values in zip(*zipped.values())]
              if zipped else [{}])
  points = tuple(Point({**p, **z}, seed)
                 for p in product_rows for z in zip_rows for seed in seeds)
  names = [p.name for p in points]
  if len(set(names)) != len(names):
    raise bad('gives two points the same folder name; make the values of each'
              ' key distinct.')
  paper = namespace.get('PAPER', '')
  if not isinstance(paper, str):
    raise bad(f'sets PAPER = {paper!r}; it must be a string: the paper\'s'
              ' claim this sweep tests, with its section.')
  claim = namespace.get('CLAIM')
  if claim is not None:
    _check_claim(bad, claim, [*(product or {}), *(zipped or {})], points)
  extra = dict(extra or {})
  if 'seed' in extra:
    raise UserError("--set seed=... would give every point one seed; list the"
                    ' seeds in the sweep file\'s SEEDS.')
  varying = sorted(set(extra) & {k for p in points for k in p.overrides})
  if varying:
    raise UserError(f'--set {", ".join(varying)}: the sweep file {path} varies'
                    ' that key between its points; change the sweep file.')
  sweep = Sweep(str(path), base, dict(overrides), points,
                float(target) if target is not None else None, paper,
                dict(claim) if claim else None, extra, tuple(zipped or ()))
  for point in points:  # Every point's config, as main would build it.
    point_config(sweep, point)
  return sweep


def _check_claim(bad, claim, varying, points):
  if not isinstance(claim, dict) or not {'factor', 'better', 'metric',
                                         'figure'} <= set(claim):
    raise bad(f'sets CLAIM = {claim!r}; it must be a dict with factor (a key'
              ' the sweep varies), better (its value the paper finds better),'
              " metric (one of " + ', '.join(CLAIM_METRICS) + ') and figure'
              " (the paper's number), optionally best_over (a key to take the"
              ' best value of, e.g. the learning rate).')
  if claim['factor'] not in varying:
    raise bad(f"sets CLAIM's factor {claim['factor']!r}, which the sweep does"
              f' not vary (it varies {", ".join(varying) or "nothing"}).')
  if claim['metric'] not in CLAIM_METRICS:
    raise bad(f"sets CLAIM's metric {claim['metric']!r}; give one of"
              f' {", ".join(CLAIM_METRICS)}.')
  values = {p.overrides[claim['factor']] for p in points}
  if claim['better'] not in values or len(values) != 2:
    raise bad(f"sets CLAIM's better value {claim['better']!r}; the claim"
              f' compares two values of {claim["factor"]} and the sweep gives'
              f' {sorted(map(repr, values))}.')
  best_over = claim.get('best_over')
  if best_over is not None and best_over not in varying:
    raise bad(f"sets CLAIM's best_over {best_over!r}, which the sweep does"
              ' not vary.')


def only_seeds(sweep: Sweep, seeds) -> Sweep:
  """The sweep restricted to some of its seeds (all of them if none given)."""
  seeds = [int(s) for s in seeds or ()]
  file_seeds = sorted({p.seed for p in sweep.points})
  unknown = [s for s in seeds if s not in file_seeds]
  if unknown:
    raise UserError(f'--seeds names {", ".join(map(str, unknown))}, which the'
                    f' sweep file {sweep.path} does not list (its SEEDS:'
                    f' {", ".join(map(str, file_seeds))}).')
  if not seeds:
    return sweep
  return dataclasses.replace(
      sweep, points=tuple(p for p in sweep.points if p.seed in seeds))


def base_config(sweep: Sweep):
  """The BASE config file's config (ml_collections ConfigDict), locked."""
  file = sweep.base.partition(':')[0]
  if not Path(file).is_file():
    raise UserError(f'The sweep file {sweep.path} names BASE = {sweep.base!r},'
                    f' but {file} does not exist (relative to {os.getcwd()}).'
                    ' Run from the repository root, or fix BASE.')
  try:
    config = cli.load_config_file(sweep.base)
  except UserError as e:
    raise UserError(f'The sweep file {sweep.path} names BASE = {sweep.base!r},'
                    f' which could not be loaded: {e}') from None
  config.lock()
  return config


def point_config(sweep: Sweep, point: Point):
  """The base config with the shared and the point's overrides applied."""
  config = base_config(sweep)
  for key, value in sweep.values(point).items():
    _override(sweep, config, key, value)
  return config


def _override(sweep, config, key, value):
  *parents, leaf = key.split('.')
  node = config
  for part in parents:
    node = node.get(part) if hasattr(node, 'get') else None
  if node is None or not hasattr(node, 'get') or leaf not in node:
    near = difflib.get_close_matches(key, cli.config_keys(config), n=3, cutoff=0.6)
    raise UserError(
        f'The sweep file {sweep.path} overrides {key!r}, which is not a key of'
        f' {sweep.base}' + (f' (nearest: {", ".join(near)})' if near else '')
        + '. Use a key of the config, e.g. model.lrn.')
  try:
    node[leaf] = value
  except (TypeError, ValueError) as e:
    raise UserError(
        f'The sweep file {sweep.path} sets {key}={value!r}, which the config'
        f' {sweep.base} refuses: {e}'.replace('\n', ' ')) from None
