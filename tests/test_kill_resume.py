"""Killed at any moment, nothing lost (docs/reliability.md): train.py SIGKILLed at several points and resumed each
time ends bit-identical to an uninterrupted run; a checkpoint write that fails for lack of space stops training with
one line and leaves the previous checkpoint whole, and the run resumes from it; the demo dataset build killed while
writing its records and run again gives the dataset built in one go.

Each life of a training run is a subprocess running train.py's main (headgan_jax/commands/train.py) through this file's
`__main__` (`life`), which first arranges its own SIGKILL at one point (LIVES): while a train step computes and the
checkpoint before it is being written (orbax's commit of it held back), and right after orbax committed a checkpoint,
halfway through deleting the oldest one and before the new one is sealed by its checksums.json. Each life prints what
the checkpoint folder held when it died and where it resumed. The subprocesses share one persistent compile cache: the
uninterrupted reference run compiles the step, every later life loads it.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pathlib
import resource
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 8  # The run's length: checkpoints after every step, the last 3 kept.
CONFIG = '''import ml_collections

import train_configs


def get_config():
  c = train_configs.loop_test_config()
  c.evals = ml_collections.ConfigDict()
  c.train.image_every = 0
  c.train.checkpoint_every = 1
  c.train.keep_checkpoints = 3
  c.train.num_steps = {steps}
  return c
'''
# The kill points of the lives that are killed, in order, and the checkpoint the next life resumes from: 'step:4'
# while step 4 computes and checkpoint 3 is being written (orbax's commit of it held back: files partly written,
# nothing renamed into place); 'delete:7' right after checkpoint 7 was committed, halfway through deleting the oldest
# checkpoint (keep_checkpoints), 7 not yet sealed by its checksums.json.
LIVES = (('step:4', 2), ('delete:7', 7))


# --- One life of a run (this file as a program) -----------------------------------------------------------------


def _die(what: str, root: str) -> None:
  """One stdout line (the kill point and what the folder `root` holds), then SIGKILL: no handler, no cleanup."""
  entries = sorted(os.listdir(root)) if os.path.isdir(root) else []
  print(json.dumps({'killed': what, 'entries': entries}), flush=True)
  os.kill(os.getpid(), signal.SIGKILL)


def life(kill: str, argv: list[str]) -> int:
  """train.py's main on `argv`, killed at `kill` ('none', 'step:N', 'delete:N'); prints
  {"resumed_from": step} when it restores a checkpoint."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  import threading  # pylint: disable=import-outside-toplevel

  from orbax.checkpoint._src.path import atomicity, deleter  # pylint: disable=import-outside-toplevel

  from headgan_jax.commands import train as cli
  from headgan_jax.train import loop  # pylint: disable=import-outside-toplevel
  root = os.path.abspath(os.path.join(argv[argv.index('--workdir') + 1], 'checkpoints'))
  where, _, n = kill.partition(':')
  n = int(n or 0)

  restore_or_init = loop.Trainer.restore_or_init

  def restoring(self, manager, iterator, step):
    if step is not None:
      print(json.dumps({'resumed_from': step}), flush=True)
    return restore_or_init(self, manager, iterator, step)

  loop.Trainer.restore_or_init = restoring

  if where == 'step':  # Step n dispatched (JAX runs it asynchronously) and killed while it computes.
    create, finalize = loop.Trainer.create, atomicity.AtomicRenameTemporaryPath.finalize
    held = threading.Event()

    def create_killing(config, **kwargs):
      trainer = create(config, **kwargs)
      step_fn = trainer.train_step

      def train_step(state, batch, vgg_params=None, step=None):
        out = step_fn(state, batch, vgg_params, step=step)
        if step + 1 == n:
          _die(f'{kill} (its result ready: {out[0].step.is_ready()})', root)
        return out

      return dataclasses.replace(trainer, train_step=train_step)

    async def finalize_held(self):  # Checkpoint n-1's commit never comes: killed while it is being written.
      if self._final_path.name == str(n - 1):  # pylint: disable=protected-access
        held.wait()
      return await finalize(self)

    loop.Trainer.create = staticmethod(create_killing)
    atomicity.AtomicRenameTemporaryPath.finalize = finalize_held
  elif where == 'delete':  # Checkpoint N committed; orbax deleting the oldest one (keep_checkpoints) is cut short.
    delete = deleter.StandardCheckpointDeleter._delete_step_permanently  # pylint: disable=protected-access

    def delete_killing(self, step, target):
      if os.path.isdir(os.path.join(root, str(n))):
        files = [os.path.join(p, f) for p, _, fs in os.walk(target, topdown=False) for f in fs]
        for f in files[:len(files) // 2]:  # As rmtree leaves it when killed halfway.
          os.remove(f)
        _die(f'{kill} (deleting step {step})', root)
      return delete(self, step, target)

    deleter.StandardCheckpointDeleter._delete_step_permanently = delete_killing  # pylint: disable=protected-access
  elif where != 'none':
    raise SystemExit(f'unknown kill point {kill}')
  return cli.main(['train.py', *argv])


def killed_build(argv: list[str]) -> int:
  """The dataset build command (python -m headgan_jax.data.build) on `argv`, killed once it has written half of the
  records of its first file (TFDS writes them into DATA_DIR/<name>/<size>px/incomplete.<id>/)."""
  from tensorflow_datasets.core import file_adapters  # pylint: disable=import-outside-toplevel

  from headgan_jax.commands import build  # pylint: disable=import-outside-toplevel
  adapter = file_adapters.ArrayRecordFileAdapter
  write = adapter.write_examples

  def write_half(cls, path, iterator):
    del cls
    examples = list(iterator)
    write(path, examples[:len(examples) // 2])
    _die(f'build (writing {os.path.basename(path)})', os.path.dirname(os.path.dirname(os.fspath(path))))

  adapter.write_examples = classmethod(write_half)
  return build.main(argv)


# --- The tests ------------------------------------------------------------------------------------------------


class Runner:
  """Starts lives of one training config in subprocesses sharing a compile cache."""

  def __init__(self, folder: pathlib.Path):
    import conftest  # pylint: disable=import-outside-toplevel
    self.config = folder / 'config.py'
    self.config.write_text(CONFIG.format(steps=STEPS))
    self.env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_DEFAULT_PRNG_IMPL='unsafe_rbg',
                    HEADGAN_JAX_COMPILATION_CACHE=str(folder / 'xla'),
                    XLA_FLAGS=f'--xla_force_host_platform_device_count=1 {conftest.FAST_COMPILE_XLA_FLAGS}',
                    PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / 'tests')]))

  def run(self, workdir: pathlib.Path, kill: str = 'none', steps: int = STEPS, file_limit: int | None = None
          ) -> tuple[int, list[dict], str]:
    """(exit status, the JSON lines it printed, stderr) of one life in `workdir`."""
    def limit_files():  # As a full disk: a write past `file_limit` bytes fails (EFBIG, not SIGXFSZ's kill).
      signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
      resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    proc = subprocess.run([sys.executable, __file__, kill, '--config', str(self.config), '--workdir', str(workdir),
                           '--noprogress', f'--config.train.num_steps={steps}'], cwd=REPO, env=self.env,
                          capture_output=True, text=True, timeout=600,
                          preexec_fn=limit_files if file_limit else None)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{')]
    return proc.returncode, lines, proc.stderr


def checkpoint_arrays(folder: pathlib.Path) -> dict[str, bytes]:
  """The raw bytes of every array of a checkpoint's state (read through tensorstore: no devices, no model), and its
  data item (the iterator positions)."""
  import tensorstore as ts  # pylint: disable=import-outside-toplevel

  from headgan_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  state = folder / 'state'
  metadata = json.loads((state / '_METADATA').read_text())
  context, out = ts.Context(), {}
  for name in workdir_lib._array_names(metadata):  # pylint: disable=protected-access
    spec = {'driver': 'zarr3' if metadata.get('use_zarr3') else 'zarr',
            'kvstore': {'driver': 'ocdbt', 'base': f'file://{state}/', 'path': f'{name}/'}}
    array = ts.open(spec, open=True, read=True, context=context).result().read().result()
    out[name] = np.ascontiguousarray(array).tobytes() + str((array.dtype, array.shape)).encode()
  out['data'] = (folder / 'data' / 'metadata').read_bytes()
  return out


def steps_in(workdir: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())


def assert_same_checkpoint(a: pathlib.Path, b: pathlib.Path) -> None:
  x, y = checkpoint_arrays(a), checkpoint_arrays(b)
  assert x.keys() == y.keys() and len(x) > 20
  assert [k for k in x if x[k] != y[k]] == [], f'{a} and {b} differ'


def check_killed_lives(runner: Runner, workdir: pathlib.Path) -> int:
  """The killed lives of LIVES in `workdir`; the step the next life resumes from."""
  resumed_from = None
  for kill, next_resume in LIVES:
    status, lines, stderr = runner.run(workdir, kill)
    assert status == -signal.SIGKILL, (kill, status, stderr[-3000:])
    assert [x['resumed_from'] for x in lines if 'resumed_from' in x] == ([resumed_from] if resumed_from else [])
    [died] = [x for x in lines if 'killed' in x]
    where, n = kill.split(':')
    entries = died['entries']
    if where == 'step':  # Checkpoint n-2 committed; n-1 unfinished: only orbax's temporary folder.
      before, unfinished = str(int(n) - 2), str(int(n) - 1)
      assert before in entries and unfinished not in entries, died
      assert any(e.startswith(f'{unfinished}.orbax-checkpoint-tmp') for e in entries), died
    else:
      assert n in entries, died
    resumed_from = next_resume
  return resumed_from


def check_no_space_stops_with_one_line(runner: Runner, workdir: pathlib.Path, resume: int) -> None:
  """A resumed run whose next checkpoint does not fit (a file size limit: EFBIG, as ENOSPC on a full disk): exit 2
  with one line naming the folder, the cause and the checkpoint to resume from, which stays as it was."""
  from headgan_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  folder = workdir / 'checkpoints'
  before = checkpoint_arrays(folder / str(resume))
  status, lines, stderr = runner.run(workdir, file_limit=100_000)  # The state's files are 80-450 kB.
  assert status == 2 and lines == [{'resumed_from': resume}], stderr[-3000:]
  assert 'Traceback' not in stderr and 'ERROR' not in stderr and 'Exception' not in stderr, stderr[-3000:]
  [line] = [x for x in stderr.splitlines() if x.startswith('error: ')]
  assert line.startswith(f'error: cannot write checkpoint step {resume + 1} to {folder}: File too large.'), line
  assert f'the newest whole checkpoint is step {resume}: {folder / str(resume)}.' in line, line
  assert str(resume + 1) not in os.listdir(folder)
  assert workdir_lib.damage(str(folder / str(resume))) is None and checkpoint_arrays(folder / str(resume)) == before


@pytest.mark.slow
def test_training_killed_anywhere_resumes_bit_identical(tmp_path):
  runner = Runner(tmp_path)
  reference, workdir = tmp_path / 'reference', tmp_path / 'killed'
  status, lines, stderr = runner.run(reference)  # Uninterrupted; compiles the step for every later life.
  assert status == 0 and lines == [], stderr[-3000:]
  resume = check_killed_lives(runner, workdir)
  assert resume == STEPS - 1  # The last life writes the last checkpoint: that write fails first.
  check_no_space_stops_with_one_line(runner, workdir, resume)
  status, lines, stderr = runner.run(workdir)  # Space again: it resumes from there and ends.
  assert status == 0 and lines == [{'resumed_from': resume}], stderr[-3000:]
  assert 'Traceback' not in stderr, stderr[-3000:]
  # Nothing lost: the checkpoints both runs kept are the same, bit for bit (state and data position).
  assert steps_in(workdir) == steps_in(reference) == [STEPS - 2, STEPS - 1, STEPS]
  for step in steps_in(reference):
    assert_same_checkpoint(reference / 'checkpoints' / str(step), workdir / 'checkpoints' / str(step))
  # No unfinished write is left behind (orbax's temporary folders are removed when training starts).
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == [str(s) for s in steps_in(workdir)]


def test_no_space_errors_are_recognised():
  """ENOSPC / EDQUOT / EFBIG as Python raises them and as tensorstore reports them through orbax (a ValueError
  naming the OS error code), also as the cause of another exception; other errors are not."""
  from headgan_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  store = ('OUT_OF_RANGE: Error writing "d.x/0" in OCDBT database at local file "/w/checkpoints/3.orbax-checkpoint-'
           'tmp/state.orbax-checkpoint-tmp/ocdbt.process_0/": Failed writing: "/w/f": Failed to write 230479 bytes to '
           "file 15: {} [os_error_code='{}']")
  assert workdir_lib.no_space(OSError(errno.ENOSPC, 'No space left on device', '/w/x')) == 'No space left on device'
  assert workdir_lib.no_space(ValueError(store.format('Disk quota exceeded', errno.EDQUOT))) == 'Disk quota exceeded'
  try:
    try:
      raise ValueError(store.format('File too large', errno.EFBIG))
    except ValueError as e:
      raise RuntimeError('save finalize thread failed') from e
  except RuntimeError as e:
    assert workdir_lib.no_space(e) == 'File too large'
  assert workdir_lib.no_space(ValueError(store.format('Permission denied', errno.EACCES))) is None
  assert workdir_lib.no_space(OSError(errno.EACCES, 'Permission denied')) is None
  assert workdir_lib.no_space(ValueError('unrelated')) is None


def test_stop_on_no_space_says_it_in_one_line(tmp_path, monkeypatch):
  """Any write of the run (here checksums.json) failing for lack of space: CheckpointError naming the file, the cause
  and the checkpoint to resume from; other errors pass unchanged, and without a failure every hook is given back."""
  import logging  # pylint: disable=import-outside-toplevel

  from headgan_jax import errors  # pylint: disable=import-outside-toplevel
  from headgan_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  loggers = [logging.getLogger(name) for name in ('absl', 'asyncio')]
  for logger in loggers:
    monkeypatch.setattr(logger, 'filters', list(logger.filters))
  monkeypatch.setattr(sys, 'excepthook', sys.excepthook)
  monkeypatch.setattr(sys, 'unraisablehook', sys.unraisablehook)
  hooks = (sys.excepthook, sys.unraisablehook, [list(x.filters) for x in loggers])
  with pytest.raises(KeyError):
    with workdir_lib.stop_on_no_space(str(tmp_path)):
      raise KeyError('not a write')
  assert (sys.excepthook, sys.unraisablehook, [list(x.filters) for x in loggers]) == hooks
  target = tmp_path / 'checkpoints' / '3' / 'checksums.json'
  with pytest.raises(errors.CheckpointError) as e:
    with workdir_lib.stop_on_no_space(str(tmp_path)):
      raise OSError(errno.ENOSPC, 'No space left on device', str(target))
  assert str(e.value) == (f'cannot write {target}: No space left on device. Training stopped; no checkpoint was '
                          'written yet. Free some space (or raise the limit) and run the same command to resume.')


@pytest.mark.slow
def test_demo_build_killed_while_writing_gives_the_same_dataset(demo_build, tmp_path):
  """The demo build killed (SIGKILL) halfway through writing its records, then run again: the dataset built in one
  go (conftest's demo build), record for record. Both runs take the clips from a copy of that build's per-clip cache
  (tracking them again would cost a minute; a build killed before a clip is cached redoes that clip, and one killed
  after redoes none: test_datasets.py's killed VoxCeleb build shows it, through the same cache)."""
  from headgan_jax.data import build, building  # pylint: disable=import-outside-toplevel
  config, builder, _ = demo_build
  data_dir, cache = tmp_path / 'tfds', tmp_path / 'cache'
  shutil.copytree(pathlib.Path(config.data.data_dir) / 'headgan_cache', cache)
  command = ['demo', '--config', str(REPO / 'tests' / 'dataset_config.py'), '--data_dir', str(data_dir),
             '--cache_dir', str(cache), '--clips_dir', config.data.demo_dir]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / 'tests')]))
  proc = subprocess.run([sys.executable, __file__, 'build', *command], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  [died] = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"killed"')]
  assert [e for e in died['entries'] if not e.startswith('incomplete.')] == [], died  # Nothing finished.
  size_dir = pathlib.Path(builder.data_dir).parent.relative_to(config.data.data_dir)
  assert [p.name for p in (data_dir / size_dir).iterdir()] == died['entries']

  again = config.copy_and_resolve_references()
  again.data.data_dir, again.data.cache_dir = str(data_dir), str(cache)
  with contextlib.redirect_stdout(io.StringIO()):
    rebuilt = build.build('headgan_demo', again)
  assert [p.name for p in (data_dir / size_dir).iterdir()] == [building.DATASET_VERSION]  # The half-written one: gone.
  rows = [json.loads(line) for line in (pathlib.Path(rebuilt.data_dir) / 'report.jsonl').open()]
  assert rows and all(r['cached'] for r in rows)
  assert rebuilt.info.metadata['counts'] == builder.info.metadata['counts']
  assert rebuilt.info.metadata['audio_stats'] == builder.info.metadata['audio_stats']
  for split in ('train', 'test'):
    a, b = rebuilt.as_data_source()[split], builder.as_data_source()[split]
    assert len(a) == len(b) > 0
    by_key = {r['key']: r for r in (b[i] for i in range(len(b)))}
    for record in (a[i] for i in range(len(a))):
      expected = by_key[record['key']]
      assert record.keys() == expected.keys()
      for field, value in record.items():
        assert np.array_equal(np.asarray(value), np.asarray(expected[field])), (split, field)


if __name__ == '__main__':
  if sys.argv[1] == 'build':
    sys.exit(killed_build(sys.argv[2:]))
  sys.exit(life(sys.argv[1], sys.argv[2:]))
