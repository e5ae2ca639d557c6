"""evaluate.py end to end on a tiny checkpoint trained for 2 steps on the demo source (the 64 px demo build of
test_datasets.py, read at 16 px), the in-loop evaluation through the same evaluator interface, and bad input."""
import contextlib
import io
import json
import math

import jax
import ml_collections
import numpy as np
import pytest

import train_configs
from headgan_jax.metrics import evaluate
from headgan_jax.train import loop, metric_writer
from test_datasets import demo_build  # noqa: F401  (the session-scoped demo build, shared with its tests)

STEPS = 2


def demo_train_config(data_config) -> ml_collections.ConfigDict:
  """The loop tests' 16 px model (its compiled step is shared through the compilation cache) on the demo build."""
  c = train_configs.loop_test_config()
  c.data.source = 'headgan_demo'
  for field in ('data_dir', 'demo_dir', 'demo_test_identity', 'test_fraction', 'min_sequence_length'):
    c.data[field] = data_config.data[field]
  c.data.stored_size = 64
  c.train.sequence_length = data_config.train.sequence_length
  c.track.fit_bucket = 16  # Tracking of 4-8 frame clips: pad the fit to 16 frames, not 64.
  c.train.num_steps = STEPS
  c.train.checkpoint_every = STEPS
  c.train.image_every = 0
  # In the loop: the image metrics on one held-out batch at every step. evaluate.py: all entries.
  c.evals.image.every = 1
  c.evals.image.num_batches = 1
  c.evals.csim.min_size = 128
  c.evals.fvd.size = 64
  c.evals.fvd.clip_length = 4
  c.evals.fvd.batch_size = 2
  return c


def run_evaluate(argv):
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = evaluate.main(argv)
  return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope='session')
def evaluated(demo_build, tmp_path_factory):  # noqa: F811
  config = demo_train_config(demo_build[0])
  workdir = tmp_path_factory.mktemp('eval-run')
  trainer = loop.Trainer.create(config, devices=jax.devices()[:config.train.batch_size])
  trainer.run(workdir, progress=False)
  code, stdout, stderr = run_evaluate(['--config', str(workdir / 'config.json'), '--workdir', str(workdir), '--out',
                                       str(workdir / 'eval.json'), '--max_clips', '3', '--max_frames', '6',
                                       '--track_size', '128', '--no_progress'])
  assert code == 0, stderr
  return workdir, stdout


def test_in_loop_evaluation_writes_the_unified_evaluators_scalars(evaluated):
  workdir, _ = evaluated
  scalars = metric_writer.read_events(workdir / 'tensorboard')['scalars']
  for key in ('l1', 'psnr', 'ssim', 'l1_face', 'image_frames'):
    values = dict(scalars[f'eval/image/{key}'])
    assert set(values) == set(range(1, STEPS + 1)), key
    assert all(np.isfinite(v) for v in values.values()), key
  assert dict(scalars['eval/image/image_frames'])[1] == 4  # One held-out batch of 4 frames.
  assert 0 < dict(scalars['eval/image/l1'])[STEPS] < 1 and 0 < dict(scalars['eval/image/ssim'])[STEPS] <= 1
  assert not any(k.startswith(('eval/csim', 'eval/fvd', 'eval/aed')) for k in scalars)  # every = 0: not in the loop.


def test_evaluate_writes_eval_json_and_the_table(evaluated):
  workdir, stdout = evaluated
  doc = json.loads((workdir / 'eval.json').read_text())
  assert doc['meta']['checkpoint_step'] == STEPS and set(doc['protocols']) == {'self', 'cross'}
  assert doc['meta']['counts']['self']['clips'] == 3 and 0 < doc['meta']['counts']['self']['frames'] <= 18
  assert len(doc['meta']['identities']) == 2 and '128 px' in doc['meta']['tracking']
  for protocol, per_eval in doc['protocols'].items():
    assert set(per_eval) == {'csim', 'fid', 'fvd', 'image', 'aed'}, protocol
    for name, res in per_eval.items():
      assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in res['values'].values()), (protocol, name)
      assert bool(res['values']) != bool(res['skipped']), (protocol, name, res)  # Numbers, or a reason: never a gap.
  self_, cross = doc['protocols']['self'], doc['protocols']['cross']
  assert 'pytorch-fid' in self_['fid']['skipped'] and 'inception_weights' in self_['fid']['skipped']
  img = self_['image']['values']
  assert img['image_frames'] == doc['meta']['counts']['self']['frames']
  assert 0 < img['l1'] < 1 and img['psnr'] > 0 and 0 < img['ssim'] <= 1
  assert 'needs target' in cross['image']['skipped']  # No ground truth under cross-identity reenactment.
  fvd = self_['fvd']['values']
  assert fvd['fvd'] >= 0 and fvd['fvd_generated'] == fvd['fvd_real'] >= 2
  assert self_['fvd']['network'].startswith('I3D Kinetics-400')
  # CSIM and AED measured something or say why (faces in 16 px frames of a 2-step generator are rarely found).
  assert 'dlib' in self_['csim']['network']
  for line in ('HeadGAN (paper, VoxCeleb)', f'ours, step {STEPS} (self-reenactment)', 'Skipped:', 'self/fid: skipped',
               'Networks:'):
    assert line in stdout, line


def test_bad_input_exits_2_with_a_message(evaluated, tmp_path):
  workdir, _ = evaluated
  code, out, err = run_evaluate(['--workdir', str(tmp_path / 'nothing')])
  assert code == 2 and 'does not exist' in err and 'Traceback' not in err + out
  code, _, err = run_evaluate(['--workdir', str(workdir), '--checkpoint', '7', '--out', str(tmp_path / 'e.json')])
  assert code == 2 and f'--checkpoint 7: {workdir / "checkpoints"} has checkpoints at steps [{STEPS}]' in err
  other = json.loads((workdir / 'config.json').read_text())
  other['model']['ngf'] = 16
  (tmp_path / 'other.json').write_text(json.dumps(other))
  code, _, err = run_evaluate(['--config', str(tmp_path / 'other.json'), '--workdir', str(workdir)])
  assert code == 2 and 'does not match the run' in err and 'model.ngf: 8 -> 16' in err
  assert not (tmp_path / 'e.json').exists()
