"""The main job: the whole system on the embedded demo clips, from a fresh clone, in one command.

  .venv/bin/python -m headgan_jax.main_job --workdir runs/demo [--steps N] [--data_dir DIR] [--config FILE]

Stages (each one a project command, run as its own process, so each frees its memory when done):
  1. build    python -m headgan_jax.data.build demo: the demo set (../shared/fixtures: driving.mp4 + demo/talk-*.mp4;
              talk-05 = config.data.demo_test_identity is held out) into DIR (default WORKDIR/tfds)
  2. train    train.py --config configs/demo.py --workdir WORKDIR (resumes from its checkpoints)
  3. evaluate evaluate.py --config WORKDIR/config.json --workdir WORKDIR --out WORKDIR/eval.json
  4. reenact  reenact.py: ../shared/fixtures/reference.png driven by the held-out clip (talk-05, its own sound)
              -> WORKDIR/reenacted.mp4, WORKDIR/reenacted_side_by_side.mp4 (driving | x_t | generated) and
              WORKDIR/grid.png (reference | driving | x_t | generated, 4 frames)
Run it again and it resumes: a built dataset is not built again, training continues from its last checkpoint (or is
skipped when it reached its step count), and evaluation / reenactment are skipped when their outputs are newer than
the latest checkpoint. It ends by saying where each output is; WORKDIR/main_job.json records the stages' times.
One main job (or train.py) per work folder: a second one on the same WORKDIR stops at once with exit status 2 and one
line naming the running one (pid, host, start time); the lock is the kernel's (flock), so a killed job leaves none.
Exit status: 0 done; 2 a stage failed (its message is above), or WORKDIR is in use by another run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Sequence

from headgan_jax import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, 'configs', 'demo.py')
DEFAULT_REFERENCE = os.path.normpath(os.path.join(REPO, '..', 'shared', 'fixtures', 'reference.png'))
OUTPUTS = ('reenacted.mp4', 'reenacted_side_by_side.mp4', 'grid.png')  # Beside WORKDIR's eval.json (workdir.py).


class StageFailed(Exception):
  pass


def latest_checkpoint(workdir: str) -> tuple[int, float] | None:
  """(step, modification time) of the newest whole checkpoint in workdir, or None (a damaged newer one does not
  count: training then runs, sets it aside and trains again from the whole one)."""
  from headgan_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  step, _ = workdir_lib.newest_whole(workdir)
  if step is None:
    return None
  return step, os.path.getmtime(os.path.join(workdir, workdir_lib.CHECKPOINT_DIR, str(step)))


def fresh(paths: Sequence[str], than: float) -> bool:
  """Every path exists and is newer than `than`."""
  return all(os.path.exists(p) and os.path.getmtime(p) >= than for p in paths)


def run_stage(name: str, cmd: list[str], log: list[dict], **popen) -> None:
  """Runs one stage; `popen`: more subprocess arguments (the work folder's lock for the train stage)."""
  print(f'\n== {name}: {" ".join(cmd)}', flush=True)
  start = time.perf_counter()
  proc = subprocess.run(cmd, cwd=REPO, **popen)
  seconds = round(time.perf_counter() - start, 1)
  log.append(dict(stage=name, seconds=seconds, status=proc.returncode, command=cmd))
  if proc.returncode != 0:
    raise StageFailed(f'stage {name} failed (exit status {proc.returncode}): {" ".join(cmd)}')
  print(f'== {name}: done in {seconds:.0f} s', flush=True)


def run_stages_side_by_side(stages: Sequence[tuple[str, list[str]]], log: list[dict], workdir: str) -> None:
  """Runs independent stages as concurrent processes (each keeps about one core busy, so two fill a 2-core
  machine); the first prints to the console, the others to WORKDIR/<name>.log (said when they start)."""
  if len(stages) < 2:
    for name, cmd in stages:
      run_stage(name, cmd, log)
    return
  procs = []
  for i, (name, cmd) in enumerate(stages):
    log_path = None if i == 0 else os.path.join(workdir, f'{name}.log')
    print(f'\n== {name}: {" ".join(cmd)}' + (f'\n   (side by side with {stages[0][0]}; output in {log_path})'
                                             if log_path else ''), flush=True)
    out = open(log_path, 'w', encoding='utf-8') if log_path else None  # pylint: disable=consider-using-with
    procs.append((name, cmd, log_path, out, time.perf_counter(),
                  subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT if out else None)))
  failed, pending = [], list(procs)
  while pending:
    done = next((p for p in pending if p[-1].poll() is not None), None)
    if done is None:
      time.sleep(0.5)
      continue
    pending.remove(done)
    name, cmd, log_path, out, started, proc = done
    status = proc.returncode
    if out is not None:
      out.close()
    seconds = round(time.perf_counter() - started, 1)
    log.append(dict(stage=name, seconds=seconds, status=status, command=cmd, side_by_side=True))
    if status != 0:
      failed.append(f'stage {name} failed (exit status {status}): {" ".join(cmd)}' +
                    (f'; its output: {log_path}' if log_path else ''))
    else:
      print(f'== {name}: done in {seconds:.0f} s' + (f' (output in {log_path})' if log_path else ''), flush=True)
  if failed:
    raise StageFailed('; '.join(failed))


def skip(name: str, why: str, log: list[dict]) -> None:
  print(f'\n== {name}: skipped ({why})', flush=True)
  log.append(dict(stage=name, seconds=0.0, status='skipped', reason=why))


def load(config_file: str):
  from headgan_jax import config_files  # pylint: disable=import-outside-toplevel
  return config_files.load(config_file)


def run_job(workdir: str, config_file: str = DEFAULT_CONFIG, data_dir: str | None = None,
            clips_dir: str | None = None, steps: int = 0, reference: str | None = None, driving: str | None = None,
            batch: int = 8, eval_max_frames: int = 32) -> int:
  """The main job (the module docstring) as its flags of the same names say; its exit status."""
  py = sys.executable
  workdir = os.path.abspath(workdir)
  from headgan_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  try:  # One run per work folder: this job holds WORKDIR's lock, its train.py stage with it (inherited).
    lock = workdir_lib.lock_workdir(workdir)  # Creates the folder.
  except errors.WorkdirBusyError as e:
    print(f'error: {e}', file=sys.stderr)  # Nothing written: the folder is the other run's.
    return 2
  log: list[dict] = []
  start = time.perf_counter()
  try:
    config = load(config_file)
    data_dir = os.path.abspath(data_dir or os.path.join(workdir, 'tfds'))
    size = int(config.data.stored_size or config.image_size)
    demo_dir = config.data.demo_dir
    reference = reference or DEFAULT_REFERENCE
    driving = driving or os.path.join(demo_dir, 'demo', f'{config.data.demo_test_identity}.mp4')
    for what, path in (('reference image', reference), ('held-out driving clip', driving)):
      if not os.path.isfile(path):
        raise errors.DatasetError(f'{path}: the {what} is missing (the demo needs ../shared/fixtures beside the '
                                  'repository, or pass --reference / --driving).')
    # 1. The demo set.
    from headgan_jax.data import building  # pylint: disable=import-outside-toplevel
    built = os.path.join(data_dir, 'headgan_demo', f'{size}px', building.DATASET_VERSION, 'dataset_info.json')
    if os.path.isfile(built):
      skip('build', f'the demo set is built in {os.path.dirname(built)}', log)
    else:
      run_stage('build', [py, '-m', 'headgan_jax.data.build', 'demo', '--config', config_file, '--image_size',
                          str(size), '--data_dir', data_dir] + (['--clips_dir', clips_dir] if clips_dir
                                                                else []), log)
    # 2. Training (train.py resumes by itself; skipped when the last checkpoint is at the step count).
    overrides = [f'--config.data.data_dir={data_dir}', '--config.data.source=headgan_demo']
    if steps:
      overrides.append(f'--config.train.num_steps={steps}')
    target = steps or _total_steps(config)
    latest = latest_checkpoint(workdir)
    if latest is not None and target and latest[0] >= target:
      skip('train', f'checkpoint at step {latest[0]} in {os.path.join(workdir, workdir_lib.CHECKPOINT_DIR)}', log)
    else:
      run_stage('train', [py, 'train.py', '--config', config_file, '--workdir', workdir] + overrides, log,
                **lock.for_child())
    latest = latest_checkpoint(workdir)
    if latest is None:
      raise StageFailed(f'training wrote no checkpoint in {os.path.join(workdir, workdir_lib.CHECKPOINT_DIR)}.')
    step, when = latest
    # 3 and 4 (independent, side by side): evaluation, and the reenactment of the reference with the held-out clip.
    stages: list[tuple[str, list[str]]] = []
    eval_json = os.path.join(workdir, workdir_lib.EVAL_FILE)
    if fresh([eval_json], when):
      skip('evaluate', f'{eval_json} is newer than the checkpoint at step {step}', log)
    else:
      if not os.path.isfile(os.path.join(REPO, 'evaluate.py')):
        raise StageFailed(f'{REPO}/evaluate.py is missing from this checkout.')
      stages.append(('evaluate', [py, 'evaluate.py', '--config', os.path.join(workdir, workdir_lib.CONFIG_FILE),
                                  '--workdir', workdir, '--out', eval_json] + (
                                      ['--max_frames', str(eval_max_frames)] if eval_max_frames else [])))
    mp4s = [os.path.join(workdir, n) for n in OUTPUTS]
    if fresh(mp4s, when):
      skip('reenact', f'{mp4s[0]} is newer than the checkpoint at step {step}', log)
    else:
      stages.append(('reenact', [py, 'reenact.py', '--checkpoint', workdir, '--reference', reference, '--driving',
                                 driving, '--out', mp4s[0], '--side-by-side-out', mp4s[1], '--grid', mp4s[2],
                                 '--batch', str(batch)]))
    run_stages_side_by_side(stages, log, workdir)
  except (StageFailed, errors.HeadGANError) as e:
    print(f'error: {e}', file=sys.stderr)
    _write_log(workdir, log, start, failed=str(e))
    lock.release()
    return 2
  _write_log(workdir, log, start)
  lock.release()
  print(f'\nmain job done in {time.perf_counter() - start:.0f} s (checkpoint step {step}). Outputs:')
  where = {'checkpoints': os.path.join(workdir, workdir_lib.CHECKPOINT_DIR, str(step)),
           'TensorBoard logs': os.path.join(workdir, workdir_lib.TENSORBOARD_DIR),
           'evaluation': eval_json,
           'reenacted video': mp4s[0], 'side-by-side video (driving | x_t | generated)': mp4s[1],
           'image grid (reference | driving | x_t | generated)': mp4s[2],
           'demo dataset': os.path.dirname(built), 'stage times': os.path.join(workdir, 'main_job.json')}
  for k, v in where.items():
    print(f'  {k:50s} {v}')
  return 0


def _total_steps(config) -> int:
  """The run's step count (0 when it depends on the dataset's size: then train.py decides and is always run)."""
  from headgan_jax.train import loop
  try:
    return loop.total_steps(config)
  except errors.ConfigError:
    return 0


def _write_log(workdir: str, log: list[dict], start: float, failed: str | None = None) -> None:
  from headgan_jax.files import write_atomic  # pylint: disable=import-outside-toplevel
  data = dict(stages=log, seconds=round(time.perf_counter() - start, 1), failed=failed)
  write_atomic(os.path.join(workdir, 'main_job.json'), json.dumps(data, indent=2).encode())


if __name__ == '__main__':  # The command moved (headgan_jax/commands/main_job.py); this spelling still runs it.
  import runpy
  runpy.run_module('headgan_jax.commands.main_job', run_name='__main__', alter_sys=True)
