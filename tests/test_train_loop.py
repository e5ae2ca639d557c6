"""train.py: checkpoints every N steps, resumes exactly after an interruption, refuses to start without VGG weights."""
import dataclasses
import importlib.util
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

import train_configs

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load_train_module():
  spec = importlib.util.spec_from_file_location('headgan_train_script', REPO / 'train.py')
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up there.
  spec.loader.exec_module(module)
  return module


train = _load_train_module()


def small_config():
  """The tiny config at 32x32 with narrower SPADE / D (tests/train_configs.py), checkpoints every 3 steps."""
  c = train_configs.small_train_config()
  c.train.batch_size = 2
  c.train.checkpoint_every = 3
  c.train.keep_checkpoints = 3
  c.train.log_every = 1
  return c


def _checkpoint_steps(workdir: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())


def _counting(trainer):
  """The trainer with its step wrapped to count calls (to see where a run starts)."""
  calls = []

  def train_step(state, batch, vgg_params=None):
    calls.append(int(state.step))
    return trainer.train_step(state, batch, vgg_params)

  return dataclasses.replace(trainer, train_step=train_step), calls


def test_interrupted_run_resumes_from_checkpoint_exactly(tmp_path):
  config = small_config()
  # A 2-device mesh: the checkpoint is restored into replicated, sharded arrays. unsafe_rbg: fast init compile.
  trainer = train.Trainer.create(config, devices=jax.devices()[:2], init_key=jax.random.key(0, impl='unsafe_rbg'))
  interrupted, resumed = tmp_path / 'interrupted', tmp_path / 'uninterrupted'

  # First life: 6 steps, checkpoints at 3 and 6, then the process "dies" (its state is simply dropped).
  counted, calls = _counting(trainer)
  state6 = counted.run(interrupted, 6, progress=False)
  assert calls == [0, 1, 2, 3, 4, 5] and int(state6.step) == 6
  assert _checkpoint_steps(interrupted) == [3, 6]  # Every 3 steps, and not the first step.
  params6 = jax.device_get(state6.g.params)
  del state6

  # Second life: same work folder, 8 steps in total. It must start at step 6, not 0.
  counted, calls = _counting(trainer)
  state_a = counted.run(interrupted, 8, progress=False)
  assert calls == [6, 7] and int(state_a.step) == 8
  # Step 8 is saved as the last step of the run even though 8 % 3 != 0.
  assert _checkpoint_steps(interrupted) == [3, 6, 8]

  # The same 8 steps in one go.
  state_b = trainer.run(resumed, 8, progress=False)
  a, b = jax.device_get((state_a, state_b))
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
  # Training did change the generator between step 6 and 8.
  assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(params6), jax.tree.leaves(a.g.params)))

  # A finished run asked for the same length again does nothing; one more step evicts the oldest checkpoint
  # (keep_checkpoints = 3).
  counted, calls = _counting(trainer)
  assert int(counted.run(interrupted, 8, progress=False).step) == 8 and calls == []
  assert int(counted.run(interrupted, 9, progress=False).step) == 9 and calls == [8]
  assert _checkpoint_steps(interrupted) == [6, 8, 9]


def _write_config(folder: pathlib.Path, vgg_weights: str) -> str:
  path = folder / 'vgg_on.py'
  path.write_text('from configs import tiny\n\n\ndef get_config():\n  c = tiny.get_config()\n'
                  f'  c.loss.use_vgg = True\n  c.loss.vgg_weights = {vgg_weights!r}\n  return c\n')
  return str(path)


@pytest.mark.parametrize('weights, message', [('', "vgg_weights is ''"), ('/nonexistent/vgg19.pth', 'does not exist')])
def test_refuses_to_start_without_vgg_weights(tmp_path, capsys, weights, message):
  config = _write_config(tmp_path, weights)
  rc = train.main(['--config', config, '--workdir', str(tmp_path / 'w'), '--steps', '1', '--synthetic'])
  err = capsys.readouterr().err
  assert rc == 2
  assert message in err and err.startswith('error: ')
  assert not (tmp_path / 'w').exists()  # Refused before creating anything.


def test_command_line_refusal_is_clean(tmp_path):
  """The real command: exit status 2, one error line, no traceback (configs/paper.py has VGG on, no weights)."""
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, str(REPO / 'train.py'), '--config', str(REPO / 'configs' / 'paper.py'),
                         '--workdir', str(tmp_path / 'w'), '--steps', '1', '--synthetic'],
                        capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
  assert proc.returncode == 2, proc.stderr
  assert 'Traceback' not in proc.stderr
  assert 'config.loss.vgg_weights' in proc.stderr
