"""Gives JAX two host devices before it starts, so every test sees the split."""

import os
import shutil
import sys
import tempfile

import pytest
from pathlib import Path

# Must run before JAX initialises its backends; conftest is imported first.
if 'xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_force_host_platform_device_count=2').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))  # `configs` is imported as a package.


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


# Files by their longest test or shared fixture, longest first: pytest-xdist
# hands tests (a group as one unit) to whichever worker is free, in this
# order, so no long one starts last while the other worker idles.
_LONGEST_FIRST = ('test_multiprocess', 'test_robustness', 'test_train',
                  'test_strategies', 'test_sweep', 'test_model', 'test_benchmark',
                  'test_visualize', 'test_evaluate', 'test_inspect')


def pytest_collection_modifyitems(items):
  rank = lambda item: (_LONGEST_FIRST.index(item.path.stem)
                       if item.path.stem in _LONGEST_FIRST else len(_LONGEST_FIRST))
  items.sort(key=rank)  # Stable: within a file, the order it defines.


CIFAR10_JPEG = ROOT.parent / 'shared' / 'data' / 'cifar10-jpeg.tar.gz'


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
