"""Checkpoints that survive damage (workdir.py `damage`, the loop's resume, the readers' `find` / `load`)
and one training run per work folder (WORKDIR/run.lock).

One tiny run writes checkpoints at steps 1, 2 and 3 once per module, through the loop's own saving; its train step
is replaced by one that only counts (state.step + 1), so nothing is compiled but the state's initialisation. Each
test damages a copy: truncated array file, a missing array file, a missing metadata file, garbage bytes inside an
array file; with the checksums the loop writes, and without them (a work folder from before they existed, or a run
killed before it wrote them: then the checkpoint is read back).
"""
import dataclasses
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import pytest

import train_configs
from headgan_jax import errors
from headgan_jax.commands import reenact as reenact_command
from headgan_jax import workdir as workdir_lib
from headgan_jax.train import loop

REPO = pathlib.Path(__file__).resolve().parents[1]


class Counter:
  """A train iterator without data (the counting step never looks at its batch) that records set_state."""

  def __init__(self):
    self.step, self.restored_to = 0, []

  def __next__(self):
    self.step += 1

  def get_state(self):
    return {'step': self.step}

  def set_state(self, state):
    self.restored_to.append(state)
    self.step = state['step']


def counting_step(state, batch, vgg_params=None, step=None):
  del batch, vgg_params
  return state.replace(step=state.step + 1), {k: jnp.float32(step) for k in ('g_total', 'g_l1', 'd_total')}


@pytest.fixture(scope='module')
def trainer():
  config = train_configs.loop_test_config()
  config.evals = ml_collections.ConfigDict()
  config.train.image_every = 0
  config.train.checkpoint_every = 1
  config.train.keep_checkpoints = 3
  created = loop.Trainer.create(config, devices=jax.devices()[:1], init_key=jax.random.key(0, impl='unsafe_rbg'))
  return dataclasses.replace(created, train_step=counting_step)


@pytest.fixture(scope='module')
def three_checkpoints(trainer, tmp_path_factory) -> pathlib.Path:
  workdir = tmp_path_factory.mktemp('three') / 'run'
  assert trainer.run(workdir, 3, progress=False, iterator=Counter()).step == 3
  assert sorted(workdir_lib.step_folders(workdir)) == [1, 2, 3]
  return workdir


@pytest.fixture
def run_copy(three_checkpoints, tmp_path) -> pathlib.Path:
  shutil.copytree(three_checkpoints, tmp_path / 'run')
  return tmp_path / 'run'


def array_file(folder: pathlib.Path) -> pathlib.Path:
  """The largest data file of a checkpoint's state (OCDBT: arrays are stored in state/ocdbt.process_0/d/)."""
  return max((p for p in (folder / 'state').rglob('*') if p.is_file() and p.parent.name == 'd'),
             key=lambda p: p.stat().st_size)


def truncate(folder: pathlib.Path) -> str:
  path = array_file(folder)
  size = path.stat().st_size
  os.truncate(path, size // 2)
  return str(path.relative_to(folder))


def remove_array_file(folder: pathlib.Path) -> str:
  path = array_file(folder)
  path.unlink()
  return str(path.relative_to(folder))


def remove_metadata(folder: pathlib.Path) -> str:
  (folder / 'state' / '_METADATA').unlink()
  return 'state/_METADATA'


def garbage_inside(folder: pathlib.Path) -> str:
  """64 random bytes in the middle of an array file: orbax restores such a file without complaint (other values)."""
  path = array_file(folder)
  with open(path, 'r+b') as f:
    f.seek(path.stat().st_size // 2)
    f.write(os.urandom(64))
  return str(path.relative_to(folder))


def garbage_metadata(folder: pathlib.Path) -> str:
  path = folder / 'state' / '_METADATA'
  path.write_bytes(os.urandom(path.stat().st_size))
  return 'state/_METADATA'


# (damage, whether checksums.json stays, what the reason says with the damaged file's name for {file}).
FAULTS = {
    'truncated': (truncate, True, '{file} is {now} bytes, {was} when written (truncated)'),
    'missing file': (remove_array_file, True, '{file} is missing'),
    'missing metadata': (remove_metadata, True, '{file} is missing'),
    'garbage bytes': (garbage_inside, True, '{file} holds other bytes than were written'),
    'truncated, no checksums': (truncate, False, 'does not read back'),
    'missing file, no checksums': (remove_array_file, False, 'does not read back'),
    'missing metadata, no checksums': (remove_metadata, False, '{file} is missing'),
    'garbage metadata, no checksums': (garbage_metadata, False, '{file} is not valid JSON'),
}


def damage_step_3(workdir: pathlib.Path, fault: str) -> str:
  """Damages checkpoint 3 of `workdir` as FAULTS[fault] says; the reason `damage` should give (or a part of it)."""
  make, keep_sums, reason = FAULTS[fault]
  folder = workdir / 'checkpoints' / '3'
  if not keep_sums:
    (folder / workdir_lib.CHECKSUMS_FILE).unlink()
  sizes = {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob('*') if p.is_file()}
  damaged = make(folder)
  now = (folder / damaged).stat().st_size if (folder / damaged).exists() else 0
  return reason.format(file=damaged, now=now, was=sizes[damaged])


def stderr_lines(capsys) -> list[str]:
  return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_checkpoints_are_whole_with_checksums(three_checkpoints):
  for step, folder in workdir_lib.step_folders(three_checkpoints).items():
    assert (pathlib.Path(folder) / workdir_lib.CHECKSUMS_FILE).is_file(), step
    assert workdir_lib.damage(folder) is None, step
    os.rename(os.path.join(folder, workdir_lib.CHECKSUMS_FILE), os.path.join(folder, 'sums'))
    try:
      assert workdir_lib.damage(folder) is None, step  # Read back: whole too.
    finally:
      os.rename(os.path.join(folder, 'sums'), os.path.join(folder, workdir_lib.CHECKSUMS_FILE))


@pytest.mark.parametrize('fault', list(FAULTS))
def test_training_resumes_from_the_newest_whole_checkpoint(trainer, run_copy, fault, capsys):
  reason = damage_step_3(run_copy, fault)
  damaged = run_copy / 'checkpoints' / '3'
  iterator = Counter()
  result = trainer.run(run_copy, 4, progress=False, iterator=iterator)
  assert iterator.restored_to == [{'step': 2}]  # Checkpoint 2's position: steps 3 and 4 were trained again.
  assert result.step == 4 and int(jax.device_get(result.state.step)) == 4
  lines = stderr_lines(capsys)
  assert len(lines) == 1, lines
  aside = sorted((run_copy / workdir_lib.DAMAGED_DIR).iterdir())
  assert len(aside) == 1 and aside[0].name.startswith('3-')
  assert lines[0].startswith('skipping checkpoint step 3: ') and lines[0].endswith(f'; moved to {aside[0]}')
  assert reason in lines[0]
  assert workdir_lib.damage(str(aside[0])) is not None  # Moved as it was, not repaired or rewritten.
  assert not damaged.exists() or workdir_lib.damage(str(damaged)) is None  # A new, whole checkpoint 3 (or 4's).
  steps = workdir_lib.step_folders(run_copy)
  assert sorted(steps) == [2, 3, 4] and all(workdir_lib.damage(f) is None for f in steps.values())
  assert all(os.path.isfile(os.path.join(f, workdir_lib.CHECKSUMS_FILE)) for f in steps.values())


def test_a_checkpoint_read_back_whole_gets_its_checksums(trainer, run_copy):
  folder = run_copy / 'checkpoints' / '3'
  (folder / workdir_lib.CHECKSUMS_FILE).unlink()  # As after a kill before the loop wrote them.
  iterator = Counter()
  assert trainer.run(run_copy, 3, progress=False, iterator=iterator).step == 3 and iterator.restored_to == [
      {'step': 3}]
  assert (folder / workdir_lib.CHECKSUMS_FILE).is_file() and workdir_lib.damage(str(folder)) is None


def test_readers_take_the_newest_whole_checkpoint_and_name_it_when_refusing(trainer, run_copy, capsys):
  reason = damage_step_3(run_copy, 'truncated')
  root = run_copy / 'checkpoints'
  lines: list[str] = []
  assert workdir_lib.find(run_copy, report=lines.append).step == 2
  assert lines == [f'skipping checkpoint step 3 ({root / "3"}): {reason}']

  ckpt = workdir_lib.load(run_copy)  # As reenact.py and evaluate.py load G without a step: the line on stderr.
  assert (ckpt.step, ckpt.path) == (2, str(root / '2'))
  assert stderr_lines(capsys) == lines
  state, step = trainer.restore(run_copy)
  assert step == 2 and int(jax.device_get(state.step)) == 2

  alternative = f'the newest whole checkpoint there is step 2: {root / "2"}.'
  with pytest.raises(errors.CheckpointError) as e:
    workdir_lib.load(run_copy, 3, step_flag='--checkpoint')
  assert str(e.value) == f'--checkpoint 3: checkpoint {root / "3"} is damaged: {reason}; {alternative}'
  with pytest.raises(errors.CheckpointError) as e:
    workdir_lib.find(root / '3')
  assert str(e.value) == f'{root / "3"}: checkpoint is damaged: {reason}; {alternative}'
  # The command: exit status 2 and that one line (reenact.py checks that its input files exist, then stops at the
  # checkpoint before it reads them).
  for name in ('x.png', 'x.mp4'):
    (run_copy / name).write_bytes(b'')
  capsys.readouterr()
  assert reenact_command.main(['--checkpoint', str(root / '3'), '--reference', str(run_copy / 'x.png'), '--driving',
                       str(run_copy / 'x.mp4'), '--out', str(run_copy / 'out.mp4')]) == 2
  assert stderr_lines(capsys) == [f'error: {e.value}']
  # Readers move nothing (training may run beside them; only the run holding the lock moves damaged ones aside).
  assert sorted(workdir_lib.step_folders(run_copy)) == [1, 2, 3] and not (run_copy / workdir_lib.DAMAGED_DIR).exists()


def test_no_whole_checkpoint_stops_training_and_moves_nothing(trainer, run_copy):
  for step in (1, 2, 3):
    remove_metadata(run_copy / 'checkpoints' / str(step))
  with pytest.raises(errors.CheckpointError) as e:
    trainer.run(run_copy, 4, progress=False, iterator=Counter())
  assert str(e.value).startswith(f'{run_copy / "checkpoints"}: no checkpoint there is whole, so training cannot '
                                 'resume: step 3: state/_METADATA is missing; step 2: ')
  assert sorted(workdir_lib.step_folders(run_copy)) == [1, 2, 3] and not (run_copy / workdir_lib.DAMAGED_DIR).exists()
  with pytest.raises(errors.CheckpointError, match='no checkpoint there is whole'):
    workdir_lib.find(run_copy)


def test_a_whole_checkpoint_that_does_not_fit_is_refused_and_not_moved(run_copy):
  config = train_configs.loop_test_config()
  config.model.ngf = 16  # Other shapes: as a checkpoint of other code would have.
  other = loop.Trainer.create(config, devices=jax.devices()[:1])
  with other.checkpoint_manager(run_copy) as manager:
    with pytest.raises(errors.CheckpointError) as e:
      other.restore_or_init(manager, Counter(), 3)
  assert str(e.value).startswith(f'{run_copy / "checkpoints" / "3"} is whole but does not restore into this run')
  assert '\n' not in str(e.value) and workdir_lib.damage(str(run_copy / 'checkpoints' / '3')) is None


# --- One run per work folder -------------------------------------------------------------------------------------

HOLD = ('import sys, time\nfrom headgan_jax import workdir\nlock = workdir.lock_workdir(sys.argv[1])\n'
        'print("held", flush=True)\ntime.sleep(600)\n')


def start_holder(workdir: pathlib.Path) -> subprocess.Popen:
  """A process holding WORKDIR's lock until it is killed."""
  proc = subprocess.Popen([sys.executable, '-c', HOLD, str(workdir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == 'held'
  return proc


def error_lines(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if line.startswith('error: ')]


def test_a_second_run_is_refused_while_the_first_lives(trainer, tmp_path):
  workdir = tmp_path / 'busy'
  holder = start_holder(workdir)
  try:
    named = f'pid {holder.pid} on {socket.gethostname()}, started '
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    train = subprocess.run([sys.executable, str(REPO / 'train.py'), '--config', str(REPO / 'configs' / 'tiny.py'),
                            '--workdir', str(workdir), '--noprogress'], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=300)
    assert train.returncode == 2 and 'Traceback' not in train.stderr, train.stderr
    [line] = error_lines(train.stderr)
    assert line.startswith(f'error: {workdir} is in use by another training run ({named}') and ' -c ' in line
    job = subprocess.run([sys.executable, '-m', 'headgan_jax.main_job', '--workdir', str(workdir)], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    assert job.returncode == 2 and error_lines(job.stderr) == [line], job.stderr
    assert sorted(p.name for p in workdir.iterdir()) == [workdir_lib.LOCK_FILE]  # Neither wrote anything.
    with pytest.raises(errors.WorkdirBusyError, match=f'in use by another training run \\({named}'):
      trainer.run(workdir, 1, progress=False, iterator=Counter())  # The loop's own lock (train.py probes first).
  finally:
    holder.send_signal(signal.SIGKILL)  # No chance to clean up: the kernel drops its lock.
    holder.wait()
  assert workdir_lib.workdir_holder(workdir) is None
  assert trainer.run(workdir, 1, progress=False, iterator=Counter()).step == 1  # The stale lock file does not block.
  with workdir_lib.lock_workdir(workdir):
    assert f'"pid": {os.getpid()}' in (workdir / workdir_lib.LOCK_FILE).read_text()


CHILD = ('import sys\nfrom headgan_jax import errors, workdir\n'
         'busy = workdir.workdir_holder(sys.argv[1])\ntry:\n  workdir.lock_workdir(sys.argv[1], attempts=1)\n'
         'except errors.WorkdirBusyError:\n  print("refused", busy is not None)\nelse:\n  print("holds", busy)\n')


def test_a_child_started_with_the_lock_holds_it_with_its_parent(tmp_path):
  """main_job's train.py stage: the job's lock passes to it (an inherited descriptor), anyone else is refused."""
  def child(**popen) -> str:
    return subprocess.run([sys.executable, '-c', CHILD, str(tmp_path / 'w')], cwd=REPO, capture_output=True,
                          text=True, check=True, **popen).stdout.strip()

  with workdir_lib.lock_workdir(tmp_path / 'w') as lock:
    assert child(**lock.for_child()) == 'holds None'
    assert child() == 'refused True'
    # train.py itself (re-executed for tcmalloc on the way): past the lock, it stops at the next check instead (the
    # paper config's VGG weights, absent here).
    train = subprocess.run([sys.executable, str(REPO / 'train.py'), '--config', str(REPO / 'configs' / 'paper.py'),
                            '--workdir', str(tmp_path / 'w')], cwd=REPO, capture_output=True, text=True, timeout=300,
                           **lock.for_child())
    assert train.returncode == 2 and 'vgg_weights' in train.stderr and 'in use' not in train.stderr, train.stderr
  assert child() == 'holds None'  # Released with the parent's lock.
