"""JAX's persistent compilation cache, turned on by the project's entry points (train.py, the tests' conftest).

Compiling is most of HeadGAN's start-up on a CPU: the tiny model's jitted init and train step take tens of seconds
to compile, the paper model's minutes, and a resumed run, a re-run demo or a second test that builds the same step
compile them again. With the cache on, XLA's executables are stored on disk, keyed by the program, the compile
options, the devices and the jax / jaxlib versions, so any of those changing simply misses the cache; a hit loads
in about a second. Entries are only written for programs that took at least `MIN_COMPILE_SECONDS` to compile.

The directory: the argument, else $HEADGAN_JAX_COMPILATION_CACHE, else ~/.cache/headgan-jax/xla; 'off' (or an
empty value) leaves the cache off. The cache is size-capped (least recently used entries go first).
"""
from __future__ import annotations

import os
import pathlib

import jax

ENV_VAR = 'HEADGAN_JAX_COMPILATION_CACHE'
DEFAULT_DIR = pathlib.Path('~/.cache/headgan-jax/xla')
MIN_COMPILE_SECONDS = 1.0
MAX_BYTES = 4 << 30


def cache_dir_setting(cache_dir: str | os.PathLike | None = None) -> pathlib.Path | None:
  """The directory `enable` would use, or None when the cache is to stay off."""
  value = os.fspath(cache_dir) if cache_dir is not None else os.environ.get(ENV_VAR, os.fspath(DEFAULT_DIR))
  if value.strip().lower() in ('', 'off', 'none', '0'):
    return None
  return pathlib.Path(value).expanduser()


def enable(cache_dir: str | os.PathLike | None = None) -> pathlib.Path | None:
  """Turns the persistent compilation cache on (see the module docstring); returns its directory or None."""
  path = cache_dir_setting(cache_dir)
  if path is None:
    return None
  path.mkdir(parents=True, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', os.fspath(path))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', MIN_COMPILE_SECONDS)
  jax.config.update('jax_compilation_cache_max_size', MAX_BYTES)
  return path
