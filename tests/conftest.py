"""Test setup: 8 fake CPU devices for the multi-device tests, CPU only, and shared fixture paths."""
import os
import pathlib

# XLA:CPU compile options for the test processes and the subprocesses that inherit their environment. On a fresh CI
# machine (empty compile cache) compiling is most of the suite's time. LLVM at -O0 without its expensive passes, and
# XLA's loop emitters instead of the MLIR fusion emitters, compiled the train-loop tests' step in 6.6 CPU-s instead
# of 22.8 (one process, loaded machine), at about twice the step's run time, which the tiny test configs hardly
# notice; the losses agree to float rounding. The README test's main job uses them too (on 1 device: 145-165 s, not
# 320, for the whole test, empty cache, 2026-12-03), and so does the 2-process train.py of test_train_loop (XLA's
# defaults there cost ~60 CPU-s more; docs/testing.md).
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


@pytest.fixture(scope='session')
def main_job(tmp_path_factory, fixtures_dir, worker_id):
  """The README's first command, shortened (tests/main_job_run.py), run once per test run: under pytest-xdist the
  first worker to need it runs it, another waits for it (a file lock). A main_job_run.MainJob; its work folder holds
  the 1-step demo model that test_reenact.py and test_checkpoints.py reenact with."""
  from filelock import FileLock

  import main_job_run
  base = tmp_path_factory.getbasetemp()
  root = (base if worker_id == 'master' else base.parent) / 'main-job'
  root.mkdir(parents=True, exist_ok=True)
  with FileLock(str(root) + '.lock'):
    return main_job_run.run(fixtures_dir, root)


# Scheduling under pytest-xdist (`pytest -n 2`). xdist's default hands out single tests, so the tests of one module
# ran in both workers and its module fixtures (a compiled trainer, exported programs, a Reenactor) were built twice,
# often at the same time (no compile-cache hit). Instead each module is one unit that one worker runs whole
# (`SAME_WORKER` adds modules that share a session fixture), units go out longest first (seconds: setup + calls of
# their tests in an empty-cache run of the suite, `--junitxml`; only their order matters), and a worker gets its next
# unit only when it has one test left (pytest runs a test once it knows the next): longest-first list scheduling.
UNIT_SECONDS = {  # Measured 2026-12-03 evening (2 cores, empty compile cache, fresh clone of 52a9c3a, this schedule; a
    # unit's modules summed; test_readme's unit and test_train_step less what that evening's cuts saved); a module
    # not listed: 30 s.
    'test_readme.py': 390, 'test_train_loop.py': 236, 'test_train_step.py': 195, 'test_track.py': 121,
    'test_datasets.py': 106, 'test_config_fields.py': 83, 'test_kill_resume.py': 76, 'test_remat.py': 61,
    'test_gpu_check.py': 50, 'test_export.py': 47, 'test_nn_shapes.py': 33, 'test_checkpoint_damage.py': 32,
    'test_bf16.py': 31, 'test_fitting.py': 26, 'test_conv_grad.py': 24, 'test_metrics_fvd.py': 22,
    'test_raster.py': 17, 'test_upsample_init.py': 16, 'test_losses.py': 15, 'test_host_malloc.py': 12,
    'test_nn_blocks.py': 12, 'test_vgg.py': 8, 'test_onednn.py': 7, 'test_camera.py': 6, 'test_metrics_fid.py': 6,
    'test_metrics_csim.py': 6, 'test_metrics_aed_image.py': 4, 'test_metrics_evaluators.py': 4,
    'test_audio_features.py': 4, 'test_render.py': 4, 'test_audio_timing.py': 4, 'test_config_migrate.py': 4,
    'test_inputs.py': 4, 'test_morphable.py': 4, 'test_mouth.py': 2, 'test_audio_asr.py': 2, 'test_main_job.py': 2,
    'test_demo_clips.py': 2, 'test_audio_io.py': 2, 'test_curves.py': 1, 'test_commands.py': 1,
    'test_structure.py': 0, 'test_layers.py': 0, 'test_tracking_layer.py': 0, 'test_config_files.py': 0,
}
UNKNOWN_UNIT_SECONDS = 30.0
SAME_WORKER = {
    'test_reenact.py': 'test_readme.py',  # The README main job's work folder (conftest.main_job, a session fixture).
    'test_checkpoints.py': 'test_readme.py',  # The same work folder (through test_reenact's `workdir`).
    'test_evaluate.py': 'test_train_loop.py',  # The same 4-device trainer: its init and step compile once, not twice.
}


def _unit(nodeid: str) -> str:
  """The scheduling unit of a test: its module's file name, or the module it shares a session fixture with."""
  return SAME_WORKER.get(_module(nodeid), _module(nodeid))


def _module(nodeid: str) -> str:
  return nodeid.split('::', 1)[0].rpartition('/')[2]


def pytest_collection_modifyitems(config, items):
  """Units longest first; each unit keeps its tests together, its own module's first (test_train_loop needs the demo
  build only midway, test_evaluate at once), each module's in their order (a stable sort)."""
  del config

  def key(item):
    unit = _unit(item.nodeid)
    return -UNIT_SECONDS.get(unit, UNKNOWN_UNIT_SECONDS), unit, _module(item.nodeid) != unit

  items.sort(key=key)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
  """The schedule above for `-n N` (xdist's default --dist load); any other --dist keeps xdist's own."""
  if config.getvalue('dist') != 'load':
    return None
  from xdist.scheduler import LoadScopeScheduling

  class ByUnit(LoadScopeScheduling):
    def _split_scope(self, nodeid):
      return _unit(nodeid)

    def _reschedule(self, node):
      if node.shutting_down:
        return
      if not self.workqueue:
        node.shutdown()
      elif self._pending_of(self.assigned_work[node]) < 2:
        self._assign_work_unit(node)

  config.option.loadscopereorder = False  # Keep the collection's (longest-first) order of the units.
  return ByUnit(config, log)
