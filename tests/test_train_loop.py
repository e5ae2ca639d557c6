"""The training loop (headgan_jax/train/loop.py) and train.py's command line (headgan_jax/commands/train.py).

Compiling the train step dominates the cost of these tests, so everything that trains runs in ONE test function
(pytest-xdist would otherwise compile the same trainer in two workers): one 4-device trainer
(tests/train_configs.loop_test_config), one uninterrupted 8-step reference run, then each behaviour in its own
check_* function against them, while a two-process run of train.py proceeds in the background.
"""
import dataclasses
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import conftest
import train_configs
from headgan_jax import sharding as sharding_lib
from headgan_jax.data import sources
from headgan_jax.errors import ConfigError, NonFiniteLossError
from headgan_jax.metrics import evaluators
from headgan_jax.commands import baselines as baselines_command, train as cli
from headgan_jax.train import loop, losses, metric_writer
from headgan_jax.train.step import METRIC_NAMES

REPO = pathlib.Path(__file__).resolve().parents[1]


class MaskedL1Probe(evaluators.Evaluator):
  """An evaluator of the one interface (metrics.evaluators), as a user's 'module:Name' type: face-masked L1 of G's
  frames and the number of frames, from the batch dict the loop's eval hook builds."""

  def __init__(self, name, spec):
    super().__init__(name, spec.every)
    self._reset()

  def _reset(self):
    self.sum, self.frames = 0.0, 0

  def _update(self, batch):
    gen, y, mask = (jnp.asarray(batch[k][:, 0]) for k in ('generated', 'target', 'face_mask'))
    n = gen.shape[0]
    self.sum += float(losses.masked_l1(gen, y, mask[..., None])) * n
    self.frames += n

  def result(self):
    return {'l1': self.sum / self.frames, 'frames': self.frames}


def loop_config() -> ml_collections.ConfigDict:
  c = train_configs.loop_test_config()
  c.evals.probe = ml_collections.ConfigDict(dict(type='test_train_loop:MaskedL1Probe', every=4, num_batches=1))
  return c


def reference_run(trainer, workdir):
  """An uninterrupted run of 8 steps: (workdir, its final state on the host)."""
  result = trainer.run(workdir, progress=False)
  assert result.step == 8 and result.stopped_by is None
  return workdir, jax.device_get(result.state)


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())


def restored(trainer, workdir, step):
  """The state of checkpoint `step` in `workdir`, on the host."""
  with trainer.checkpoint_manager(workdir) as manager:
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(trainer.abstract_state())))
  return jax.device_get(state.state)


def assert_trees_equal(a, b, atol=0.0):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b), strict=True):
    if atol:
      np.testing.assert_allclose(x, y, atol=atol, rtol=0, err_msg=jax.tree_util.keystr(path))
    else:
      np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


class Wrapped:
  """A train iterator around the synthetic one: records set_state, and can act on its n-th batch."""

  def __init__(self, trainer, on_batch=None):
    self.inner = sources.SyntheticIterator(trainer.config, trainer.mesh)
    self.on_batch = on_batch or (lambda index, batch: batch)
    self.restored_to = []

  def __next__(self):
    index = self.inner.get_state()['step']
    return self.on_batch(index, next(self.inner))

  def get_state(self):
    return self.inner.get_state()

  def set_state(self, state):
    self.restored_to.append(state)
    self.inner.set_state(state)


def counting(trainer):
  """The trainer with its step wrapped to count calls (to see where a run starts)."""
  calls = []

  def train_step(state, batch, vgg_params=None, step=None):
    calls.append(len(calls))
    return trainer.train_step(state, batch, vgg_params, step=step)

  return dataclasses.replace(trainer, train_step=train_step), calls


def check_interrupted_run_resumes_from_checkpoint_exactly(trainer, reference, folder):
  ref_dir, ref_state = reference
  # First life: 6 steps, checkpoints at 3 and 6, then the process "dies" (its state is simply dropped).
  counted, calls = counting(trainer)
  first = counted.run(folder, 6, progress=False)
  assert len(calls) == 6 and first.step == 6 and checkpoint_steps(folder) == [3, 6]  # Not after the first step.
  saved = json.loads((folder / 'checkpoints' / '6' / 'data' / 'metadata').read_text())
  assert saved == {'process_count': 1, 'iterator_states': [{'step': 6}]}
  state6 = jax.device_get(first.state)
  del first

  # Second life: same work folder, 8 steps in total. It starts at step 6, with the data iterator at batch 6.
  counted, calls = counting(trainer)
  iterator = Wrapped(trainer)
  second = counted.run(folder, 8, progress=False, iterator=iterator)
  assert len(calls) == 2 and second.step == 8 and iterator.restored_to == [{'step': 6}]
  assert checkpoint_steps(folder) == [3, 6, 8]  # The last step is saved although 8 % 3 != 0.
  assert_trees_equal(jax.device_get(second.state), ref_state)  # == the uninterrupted run, bit for bit.
  assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(state6), jax.tree.leaves(ref_state)))

  # Asked for the same length again it does nothing; one more step evicts the oldest checkpoint (keep 3).
  counted, calls = counting(trainer)
  assert counted.run(folder, 8, progress=False).step == 8 and not calls
  assert counted.run(folder, 9, progress=False).step == 9 and len(calls) == 1
  assert checkpoint_steps(folder) == [6, 8, 9]
  with pytest.raises(ConfigError, match='beyond the requested 7 steps'):
    trainer.run(folder, 7, progress=False)


def check_sigterm_writes_checkpoint_and_resume_is_bit_identical(trainer, reference, folder, monkeypatch, capsys):
  """Through train.py's main: a real SIGTERM mid-run -> checkpoint, exit status 143; the same command resumes."""
  ref_dir, ref_state = reference
  folder.mkdir()
  config_file = folder / 'config.py'
  config_file.write_text('import test_train_loop\n\n\ndef get_config():\n  return test_train_loop.loop_config()\n')
  # The CLI gets the already compiled trainer (nothing compiles twice); it must have parsed the same config.
  def create(config, **kwargs):
    assert config.to_dict() == trainer.config.to_dict()
    return trainer
  monkeypatch.setattr(loop.Trainer, 'create', staticmethod(create))

  def sigterm_at_batch_4(index, batch):
    if index == 4:
      os.kill(os.getpid(), signal.SIGTERM)  # Arrives while step 4 is about to run; it finishes, then stops.
    return batch

  lives = iter([lambda c, m: Wrapped(trainer, sigterm_at_batch_4), lambda c, m: Wrapped(trainer)])
  monkeypatch.setitem(sources.SOURCES, 'synthetic', lambda c, m: next(lives)(c, m))
  argv = ['train.py', '--config', str(config_file), '--workdir', str(folder / 'w'), '--noprogress']
  handler = signal.getsignal(signal.SIGTERM)

  assert cli.main(argv) == 128 + signal.SIGTERM
  assert 'stopped by SIGTERM at step 5' in capsys.readouterr().err
  assert checkpoint_steps(folder / 'w') == [3, 5]
  assert signal.getsignal(signal.SIGTERM) is handler  # The loop's handler is gone again.

  assert cli.main(argv) == 0
  assert 'done: step 8' in capsys.readouterr().out
  assert checkpoint_steps(folder / 'w') == [5, 6, 8]
  assert_trees_equal(restored(trainer, folder / 'w', 8), ref_state)


def demo_trainer(trainer, demo_build):
  """The loop tests' trainer (its compiled step) reading the real demo source: the short-cut demo build of
  conftest.py (stored at 64 px, downsampled to 16 on the device), no in-loop evaluation."""
  config = loop_config()
  config.data.source = 'headgan_demo'
  config.data.data_dir = demo_build[0].data.data_dir
  config.data.stored_size = 64
  config.evals = ml_collections.ConfigDict()
  return dataclasses.replace(trainer, config=config)


class Signalling:
  """The real train iterator of a source, sending this process SIGTERM when batch `at` is taken."""

  def __init__(self, trainer, at: int):
    self.inner = sources.make_train_iterator(trainer.config, trainer.mesh)
    self.at, self.taken = at, 0

  def __next__(self):
    if self.taken == self.at:
      os.kill(os.getpid(), signal.SIGTERM)  # Step `at` still runs; then a checkpoint, and the run returns.
    self.taken += 1
    return next(self.inner)

  def get_state(self):
    return self.inner.get_state()

  def set_state(self, state):
    self.inner.set_state(state)


def check_sigterm_on_demo_source_resumes_bit_identical(demo, folder):
  """SIGTERM mid-run on the real demo pipeline (grain position in the checkpoint), then the same run resumed with
  a fresh pipeline: bit-identical to an uninterrupted run. Returns the uninterrupted run's folder (6 steps)."""
  reference = demo.run(folder / 'reference', 6, progress=False)
  first = demo.run(folder / 'w', 6, progress=False, iterator=Signalling(demo, at=3))
  assert first.stopped_by == 'SIGTERM' and first.step == 4 and checkpoint_steps(folder / 'w') == [3, 4]
  saved = json.loads((folder / 'w' / 'checkpoints' / '4' / 'data' / 'metadata').read_text())
  assert saved['process_count'] == 1 and saved['iterator_states'][0] != {'step': 4}  # grain's own position.
  second = demo.run(folder / 'w', 6, progress=False)  # The source's own iterator, set to the saved position.
  assert second.step == 6 and second.stopped_by is None
  assert_trees_equal(jax.device_get(second.state), jax.device_get(reference.state))
  return folder / 'reference'


def check_demo_model_learns(demo, workdir, monkeypatch, capsys, steps: int = 20):
  """Training goes on in `workdir` to `steps`; then baselines' command on its held-out frames of the training
  identity: G beats the untrained G by far. (This 16 px "w/o F" model does not beat copying the reference in so
  few steps - measured at 20 / 40 / 60 steps: 0.153 / 0.165 / 0.139 vs 0.081, untrained 0.326 - so that is
  asserted on the real demo run only; see README, "Demo training".)"""
  assert demo.run(workdir, steps, progress=False).step == steps
  monkeypatch.setattr(loop.Trainer, 'create', staticmethod(lambda config: demo))  # Compiled already.
  assert baselines_command.main(['--workdir', str(workdir), '--grid', str(workdir / 'grid.png')]) == 0
  out = capsys.readouterr().out
  r = json.loads(out.strip().splitlines()[-1])
  assert r['step'] == steps and r['identities'] == 'seen' and r['frames'] >= 3
  assert r['trained'] < 0.7 * r['untrained'], r
  assert r['reference'] == 'middle' and r['copy_reference'] < r['untrained'], r
  assert r['warped_reference'] == pytest.approx(r['copy_reference'])  # "w/o F": R gets the reference unwarped.
  from PIL import Image  # pylint: disable=import-outside-toplevel
  assert Image.open(workdir / 'grid.png').size == (2 * 5 * 16, 2 * 16)  # One row: the one training identity.


def check_nan_stops_training_naming_step_term_and_checkpoint(trainer, folder):
  def poison(index, batch):  # Batch 4 feeds step 5; with log_every = 2 its metrics are read one step late.
    return dataclasses.replace(batch, y=batch.y * jnp.nan) if index == 4 else batch

  config = loop_config()
  config.train.log_every = 2  # Logging cadence only: the compiled functions stay valid.
  with pytest.raises(NonFiniteLossError) as e:
    dataclasses.replace(trainer, config=config).run(folder, progress=False, iterator=Wrapped(trainer, poison))
  message = str(e.value)
  assert 'step 5' in message and 'g_l1 = nan' in message
  assert f'last good checkpoint is step 3: {folder / "checkpoints" / "3"}' in message
  assert checkpoint_steps(folder) == [3]  # Step 6's checkpoint (due after the NaN) was never written.


def check_tensorboard_has_every_term_image_grids_hparams_and_evals(trainer, reference):
  ref_dir, ref_state = reference
  events = metric_writer.read_events(ref_dir / 'tensorboard')
  scalars = events['scalars']
  for name in METRIC_NAMES:
    assert [s for s, _ in scalars[f'train/{name}']] == list(range(1, 9)), name
    assert all(np.isfinite(v) for _, v in scalars[f'train/{name}'])
  assert [v for _, v in scalars['train/lr']] == pytest.approx([2e-4] * 8)
  rate = dict(scalars['perf/steps_per_s'])
  assert set(rate) == set(range(1, 9)) and all(v > 0 for v in rate.values())
  assert dict(scalars['perf/examples_per_s'])[8] == pytest.approx(4 * rate[8], rel=1e-5)
  assert events['hparams']['train.batch_size'] == 4 and events['hparams']['data.source'] == 'synthetic'

  # Grids at steps 4 and 8: 2 examples x (x_t | warped reference | generated | target | mouth crops), 16x16 tiles.
  grids = dict(events['images']['images/train'])
  assert set(grids) == {4, 8} and grids[4].shape == (32, 4 * 16 + 8, 3)
  batch3 = Wrapped(trainer)
  batch3.set_state({'step': 3})
  y = np.asarray(jax.device_get(next(batch3).y))[:2]  # The batch of step 4 (its 4th).
  target = grids[4][:, 48:64].reshape(2, 16, 16, 3).astype(np.float32)
  np.testing.assert_allclose(target, (y + 1) / 2 * 255, atol=1.0)

  # The in-loop evaluation ran at steps 4 and 8 on the held-out synthetic batch, with the state of that step.
  assert dict(scalars['eval/probe/frames']) == {4: 4.0, 8: 4.0}
  held_out = next(iter(sources.make_eval_batches(trainer.config, trainer.mesh, 'test', trainer.config.evals.probe)))
  generated, _ = trainer.generate_fn(jax.device_put(ref_state, sharding_lib.replicated(trainer.mesh)), held_out)
  want = float(losses.masked_l1(generated, held_out.y, losses.face_mask(held_out.x_t, 0.01)))
  assert dict(scalars['eval/probe/l1'])[8] == pytest.approx(want, rel=1e-5)


def test_resume_with_a_different_config_is_refused(tmp_path):
  loop.save_or_check_config(loop_config(), str(tmp_path))  # A fresh run writes it.
  saved = json.loads((tmp_path / 'config.json').read_text())
  assert saved['train']['batch_size'] == 4 and saved['model']['num_down'] == 1
  loop.save_or_check_config(loop_config(), str(tmp_path))  # The same config resumes.
  changed = loop_config()
  changed.train.lr = 1e-3
  changed.model.ngf = 16
  with pytest.raises(ConfigError) as e:
    loop.save_or_check_config(changed, str(tmp_path))
  assert 'train.lr: 0.0002 -> 0.001' in str(e.value) and 'model.ngf: 8 -> 16' in str(e.value)
  assert str(tmp_path / 'config.json') in str(e.value)
  # Fields that do not change what is trained may differ (a longer run, other logging, other evaluations).
  fine = loop_config()
  fine.train.num_steps, fine.train.log_every, fine.train.image_every = 100, 5, 0
  fine.evals.probe.every = 2
  loop.save_or_check_config(fine, str(tmp_path))


def start_two_processes(workdir: pathlib.Path) -> list[subprocess.Popen]:
  """train.py on 2 processes x 2 CPU devices (jax.distributed over localhost), 3 steps of loop_test_config."""
  config_file = workdir.parent / 'two_process_config.py'
  config_file.write_text('import train_configs\n\n\ndef get_config():\n  c = train_configs.loop_test_config()\n'
                         '  c.train.image_every = 0\n  return c\n')
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  # The tests' fast-compile flags (conftest.py): XLA's defaults cost ~60 more CPU-seconds for the two processes
  # (before 2026-12-03 they kept the defaults, also cross-checking the fast flags against them).
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count=2 {conftest.FAST_COMPILE_XLA_FLAGS}',
             JAX_DEFAULT_PRNG_IMPL='unsafe_rbg', PYTHONPATH=f'{REPO}{os.pathsep}{REPO / "tests"}')
  return [subprocess.Popen([sys.executable, str(REPO / 'train.py'), '--config', str(config_file), '--workdir',
                            str(workdir), '--config.train.num_steps=3', '--noprogress',
                            f'--coordinator_address=localhost:{port}', '--num_processes=2', f'--process_id={i}'],
                           env=env, cwd=workdir.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for i in range(2)]


def check_two_processes_equal_one_process(trainer, reference, workdir, procs):
  """2 processes x 2 devices == 1 process x 4 devices: the state after 3 steps to 1e-5 and every logged term of the
  3 steps to rtol 1e-5 (see train_configs.loop_test_config); checkpoints written collectively, one log writer."""
  ref_dir, _ = reference
  outputs = [p.communicate(timeout=1200) for p in procs]
  for p, (out, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  assert 'done: step 3' in outputs[0][0] and 'done' not in outputs[1][0]  # Process 0 reports.
  assert len(list((workdir / 'tensorboard').glob('events.out.tfevents.*'))) == 1  # One writer.
  assert checkpoint_steps(workdir) == [3]
  saved = json.loads((workdir / 'checkpoints' / '3' / 'data' / 'metadata').read_text())
  assert saved == {'process_count': 2, 'iterator_states': [{'step': 3}, {'step': 3}]}

  assert_trees_equal(restored(trainer, workdir, 3), restored(trainer, ref_dir, 3), atol=1e-5)
  two = metric_writer.read_events(workdir / 'tensorboard')['scalars']
  one = metric_writer.read_events(ref_dir / 'tensorboard')['scalars']
  for name in METRIC_NAMES:
    np.testing.assert_allclose([v for _, v in two[f'train/{name}']], [v for _, v in one[f'train/{name}']][:3],
                               rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.slow
def test_training_loop(tmp_path, monkeypatch, capsys, request):
  """Resume after a crash, SIGTERM through train.py, NaN stop, TensorBoard contents, on the real demo source
  SIGTERM + resume and learning, and 2 processes == 1."""
  two_process_dir = tmp_path / 'two_processes'
  procs = start_two_processes(two_process_dir)  # Compiles in the background meanwhile.
  try:
    config = loop_config()
    trainer = loop.Trainer.create(config, devices=jax.devices()[:4], init_key=train_configs.init_key(config))
    reference = reference_run(trainer, tmp_path / 'reference')
    check_interrupted_run_resumes_from_checkpoint_exactly(trainer, reference, tmp_path / 'crash')
    with monkeypatch.context() as patch:
      check_sigterm_writes_checkpoint_and_resume_is_bit_identical(trainer, reference, tmp_path / 'sigterm', patch,
                                                                  capsys)
    check_nan_stops_training_naming_step_term_and_checkpoint(trainer, tmp_path / 'nan')
    check_tensorboard_has_every_term_image_grids_hparams_and_evals(trainer, reference)
    try:
      demo_build = request.getfixturevalue('demo_build')
    except pytest.skip.Exception as e:  # No ../shared fixtures: the synthetic checks above still count.
      warnings.warn(f'demo-source checks skipped: {e}')
    else:
      demo = demo_trainer(trainer, demo_build)
      demo_run = check_sigterm_on_demo_source_resumes_bit_identical(demo, tmp_path / 'demo')
      with monkeypatch.context() as patch:
        check_demo_model_learns(demo, demo_run, patch, capsys)
    check_two_processes_equal_one_process(trainer, reference, two_process_dir, procs)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()


def test_config_overrides_and_variants():
  paper = str(REPO / 'configs' / 'paper.py')
  config, fv = cli.parse(['train.py', '--config', f'{paper}:ablation=no_flow', '--workdir', '/tmp/x',
                          '--config.train.batch_size=12', '--config.data.source=synthetic'])
  assert config.train.batch_size == 12 and config.data.source == 'synthetic' and fv.workdir == '/tmp/x'
  assert not config.model.use_flow and config.variant == 'no_flow'
  rows = {'full': ('model.use_flow', True), 'no_flow': ('model.use_flow', False),
          'no_audio': ('model.use_audio', False), 'landmarks': ('data.conditioning', 'landmarks')}
  for ablation, (field, value) in rows.items():
    config, _ = cli.parse(['train.py', f'--config={REPO / "configs" / "tiny.py"}:ablation={ablation}'])
    section, name = field.split('.')
    assert config[section][name] == value and config.image_size == 64, ablation
  config, _ = cli.parse(['train.py', f'--config={paper}:ablation=no_audio,audio_timing=authors'])
  assert (config.audio.lowlevel_offset, config.audio.chars_offset, config.model.use_audio) == (4, 5, False)
  config, _ = cli.parse(['train.py', f'--config={paper}:audio_timing=centred'])
  assert (config.audio.lowlevel_offset, config.audio.chars_offset) == (0, 0)
  bad = [([f'--config={paper}:ablation=no_mouth'], 'expected one of full, no_flow, no_audio, landmarks'),
         ([f'--config={paper}:audio_timing=late'], 'expected one of measured, authors, centred'),
         ([f'--config={paper}', '--config.train.batch_sise=3'], "has no config field 'train.batch_sise'"),
         ([f'--config={paper}', '--config.train.batch_size=many'], 'batch_size=many'),
         (['--config=configs/none.py'], 'config file configs/none.py does not exist'),
         (['--workdir=/tmp/x'], '--config is required')]
  for args, message in bad:
    with pytest.raises(ConfigError, match=message):
      cli.parse(['train.py'] + args)


def test_a_saved_config_json_resumes_with_overrides(tmp_path):
  """train.py --config WORKDIR/config.json (a copied work folder) takes overrides like a config file; a field the
  file lacks and a file that is neither .py nor .json are refused in one line."""
  saved = tmp_path / 'config.json'
  saved.write_text(train_configs.loop_test_config().to_json())
  config, fv = cli.parse(['train.py', '--config', str(saved), '--workdir', str(tmp_path), '--config.train.num_steps=7'])
  assert config.train.num_steps == 7 and fv.workdir == str(tmp_path) and config.image_size == 16
  with pytest.raises(ConfigError, match="has no config field 'train.nope'"):
    cli.parse(['train.py', f'--config={saved}', '--config.train.nope=1'])
  (tmp_path / 'notes.txt').write_text('x')
  with pytest.raises(ConfigError, match=r'expected a config file path.py\[:arg\] or a saved config.json'):
    cli.parse(['train.py', '--config', str(tmp_path / 'notes.txt')])


def test_unknown_data_source_names_the_known_ones():
  config = train_configs.loop_test_config()
  config.data.source = 'headgan_vox'
  with pytest.raises(ConfigError, match="'headgan_vox' has no train iterator .*known sources: headgan_demo, headgan_voxceleb, synthetic"):
    sources.make_train_iterator(config, sharding_lib.make_mesh(jax.devices()[:1]))


def _write_config(folder: pathlib.Path, vgg_weights: str) -> str:
  path = folder / 'vgg_on.py'
  path.write_text('from configs import tiny\n\n\ndef get_config():\n  c = tiny.get_config()\n'
                  f'  c.loss.use_vgg = True\n  c.loss.vgg_weights = {vgg_weights!r}\n  return c\n')
  return str(path)


@pytest.mark.parametrize('weights, message', [('', "vgg_weights is ''"), ('/nonexistent/vgg19.pth', 'does not exist')])
def test_refuses_to_start_without_vgg_weights(tmp_path, capsys, weights, message):
  config = _write_config(tmp_path, weights)
  rc = cli.main(['train.py', '--config', config, '--workdir', str(tmp_path / 'w'), '--config.train.num_steps=1'])
  err = capsys.readouterr().err
  assert rc == 2
  assert message in err and err.startswith('error: ')
  assert not (tmp_path / 'w').exists()  # Refused before creating anything.


def test_command_line_refusal_is_clean(tmp_path):
  """The real command: exit status 2, one error line, no traceback (configs/paper.py has VGG on, no weights)."""
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, str(REPO / 'train.py'), '--config', str(REPO / 'configs' / 'paper.py'),
                         '--workdir', str(tmp_path / 'w'), '--config.train.num_steps=1'],
                        capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
  assert proc.returncode == 2, proc.stderr
  assert 'Traceback' not in proc.stderr
  assert 'config.loss.vgg_weights' in proc.stderr
