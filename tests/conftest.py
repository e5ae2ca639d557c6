"""Test setup: 8 fake CPU devices for the multi-device tests, CPU only, and shared fixture paths."""
import os
import pathlib

# Must happen before jax is imported anywhere.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pytest  # noqa: E402

from headgan_jax import compilation_cache  # noqa: E402

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
