"""Test setup: 8 fake CPU devices for the multi-device tests, CPU only, and shared fixture paths."""
import os
import pathlib

# XLA:CPU compile options for the test processes and the subprocesses that inherit their environment. On a fresh CI
# machine (empty compile cache) compiling is most of the suite's time. LLVM at -O0 without its expensive passes, and
# XLA's loop emitters instead of the MLIR fusion emitters, compiled the train-loop tests' step in 6.6 CPU-s instead
# of 22.8 (one process, loaded machine), at about twice the step's run time, which the tiny test configs hardly
# notice; the losses agree to float rounding. The README test's main job and the 2-process train.py of
# test_train_loop set their own XLA_FLAGS and keep XLA's defaults, like a user's machine.
FAST_COMPILE_XLA_FLAGS = ('--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true '
                          '--xla_cpu_use_fusion_emitters=false')

# Must happen before jax is imported anywhere.
os.environ.setdefault('XLA_FLAGS', f'--xla_force_host_platform_device_count=8 {FAST_COMPILE_XLA_FLAGS}')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pytest  # noqa: E402

from headgan_jax import compilation_cache, host_malloc  # noqa: E402

# Processes started from here (pytest-xdist's workers, the command-line tests' subprocesses) run with tcmalloc like
# the project's commands (headgan_jax/host_malloc.py); this process keeps the allocator it started with.
os.environ.update(host_malloc.environ_for_children())

# Tests that build the same network or step again (a resumed Trainer, the same config in two files or workers)
# load it from disk instead of compiling it again; HEADGAN_JAX_COMPILATION_CACHE=off turns this off.
compilation_cache.enable()

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'


@pytest.fixture(scope='session')
def fixtures_dir() -> pathlib.Path:
  """../shared/fixtures (real clip and face image); tests that need it skip when it is absent."""
  d = SHARED / 'fixtures'
  if not (d / 'driving.mp4').exists():
    pytest.skip(f'real fixtures not found at {d} (they live in the shared folder beside the repository)')
  return d


@pytest.fixture(scope='session')
def sfm_dir() -> pathlib.Path:
  """../shared/models/sfm (the Surrey Face Model, for converter tests)."""
  d = SHARED / 'models' / 'sfm'
  if not (d / 'sfm_shape_3448.bin').exists():
    pytest.skip(f'Surrey Face Model not found at {d}')
  return d


@pytest.fixture(scope='session')
def make_speech(tmp_path_factory):
  """speak(text) -> (waveform float32, sample rate) spoken by espeak-ng; skips when espeak-ng is absent."""
  import shutil
  import subprocess

  import soundfile as sf

  exe = shutil.which('espeak-ng')
  if exe is None:
    pytest.skip('espeak-ng is not installed (apt-get install espeak-ng); it makes the test speech')

  def speak(text: str):
    path = tmp_path_factory.mktemp('speech') / 'speech.wav'
    subprocess.run([exe, '-w', str(path), text], check=True, capture_output=True)
    x, sr = sf.read(path, dtype='float32')
    return x, sr

  return speak


DEMO_CUT_SECONDS = 0.7  # Length of each short cut of the demo build: 15-21 frames.


@pytest.fixture(scope='session')
def demo_build(tmp_path_factory, fixtures_dir, worker_id):
  """headgan_demo at 64 px from two short cuts (driving; talk-05 = the test identity), built once per test run:
  under pytest-xdist the first worker builds and the others open its build (a file lock in the run's folder).
  (config with data.data_dir set, builder, what the build printed); used by the dataset and train-loop tests."""
  import contextlib
  import io

  from filelock import FileLock

  import dataset_config
  import dataset_helpers
  from headgan_jax.data import build, clips as clips_lib
  base = tmp_path_factory.getbasetemp()
  root = (base if worker_id == 'master' else base.parent) / 'demo-build'
  config = dataset_config.get_config()
  config.data.data_dir = str(root / 'tfds')
  config.data.demo_dir = str(root / 'clips')
  printed = root / 'printed.txt'
  with FileLock(str(root) + '.lock'):
    if not printed.exists():
      dataset_helpers.cut_clip(fixtures_dir / 'driving.mp4', root / 'clips' / 'driving.mp4', DEMO_CUT_SECONDS)
      dataset_helpers.cut_clip(fixtures_dir / 'demo' / 'talk-05.mp4', root / 'clips' / 'demo' / 'talk-05.mp4',
                               DEMO_CUT_SECONDS)
      out = io.StringIO()
      with contextlib.redirect_stdout(out):
        build.build('headgan_demo', config)
      clips_lib.write_atomic(printed, out.getvalue().encode())
  builder = build.make_builder('headgan_demo', config)
  assert builder.is_prepared()
  return config, builder, printed.read_text()


# Scheduling under pytest-xdist (`pytest -n 2`). By default xdist hands each worker chunks of the collection in file
# order, so the longest tests (test_readme, test_reenact, test_track, test_train_*: alphabetically last) ran at the
# end, where one worker can be left with a long test while the other has nothing left to do. Instead the slow tests
# start first, longest first (seconds: about what `--durations` showed in CI; only their order matters), and each
# worker is given one test at a time (--maxschedchunk 1): longest-first list scheduling.
LONGEST_FIRST = {
    'test_readme.py::': 300,
    'test_reenact.py::test_peak_memory': 170,
    'test_train_loop.py::test_training_loop': 115,
    'test_evaluate.py::test_train_with': 90,
    'test_config_fields.py::test_every_paper_leaf_is_read': 90,
}


def _expected_seconds(item) -> float:
  nodeid = item.nodeid.rpartition('/')[2]
  for prefix, seconds in LONGEST_FIRST.items():
    if nodeid.startswith(prefix):
      return seconds
  return 30.0 if item.get_closest_marker('slow') else 0.0


def pytest_collection_modifyitems(config, items):
  """Slow tests first, longest first; the others keep their order (a stable sort)."""
  del config
  items.sort(key=lambda item: -_expected_seconds(item))


def pytest_configure(config):
  if getattr(config.option, 'maxschedchunk', 'absent') is None:  # pytest-xdist's option, when not given.
    config.option.maxschedchunk = 1
