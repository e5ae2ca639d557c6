"""Runs the project's commands with tcmalloc as the host memory allocator on Linux (XLA:CPU speed, issue 12).

XLA:CPU allocates an executable's buffers afresh on every call. Under glibc's malloc each buffer above its mmap
threshold (at most 32 MiB) is a new mmap, so every call page-faults and zeroes all of its memory again:
`bench/g_step.py --config configs/paper.py --batch 1 --vs-torch --steps 3` made 39.4 M minor page faults (~160 GB
of pages) in 7 minutes. tcmalloc keeps freed memory for reuse: 4.0 M faults, and the demo train step went from 1.40
to 1.02 s (docs/performance.md, "Host allocator: tcmalloc"). Google's Cloud TPU VMs preload tcmalloc for the same reason. Tuning glibc
instead (mallopt: no mmap, one arena, no trimming) was measured too and is slower (1.21 s; its single arena
serialises XLA's compiler threads).

A process cannot switch allocators once it runs, so the command-line entry points call `reexec_with_tcmalloc()`
first: it executes the same command again with LD_PRELOAD naming tcmalloc, which every process they start inherits.
HEADGAN_JAX_MALLOC=system turns it off. Without the library (`scripts/setup.sh` installs Debian's
libtcmalloc-minimal4) or off Linux it does nothing.
"""
from __future__ import annotations

import ctypes.util
import os
import pathlib
import sys
from collections.abc import Mapping

SETTING_ENV = 'HEADGAN_JAX_MALLOC'  # 'tcmalloc' (default) or 'system'.
SETTINGS = ('tcmalloc', 'system')
_REEXEC_MARK = 'HEADGAN_JAX_MALLOC_REEXEC'  # Set on the re-executed process: never re-execute twice.
# tcmalloc prints a stack trace line for every allocation above 1 GiB by default; the paper-size steps make many.
_LARGE_ALLOC_REPORT = ('TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD', str(1 << 40))


def setting(environ: Mapping[str, str] | None = None) -> str:
  """HEADGAN_JAX_MALLOC, checked: 'tcmalloc' unless it says 'system'."""
  value = (os.environ if environ is None else environ).get(SETTING_ENV, 'tcmalloc').strip().lower() or 'tcmalloc'
  if value not in SETTINGS:
    raise ValueError(f'{SETTING_ENV}={value!r}: expected one of {SETTINGS}')
  return value


def find_tcmalloc() -> str | None:
  """The tcmalloc shared library's name for the dynamic loader (e.g. 'libtcmalloc_minimal.so.4'), or None."""
  if not sys.platform.startswith('linux'):
    return None
  return ctypes.util.find_library('tcmalloc_minimal') or ctypes.util.find_library('tcmalloc')


def active() -> str:
  """'tcmalloc' when this process runs with tcmalloc loaded, else 'system'."""
  try:
    maps = pathlib.Path('/proc/self/maps').read_text(encoding='utf-8', errors='replace')
  except OSError:
    return 'system'
  return 'tcmalloc' if 'libtcmalloc' in maps else 'system'


def preload_environ(environ: Mapping[str, str], library: str) -> dict[str, str]:
  """A copy of `environ` whose LD_PRELOAD starts with `library` (anything preloaded before is kept after it)."""
  env = dict(environ)
  preloaded = [p for p in env.get('LD_PRELOAD', '').replace(':', ' ').split() if p]
  if library not in preloaded:
    env['LD_PRELOAD'] = ' '.join([library] + preloaded)
  env.setdefault(*_LARGE_ALLOC_REPORT)
  return env


def environ_for_children(environ: Mapping[str, str] | None = None) -> dict[str, str]:
  """The environment for processes that should start with tcmalloc (e.g. a test session's workers): `environ`
  (default os.environ) with LD_PRELOAD set when the setting and the machine allow it, else unchanged."""
  env = dict(os.environ if environ is None else environ)
  library = find_tcmalloc() if setting(env) == 'tcmalloc' else None
  return preload_environ(env, library) if library else env


def reexec_with_tcmalloc() -> None:
  """Executes this process's command again with tcmalloc preloaded, unless it runs with it already, the setting is
  'system', the library is missing, or this is the re-executed process (a loader that ignored LD_PRELOAD). Call it
  first in a command-line entry point, never in library code: it replaces the running process."""
  if os.environ.get(_REEXEC_MARK) or active() == 'tcmalloc' or not getattr(sys, 'orig_argv', None):
    return
  try:
    env = environ_for_children()
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  if env.get('LD_PRELOAD') == os.environ.get('LD_PRELOAD'):
    return  # Nothing to preload: 'system', off Linux, or no library.
  env[_REEXEC_MARK] = '1'
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
