"""The console entry points pyproject.toml installs (headgan-train, headgan-evaluate, ...): each starts the same
command as `python train.py` / `python -m headgan_jax.<module>`, tcmalloc first like those (host_malloc.py)."""
from __future__ import annotations

import importlib

from headgan_jax import host_malloc


def _run(module: str) -> int:
  """main() of `module`, after re-executing this process with tcmalloc preloaded (imports nothing heavy before)."""
  host_malloc.reexec_with_tcmalloc()
  return importlib.import_module(module).main()


def train() -> int:
  return _run('headgan_jax.train.cli')


def evaluate() -> int:
  return _run('headgan_jax.evaluate')


def reenact() -> int:
  return _run('headgan_jax.reenact')


def main_job() -> int:
  return _run('headgan_jax.main_job')


def track() -> int:
  return _run('headgan_jax.tracking.track')


def build() -> int:
  return _run('headgan_jax.data.build')


def baselines() -> int:
  return _run('headgan_jax.train.baselines')
