"""The package's floor plan, read from the code: who may import whom, sizes, names.

    core   JAX only: no TensorFlow, nothing of data, run or tools
    data   nothing of run or tools
    run    nothing of tools
    tools  nothing of the entry points
    the entry points (alexnet_jax/*.py): imported by no module

Imports are read from every file's syntax, those inside functions included,
so a new upward import fails here whichever way it is written.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from clirun import ROOT, cli_env

PACKAGE = ROOT / 'alexnet_jax'
MAX_MODULE_LINES = 450
MAX_ENTRY_POINT_LINES = 80
NOT_ENTRY_POINTS = ('__init__', 'errors')


def module_name(path: Path) -> str:
  parts = path.relative_to(ROOT).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob('*.py'))}
ENTRY_POINTS = {name for name, path in MODULES.items()
                if path.parent == PACKAGE and path.stem not in NOT_ENTRY_POINTS}


def imports(path: Path) -> set[str]:
  """The project modules (and third-party top-level packages) `path` imports."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      found.add(node.module)
      # `from alexnet_jax.core import model` imports the module core.model.
      found |= {f'{node.module}.{alias.name}' for alias in node.names
                if f'{node.module}.{alias.name}' in MODULES}
  return found


GRAPH = {name: {m for m in imports(path) if m in MODULES} for name, path in MODULES.items()}
FORBIDDEN = {  # Layer -> the layers it may not import.
    'core': {'data', 'run', 'tools', 'entry'},
    'data': {'run', 'tools', 'entry'},
    'run': {'tools', 'entry'},
    'tools': {'entry'},
    'base': {'core', 'data', 'run', 'tools', 'entry'},
    'entry': {'entry'},
}


def layer(name: str) -> str:
  """'core', 'data', 'run', 'tools', 'entry' or 'base' (the package, errors.py)."""
  if name in ENTRY_POINTS:
    return 'entry'
  parts = name.split('.')
  return parts[1] if len(parts) > 1 and parts[1] in FORBIDDEN else 'base'


def test_the_floor_plan_is_what_the_tests_read():
  assert {layer(n) for n in MODULES} == {'core', 'data', 'run', 'tools', 'entry', 'base'}
  assert {'alexnet_jax.main', 'alexnet_jax.describe', 'alexnet_jax.evaluate'} <= ENTRY_POINTS
  assert 'alexnet_jax.run.cli' in GRAPH['alexnet_jax.main']  # Reads `from x import y`.


def test_no_layer_imports_upward():
  upward = sorted(f'{name} imports {other}' for name, others in GRAPH.items()
                  for other in others if layer(other) in FORBIDDEN[layer(name)])
  assert not upward, upward


def test_core_imports_no_tensorflow():
  static = sorted(name for name, path in MODULES.items() if layer(name) == 'core'
                  and any(m.split('.')[0] in ('tensorflow', 'tensorflow_datasets')
                          for m in imports(path)))
  assert not static, static
  # And nothing it imports brings TensorFlow in.
  core = [name for name in MODULES if layer(name) == 'core']
  script = ('import sys\n' + ''.join(f'import {m}\n' for m in core)
            + "print(sorted(m for m in sys.modules if m.startswith('tensorflow')))")
  out = subprocess.run([sys.executable, '-c', script], cwd=ROOT, env=cli_env(),
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip() == '[]', out.stdout


def test_no_cycles():
  done, path = set(), []

  def visit(name):
    if name in path:
      raise AssertionError(' -> '.join(path[path.index(name):] + [name]))
    if name in done:
      return
    path.append(name)
    for other in GRAPH[name]:
      visit(other)
    path.pop()
    done.add(name)

  for name in GRAPH:
    visit(name)


def test_modules_are_short_and_entry_points_thin():
  long = {name: n for name, path in MODULES.items()
          if (n := len(path.read_text().splitlines())) > (
              MAX_ENTRY_POINT_LINES if name in ENTRY_POINTS else MAX_MODULE_LINES)}
  assert not long, long


def test_no_module_is_named_after_a_standard_library_one():
  clashes = sorted(name for name in MODULES
                   if name.rsplit('.', 1)[-1] in sys.stdlib_module_names)
  assert not clashes, clashes


def _bound_names(tree) -> set[str]:
  """Every name a file binds other than by importing: parameters,
  assignments, loop and `with` targets, functions and classes."""
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.arg):
      names.add(node.arg)
    elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
      names.add(node.id)
    elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
      names.add(node.name)
  return names


def _module_names(tree) -> set[str]:
  """The names under which a file imports project modules."""
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module:
      names |= {alias.asname or alias.name for alias in node.names
                if f'{node.module}.{alias.name}' in MODULES}
  return names


@pytest.mark.parametrize('path', [*MODULES.values(), *(ROOT / 'benchmarks').glob('*.py')],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_one_meaning_per_name(path):
  """A module imported as `steps` is not also a variable `steps` in the same
  file, which would force an alias such as `steps as steps_lib`, or shadow it."""
  tree = ast.parse(path.read_text())
  both = _module_names(tree) & _bound_names(tree)
  assert not both, sorted(both)


DATED = re.compile(r'20\d\d-\d\d-\d\d')


def test_no_dated_figures_in_code_configs_or_experiments():
  """A measured figure lives in a results file beside its command and date;
  code, configs and sweep files point at the file."""
  files = [*PACKAGE.rglob('*.py'), *(ROOT / 'configs').glob('*.py'),
           *(ROOT / 'experiments').glob('*.py'), *(ROOT / 'benchmarks').glob('*.py'),
           *(ROOT / 'benchmarks').glob('*.sh')]
  dated = sorted(str(p.relative_to(ROOT)) for p in files  # Pointers to results files may.
                 if DATED.search(re.sub(r'results/\S+', '', p.read_text())))
  assert not dated, dated
