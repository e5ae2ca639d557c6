"""tcmalloc as the host allocator of the project's commands (headgan_jax/host_malloc.py)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from headgan_jax import host_malloc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_tcmalloc = pytest.mark.skipif(host_malloc.find_tcmalloc() is None,
                                    reason='tcmalloc is not installed (scripts/setup.sh installs libtcmalloc-minimal4)')


def _clean_env(**extra: str) -> dict[str, str]:
  """This environment without any preloaded library (the test session's workers may have tcmalloc preloaded)."""
  env = {k: v for k, v in os.environ.items() if k not in ('LD_PRELOAD', host_malloc.SETTING_ENV, host_malloc._REEXEC_MARK)}
  env['PYTHONPATH'] = REPO
  env.update(extra)
  return env


def test_preload_environ_puts_the_library_first_and_keeps_what_was_preloaded():
  env = host_malloc.preload_environ({'LD_PRELOAD': 'libfoo.so:libbar.so', 'X': '1'}, 'libtcmalloc_minimal.so.4')
  assert env['LD_PRELOAD'] == 'libtcmalloc_minimal.so.4 libfoo.so libbar.so'
  assert env['X'] == '1'
  assert int(env['TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD']) >= 1 << 40  # No stack trace per large buffer.
  again = host_malloc.preload_environ(env, 'libtcmalloc_minimal.so.4')
  assert again['LD_PRELOAD'] == env['LD_PRELOAD']  # Not twice.


def test_setting_is_checked():
  assert host_malloc.setting({}) == 'tcmalloc'
  assert host_malloc.setting({host_malloc.SETTING_ENV: ' System '}) == 'system'
  with pytest.raises(ValueError, match='HEADGAN_JAX_MALLOC'):
    host_malloc.setting({host_malloc.SETTING_ENV: 'jemalloc'})
  assert host_malloc.environ_for_children({host_malloc.SETTING_ENV: 'system'}) == {host_malloc.SETTING_ENV: 'system'}


_SCRIPT = textwrap.dedent("""
    import json, os, sys
    from headgan_jax import host_malloc
    host_malloc.reexec_with_tcmalloc()
    print(json.dumps(dict(active=host_malloc.active(), argv=sys.argv[1:], pid_env=os.environ.get('LD_PRELOAD'))))
    """)


@needs_tcmalloc
def test_a_command_reexecutes_itself_with_tcmalloc_and_keeps_its_arguments(tmp_path):
  script = tmp_path / 'cmd.py'
  script.write_text(_SCRIPT)
  out = subprocess.run([sys.executable, str(script), 'a b', '--flag=1'], env=_clean_env(), capture_output=True,
                       text=True, check=True)
  got = json.loads(out.stdout)
  assert got['active'] == 'tcmalloc'
  assert got['argv'] == ['a b', '--flag=1']
  assert 'tcmalloc' in got['pid_env']  # What its own subprocesses inherit.
  assert out.stderr == ''  # No loader or tcmalloc messages.

  off = subprocess.run([sys.executable, str(script)], env=_clean_env(HEADGAN_JAX_MALLOC='system'),
                       capture_output=True, text=True, check=True)
  assert json.loads(off.stdout)['active'] == 'system'


def test_a_bad_setting_is_a_clear_error(tmp_path):
  script = tmp_path / 'cmd.py'
  script.write_text(_SCRIPT)
  out = subprocess.run([sys.executable, str(script)], env=_clean_env(HEADGAN_JAX_MALLOC='jemalloc'),
                       capture_output=True, text=True)
  assert out.returncode == 2
  assert 'HEADGAN_JAX_MALLOC' in out.stderr and 'jemalloc' in out.stderr and 'Traceback' not in out.stderr


_FAULTS = textwrap.dedent("""
    import resource, jax, jax.numpy as jnp
    from headgan_jax import host_malloc
    host_malloc.reexec_with_tcmalloc()
    f = jax.jit(lambda x: [x * k for k in range(1, 9)])  # 8 new buffers of 16 MiB per call.
    x = jnp.ones((4096, 1024), jnp.float32)
    jax.block_until_ready(f(x))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
      jax.block_until_ready(f(x))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """)


@needs_tcmalloc
def test_tcmalloc_stops_xla_from_page_faulting_its_buffers_on_every_call(tmp_path):
  """Why the commands use it: under glibc each call of a jitted function maps its large buffers afresh."""
  script = tmp_path / 'faults.py'
  script.write_text(_FAULTS)
  faults = {}
  for setting in ('system', 'tcmalloc'):
    out = subprocess.run([sys.executable, str(script)], env=_clean_env(HEADGAN_JAX_MALLOC=setting),
                         capture_output=True, text=True, check=True)
    faults[setting] = int(out.stdout.split()[-1])
  # 20 calls x 128 MiB of new buffers = 655 k pages; glibc reused some (measured 209 k faults), tcmalloc most (41 k).
  assert faults['system'] > 100_000, faults
  assert faults['tcmalloc'] < faults['system'] / 3, faults


@needs_tcmalloc
@pytest.mark.skipif(not os.environ.get('PYTEST_XDIST_WORKER'), reason='only pytest-xdist workers are started after '
                    'conftest.py sets LD_PRELOAD')
def test_the_test_session_workers_run_with_tcmalloc():
  assert host_malloc.active() == 'tcmalloc'
