"""The README's first command: its main job (headgan_jax.main_job) on a fresh work folder, shortened (the demo set
built from cuts of two of the clips: 3 s of driving.mp4 to train on, 0.7 s of talk-05 held out; 1 train step; 16
evaluated frames per clip; the talk-05 cut as the driving video), then run again: every stage is skipped.
`bash scripts/setup.sh` itself is what set up this environment. (3 s of driving.mp4, not the 0.7 s cuts of the
session's demo build: FVD needs clips of 16 frames, and the held-out 20% of a 0.7 s clip is 4; talk-05 is held out
whole, and its 21 frames are enough. Every frame of the cuts is tracked by the build and the reenactment.)"""
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

import conftest
import reenact_helpers as rh
import dataset_helpers

REPO = pathlib.Path(__file__).resolve().parents[1]


def first_command() -> list[str]:
  """The main-job part of the README's first command (after `bash scripts/setup.sh &&`)."""
  text = (REPO / 'README.md').read_text()
  block = re.search(r'```bash\n(.*?)\n', text, re.S).group(1)
  setup, _, job = block.partition('&&')
  assert 'scripts/setup.sh' in setup and 'headgan_jax.main_job' in job, block
  return shlex.split(job)


@pytest.mark.slow
def test_readme_first_command_main_job(fixtures_dir, tmp_path):
  clips = tmp_path / 'clips'
  dataset_helpers.cut_clip(fixtures_dir / 'driving.mp4', clips / 'driving.mp4', 3.0)
  driving = dataset_helpers.cut_clip(fixtures_dir / 'demo' / 'talk-05.mp4', clips / 'demo' / 'talk-05.mp4', 0.7)
  cmd = first_command()
  assert cmd[0] == '.venv/bin/python' and '--workdir' in cmd
  work = tmp_path / 'demo'
  i = cmd.index('--workdir')
  cmd[i + 1] = str(work)
  cmd[0] = sys.executable
  cmd += ['--steps', '1', '--clips_dir', str(clips), '--eval_max_frames', '16', '--driving', str(driving)]
  # One CPU device, as on a user's machine (not the tests' 8), compiled with the tests' fast XLA:CPU flags: the
  # outputs asserted here do not depend on how hard LLVM optimises, and XLA's default flags are what costs most
  # here (test_train_loop's two-process train.py still compiles with them).
  env = dict(os.environ, XLA_FLAGS=conftest.FAST_COMPILE_XLA_FLAGS)
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800, env=env)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  out = proc.stdout
  for name in ('eval.json', 'reenacted.mp4', 'reenacted_side_by_side.mp4', 'grid.png'):
    assert str(work / name) in out  # It says where each output is.
  assert '== build: done' in out
  ev = json.loads((work / 'eval.json').read_text())
  assert ev  # evaluate.py's own tests check its contents.
  src = rh.probe(driving)
  p = rh.probe(work / 'reenacted.mp4')
  assert (p['frames'], p['fps'], p['height'], p['width']) == (src['frames'], src['fps'], 64, 64)
  assert abs(p['audio_seconds'] - p['frames'] / p['fps']) <= 1 / p['fps']
  q = rh.probe(work / 'reenacted_side_by_side.mp4')
  assert (q['frames'], q['width']) == (src['frames'], 3 * 64)
  from headgan_jax.tracking import video as video_lib
  assert video_lib.read_image(work / 'grid.png').shape == (4 * 64, 4 * 64, 3)
  stages = json.loads((work / 'main_job.json').read_text())['stages']
  assert [s['stage'] for s in stages][:2] == ['build', 'train']  # Then evaluate and reenact side by side.
  assert sorted(s['stage'] for s in stages[2:]) == ['evaluate', 'reenact']
  again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)  # Resumes: nothing to do.
  assert again.returncode == 0, again.stderr[-3000:]
  for stage in ('build', 'train', 'evaluate', 'reenact'):
    assert f'== {stage}: skipped' in again.stdout
