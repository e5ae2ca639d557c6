"""The README's first command: its main job (headgan_jax.main_job) on a fresh work folder, shortened as
tests/main_job_run.py says (conftest.py's `main_job` fixture runs it; test_reenact.py reenacts with the model it
trained), then run again: every stage is skipped. `bash scripts/setup.sh` itself is what set up this environment."""
import json
import subprocess

import pytest

import main_job_run
import reenact_helpers as rh


@pytest.mark.slow
def test_readme_first_command_main_job(main_job):
  work, driving, cmd, env, out = main_job.workdir, main_job.driving, main_job.cmd, main_job.env, main_job.stdout
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
  # Run again, it resumes: nothing to do.
  again = subprocess.run(cmd, cwd=main_job_run.REPO, capture_output=True, text=True, timeout=600, env=env)
  assert again.returncode == 0, again.stderr[-3000:]
  for stage in ('build', 'train', 'evaluate', 'reenact'):
    assert f'== {stage}: skipped' in again.stdout
