"""evaluate.py end to end on a tiny checkpoint trained for 2 steps on the demo source (the 64 px demo build of
test_datasets.py, read at 16 px), the in-loop evaluation through the same evaluator interface, and bad input.

Training and evaluating dominate the cost, so they run once, in ONE test function (pytest-xdist would otherwise do
them in two workers), and each behaviour is checked by its own check_* function."""
import contextlib
import io
import json
import math

import jax
import ml_collections
import numpy as np
import pytest

import train_configs
from headgan_jax.commands import evaluate as evaluate_command
from headgan_jax.train import loop, metric_writer

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
  c.evals.fvd.size = 32
  c.evals.fvd.clip_length = 4
  c.evals.fvd.batch_size = 2
  return c


def run_evaluate(argv):
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = evaluate_command.main(argv)
  return code, out.getvalue(), err.getvalue()


def train_and_evaluate(data_config, workdir):
  config = demo_train_config(data_config)
  trainer = loop.Trainer.create(config, devices=jax.devices()[:config.train.batch_size],
                                init_key=train_configs.init_key(config))
  trainer.run(workdir, progress=False)
  code, stdout, stderr = run_evaluate(['--config', str(workdir / 'config.json'), '--workdir', str(workdir), '--out',
                                       str(workdir / 'eval.json'), '--max_clips', '3', '--max_frames', '6',
                                       '--track_size', '128', '--no_progress'])
  assert code == 0, stderr
  return workdir, stdout


@pytest.mark.slow
def test_train_with_in_loop_evals_then_evaluate(demo_build, tmp_path):
  evaluated = train_and_evaluate(demo_build[0], tmp_path / 'run')
  check_in_loop_evaluation_writes_the_unified_evaluators_scalars(evaluated)
  check_evaluate_writes_eval_json_and_the_table(evaluated)
  check_bad_input_exits_2_with_a_message(evaluated, tmp_path)


def check_in_loop_evaluation_writes_the_unified_evaluators_scalars(evaluated):
  workdir, _ = evaluated
  scalars = metric_writer.read_events(workdir / 'tensorboard')['scalars']
  for key in ('l1', 'psnr', 'ssim', 'l1_face', 'l1_mouth', 'image_frames'):
    values = dict(scalars[f'eval/image/{key}'])
    assert set(values) == set(range(1, STEPS + 1)), key
    assert all(np.isfinite(v) for v in values.values()), key
  assert dict(scalars['eval/image/image_frames'])[1] == 4  # One held-out batch of 4 frames.
  assert 0 < dict(scalars['eval/image/l1'])[STEPS] < 1 and 0 < dict(scalars['eval/image/ssim'])[STEPS] <= 1
  assert not any(k.startswith(('eval/csim', 'eval/fvd', 'eval/aed')) for k in scalars)  # every = 0: not in the loop.


def check_evaluate_writes_eval_json_and_the_table(evaluated):
  workdir, stdout = evaluated
  doc = json.loads((workdir / 'eval.json').read_text())
  assert doc['meta']['checkpoint_step'] == STEPS and set(doc['protocols']) == {'self', 'cross'}
  # The build's test split: one record of each test identity (driving's last frames, talk-05's clip), <= 6 frames.
  assert doc['meta']['counts']['self']['clips'] == 2 and 0 < doc['meta']['counts']['self']['frames'] <= 12
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
  assert 0 < img['l1'] < 1 and img['psnr'] > 0 and 0 < img['ssim'] <= 1 and 0 < img['l1_mouth'] < 1
  assert 'needs target' in cross['image']['skipped']  # No ground truth under cross-identity reenactment.
  fvd = self_['fvd']['values']
  assert fvd['fvd'] >= 0 and fvd['fvd_generated'] == fvd['fvd_real'] >= 2
  assert self_['fvd']['network'].startswith('I3D Kinetics-400')
  # CSIM and AED measured something or say why (faces in 16 px frames of a 2-step generator are rarely found).
  assert 'dlib' in self_['csim']['network']
  for line in ('HeadGAN (paper, VoxCeleb)', f'ours (full), step {STEPS} (self-reenactment)', 'Skipped:', 'self/fid: skipped',
               'Networks:'):
    assert line in stdout, line


def check_bad_input_exits_2_with_a_message(evaluated, tmp_path):
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
  code, _, err = run_evaluate(['--workdir', str(workdir), '--max_frames', '-1'])
  assert code == 2 and '--max_frames = -1 must be >= 0' in err
  assert not (tmp_path / 'e.json').exists()


def test_aed_counts_only_frames_fitted_on_both_sides_and_reset_forgets():
  from headgan_jax.errors import ConfigError
  from headgan_jax.face3d import camera as cam_lib
  from headgan_jax.metrics import evaluators
  rng = np.random.default_rng(0)
  exp_d = rng.normal(size=(1, 5, 4)).astype(np.float32)
  exp_g = exp_d + np.float32([[[0.1], [0.2], [9.0], [0.3], [9.0]]])  # Frames 2 and 4: failed fits (large values).
  valid = np.array([[True, True, False, True, False]])
  eye = np.tile(np.float32([1, 0, 0, 0, 1, 0]), (1, 5, 1))
  cam = cam_lib.Camera(eye, np.zeros((1, 5, 2), np.float32), np.ones((1, 5), np.float32))
  moved = cam_lib.Camera(eye, np.full((1, 5, 2), 2.0, np.float32), np.ones((1, 5), np.float32))
  ev = evaluators.get('aed')('aed')
  batch = dict(generated=np.zeros((1, 5, 16, 16, 3), np.uint8), exp_generated=exp_g, exp_driving=exp_d,
               camera_generated=moved, camera_driving=cam, exp_valid=valid)
  ev.update(batch)
  res = ev.result()
  assert res['aed'] == pytest.approx(4 * (0.1 + 0.2 + 0.3) / 3, rel=1e-5)
  assert res['aed_frames'] == 3 and res['aed_unfit_frames'] == 2 and res['apd_translation_px'] == pytest.approx(2.0)
  ev.reset()
  ev.update({**batch, 'exp_valid': np.zeros((1, 5), bool)})
  assert ev.result() == {} and 'no frame of 5 had a valid 3DMM fit' in ev.skipped
  with pytest.raises(ConfigError, match="config.evals.x.type = 'no_such_module:Thing' cannot be loaded"):
    evaluators.from_config(ml_collections.ConfigDict({'x': {'type': 'no_such_module:Thing'}}))
