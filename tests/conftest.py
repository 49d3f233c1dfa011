"""Gives JAX two host devices before it starts, so every test sees the split.

Files whose tests share costly fixtures (training runs, CLI runs, built
models) mark themselves `pytest.mark.xdist_group`: one pytest-xdist worker
runs them all (`--dist loadgroup`), building each fixture once. The fixtures
are session-scoped, since the worker may run other files' tests in between
and pytest rebuilds a module fixture each time its file comes back.
"""

import os
import shutil
import tempfile

import pytest
from pathlib import Path

# Must run before JAX initialises its backends; conftest is imported first.
if 'xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_force_host_platform_device_count=2').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# As the commands set them before TensorFlow starts (run/cli.py), so that the
# tests' runs and the commands they start compute alike.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
  """One persistent compilation cache for the whole suite: the tests start
  dozens of training runs of the same tiny network, in xdist workers and in
  subprocesses (which inherit the environment), and each would otherwise
  compile the same programs again. Made here, before xdist starts its
  workers, and removed at the end; a cache given from outside is kept."""
  if hasattr(config, 'workerinput') or 'JAX_COMPILATION_CACHE_DIR' in os.environ:
    return
  cache = tempfile.mkdtemp(prefix='alexnet_jax-tests-jax-cache-')
  config._alexnet_jax_cache = cache
  os.environ['JAX_COMPILATION_CACHE_DIR'] = cache
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'


def pytest_unconfigure(config):
  cache = getattr(config, '_alexnet_jax_cache', None)
  if cache:
    shutil.rmtree(cache, ignore_errors=True)


def pytest_collection_modifyitems(items):
  """The slowest work first. pytest-xdist hands tests (an xdist_group as one
  unit) to whichever worker is free, in this order, so that no long one
  starts last while the other worker idles. A test says it is slow where it
  is defined, `@pytest.mark.slow(seconds=N)`, N about its time with its
  fixtures on 2 cores: it orders the schedule, and nothing asserts it."""

  def unit(item):
    group = item.get_closest_marker('xdist_group')
    return group.args[0] if group else item.nodeid

  def seconds(item):
    mark = item.get_closest_marker('slow')
    return mark.kwargs.get('seconds', 30) if mark else 0

  longest = {}
  for item in items:
    longest[unit(item)] = max(longest.get(unit(item), 0), seconds(item))
  items.sort(key=lambda item: -longest[unit(item)])  # Stable: files keep their order.


def _beside_the_repository(name: str) -> Path:
  """ROOT/../NAME; in a `git worktree`, beside the main checkout if not here."""
  here = ROOT.parent / name
  git = ROOT / '.git'
  if here.exists() or not git.is_file():
    return here
  gitdir = Path(git.read_text().split('gitdir:', 1)[-1].strip())
  common = gitdir / 'commondir'
  if common.is_file():
    gitdir = (gitdir / common.read_text().strip()).resolve()
  return gitdir.parent.parent / name


CIFAR10_JPEG = _beside_the_repository('shared') / 'data' / 'cifar10-jpeg.tar.gz'


def _first_twenty(member, path):
  """Keeps cifar10/<split>/<class>/NNNN.jpg with NNNN < 20 (and folders)."""
  parts = member.name.split('/')
  if member.isfile() and not (len(parts) == 4 and int(parts[3][:4]) < 20):
    return None
  import tarfile
  return tarfile.data_filter(member, path)


@pytest.fixture(scope='session')
def cifar10_subset(tmp_path_factory):
  """20 real CIFAR-10 JPEGs per class and split, as an image folder."""
  if not CIFAR10_JPEG.exists():
    pytest.skip(f'real CIFAR-10 JPEGs not found at {CIFAR10_JPEG} (../shared/data'
                ' is only on the project machines)')
  import tarfile
  root = tmp_path_factory.mktemp('cifar10')
  with tarfile.open(CIFAR10_JPEG) as archive:
    archive.extractall(root, filter=_first_twenty)
  return root / 'cifar10'


MOCK_EXAMPLES = 24  # Per split: TFDS's mock gives every split the same count.


@pytest.fixture
def mock_cifar10(tmp_path):
  """A TFDS data_dir where 'cifar10' reads as prepared, with mock examples.

  The mock takes split sizes from metadata files, as in Flax's ImageNet
  example test; use inside the fixture (the mock is active while it yields).
  """
  import tensorflow_datasets as tfds
  builder = tfds.builder('cifar10', data_dir=str(tmp_path))
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=name, shard_lengths=[MOCK_EXAMPLES], num_bytes=0)
      for name in ('train', 'test')]))
  Path(builder.data_dir).mkdir(parents=True)
  builder.info.write_to_directory(builder.data_dir)
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES, data_dir=str(tmp_path),
                              policy=tfds.testing.MockPolicy.USE_FILES):
    yield tmp_path
