"""Evaluators from config.evals: streaming equals one-shot, networks without weights are skipped with the reason,
the self / cross protocols on real fixture frames, the Table 1 printer and the atomic eval.json writer."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import paper
from headgan_jax.errors import ConfigError, MetricInputError
from headgan_jax.face3d import camera as cam_lib, mouth
from headgan_jax.metrics import evaluators, fid, fvd, image as image_lib, protocols, report
from video_frames import read_frames

_PROJ = np.random.default_rng(0).normal(size=(3 * 4 * 4, 6)).astype(np.float32)


def _cheap_features(x):
  """A deterministic stand-in network for the streaming logic: 4x4 average-pooled pixels, projected to 6-d."""
  x = jnp.asarray(x, jnp.float32)
  if x.ndim == 5:  # Clips: average over time first.
    x = x.mean(1)
  pooled = jax.image.resize(x, (x.shape[0], 4, 4, 3), 'linear')
  return np.asarray(pooled.reshape(x.shape[0], -1) @ _PROJ)


def test_frechet_evaluators_stream_to_the_one_shot_value():
  rng = np.random.default_rng(0)
  gen = rng.uniform(-1, 1, size=(6, 32, 8, 8, 3)).astype(np.float32)
  real = np.clip(gen + 0.3 * rng.normal(size=gen.shape), -1, 1).astype(np.float32)
  f = evaluators.get('fid')('fid', _cheap_features, 6, 'cheap', batch_size=5)
  v = evaluators.get('fvd')('fvd', _cheap_features, 6, 'cheap', batch_size=3, clip_length=16)
  for i in range(0, 6, 2):  # Three batches of 2 clips.
    batch = protocols.self_reenactment_batch(real[i:i + 2], gen[i:i + 2])
    f.update(batch)
    v.update(batch)
  want_fid = fid.fid_from_features(_cheap_features(gen.reshape(-1, 8, 8, 3)), _cheap_features(real.reshape(-1, 8, 8,
                                                                                                           3)))
  res = f.result()
  assert res['fid'] == pytest.approx(want_fid, rel=1e-6) and res['fid_generated'] == 6 * 32
  want_fvd = fvd.fvd_from_features(_cheap_features(fvd.split_clips(gen)), _cheap_features(fvd.split_clips(real)))
  assert v.result()['fvd'] == pytest.approx(want_fvd, rel=1e-6) and v.result()['fvd_generated'] == 12


def test_frechet_evaluator_with_one_sample_skips_without_running_its_network():
  calls = []

  def features(x):
    calls.append(len(x))
    return _cheap_features(x)

  v = evaluators.get('fvd')('fvd', features, 6, 'cheap', batch_size=4, clip_length=16)
  clip = np.random.default_rng(1).uniform(-1, 1, size=(1, 16, 8, 8, 3)).astype(np.float32)
  v.update(protocols.self_reenactment_batch(clip, clip))  # One FVD clip: no covariance on either side.
  assert v.result() == {} and v.skipped == 'needs at least 2 samples on each side, got 1'
  assert calls == []  # The network never ran for a distance that cannot exist.
  v.update(protocols.self_reenactment_batch(clip, clip))  # A second clip: now it is measured.
  assert set(v.result()) == {'fvd', 'fvd_generated', 'fvd_real'} and v.skipped is None and calls


def test_from_config_skips_networks_without_weights_with_the_reason():
  cfg = paper.get_config().evals
  with pytest.warns(UserWarning, match='InceptionV3'):
    evs = evaluators.from_config(cfg, ['fid', 'image', 'aed'])
  assert isinstance(evs['fid'], evaluators.Skipped) and 'inception_weights' in evs['fid'].skipped
  cfg.csim.embedder = 'arcface'
  with pytest.warns(UserWarning, match='ArcFace'):
    evs = evaluators.from_config(cfg, ['csim'])
  res = evaluators.results(evs)
  assert res['csim']['values'] == {} and 'arcface_model' in res['csim']['skipped']
  cfg.image.type = 'nope'
  with pytest.raises(ConfigError, match='known types'):
    evaluators.from_config(cfg, ['image'])
  with pytest.raises(ConfigError, match='no entry'):
    evaluators.from_config(cfg, ['lpips'])


def test_due():
  ev = evaluators.get('image')('image', every=100)
  assert [evaluators.due(ev, s) for s in (0, 50, 100, 200)] == [False, False, True, True]
  assert not evaluators.due(evaluators.get('image')('image'), 100)


def _cams(b, t, yaw_deg):
  yaw = jnp.full((b, t), np.deg2rad(yaw_deg))
  rot = cam_lib.euler_to_matrix(yaw, jnp.zeros((b, t)), jnp.zeros((b, t)))
  return cam_lib.make_camera(rot, jnp.full((b, t, 2), 32.0), jnp.ones((b, t)))


@pytest.fixture(scope='module')
def clips(fixtures_dir):
  """Two real 4-frame clips (2 identities) at 96x96."""
  return np.stack([read_frames(fixtures_dir / 'driving.mp4', 4, 96, step=10),
                   read_frames(fixtures_dir / 'demo' / 'talk-03.mp4', 4, 96, step=10)])


def test_self_and_cross_protocols_table_and_eval_json(clips, tmp_path):
  cfg = paper.get_config().evals
  rng = np.random.default_rng(0)
  b, t = clips.shape[:2]
  noisy = np.clip(clips.astype(np.float32) + rng.normal(0, 8, clips.shape), 0, 255).astype(np.uint8)
  exp_drv = rng.normal(size=(b, t, 24)).astype(np.float32)
  mask = np.zeros(clips.shape[:4], bool)
  mask[:, :, 20:80, 20:76] = True
  mouth_mask = mouth.box_mask(jnp.full((b, t, 2), 50), 24, 96, 96)
  self_batch = protocols.self_reenactment_batch(clips, noisy, face_mask=mask, mouth_mask=mouth_mask,
                                                exp_generated=exp_drv + 0.1, exp_driving=exp_drv,
                                                camera_generated=_cams(b, t, 3.0), camera_driving=_cams(b, t, 0.0))
  pairs = protocols.cross_pairs(['a', 'b'])
  ref_idx = [r for r, _ in pairs]
  cross_batch = protocols.cross_reenactment_batch(clips[ref_idx, 0], clips, noisy, exp_generated=exp_drv,
                                                  exp_driving=exp_drv)
  names = ['csim', 'image', 'aed', 'fid']
  with pytest.warns(UserWarning, match='InceptionV3'):
    results = {p: protocols.run(evaluators.from_config(cfg, names), [bt])
               for p, bt in (('self', self_batch), ('cross', cross_batch))}
  s, c = results['self'], results['cross']
  assert 0.9 < s['csim']['values']['csim'] <= 1.0 and s['csim']['values']['csim_pairs'] == b * t
  assert 'dlib' in s['csim']['network']
  # Cross: generated frames of person X against a reference of person Y score lower than against themselves.
  assert c['csim']['values']['csim'] < s['csim']['values']['csim']
  assert s['image']['values']['psnr'] > 20 and s['image']['values']['ssim_face'] < 1
  assert c['image']['values'] == {} and 'target' in c['image']['skipped']
  assert s['aed']['values']['aed'] == pytest.approx(2.4, rel=1e-4)  # 24 coefficients off by 0.1 each.
  assert s['aed']['values']['apd_geodesic_deg'] == pytest.approx(3.0, abs=1e-2)
  assert c['aed']['values']['aed'] == 0.0
  assert 'inception_weights' in s['fid']['skipped']

  table = report.format_table1(results)
  assert 'HeadGAN (paper, VoxCeleb)' in table and '0.716' in table and '50.9' in table
  assert f"{s['csim']['values']['csim']:.3f}" in table and 'self/fid: skipped' in table
  assert 'L1 mouth' in table and f"{s['image']['values']['l1_mouth']:.4f}" in table
  assert table.splitlines()[3].split()[3] == 'skipped'  # The FID cell of our self-reenactment row.
  out = report.write_eval_json(tmp_path / 'eval' / 'eval.json', results, {'checkpoint': 7})
  doc = json.loads(open(out).read())
  assert doc['protocols']['self']['csim']['values']['csim'] == pytest.approx(s['csim']['values']['csim'])
  assert doc['meta'] == {'checkpoint': 7} and doc['paper_table1']['HeadGAN']['fvd'] == 334
  assert os.listdir(tmp_path / 'eval') == ['eval.json']  # No temp file left behind.


def test_cross_pairs_and_batch_checks():
  ids = ['a', 'a', 'b', 'c', 'c']
  pairs = protocols.cross_pairs(ids, seed=3)
  assert [d for _, d in pairs] == list(range(5))
  assert all(ids[r] != ids[d] for r, d in pairs)
  assert pairs == protocols.cross_pairs(ids, seed=3)
  with pytest.raises(MetricInputError, match='at least 2 identities'):
    protocols.cross_pairs(['a', 'a'])
  video = np.zeros((2, 3, 16, 16, 3), np.uint8)
  with pytest.raises(MetricInputError, match="'face_mask'"):
    protocols.self_reenactment_batch(video, video, face_mask=np.zeros((2, 4, 16, 16)))
  with pytest.raises(MetricInputError, match=r"batch\['mouth_mask'\] has leading shape \(3, 2\)"):
    protocols.self_reenactment_batch(video, video, mouth_mask=np.zeros((3, 2, 16, 16)))
  with pytest.raises(MetricInputError, match='generated frames'):
    protocols.self_reenactment_batch(video, video[0])


def test_image_evaluator_mouth_metrics_look_only_inside_the_mouth_box():
  rng = np.random.default_rng(0)
  target = rng.uniform(-1, 1, size=(2, 3, 32, 32, 3)).astype(np.float32)
  corners = np.array([[[10, 8], [12, 9], [14, 14]], [[10, 8], [0, 0], [16, 16]]], np.int32)  # (B, T, 2)
  box = np.asarray(mouth.box_mask(jnp.asarray(corners), 16, 32, 32))  # (B, T, 32, 32), a 64 px frame's side
  face = np.zeros(box.shape, bool)
  face[..., 4:28, 4:28] = True
  noise = 0.3 * rng.normal(size=target.shape).astype(np.float32)
  ev = evaluators.get('image')('image')

  def measure(generated, **masks):
    ev.reset()
    ev.update(protocols.self_reenactment_batch(target, np.clip(generated, -1, 1), **masks))
    return ev.result()

  outside = measure(target + np.where(box[..., None], 0, noise), face_mask=face, mouth_mask=box)
  assert outside['l1_mouth'] == 0 and outside['l1'] > 0 and outside['l1_face'] > 0
  assert 'psnr_mouth' not in outside  # Identical boxes: PSNR inf in every frame, which drops out.
  inside = measure(target + np.where(box[..., None], noise, 0), face_mask=face, mouth_mask=box)
  assert inside['l1_mouth'] > inside['l1_face'] > inside['l1'] > 0 and inside['ssim_mouth'] < inside['ssim']
  assert np.isfinite(inside['psnr_mouth']) and inside['image_frames'] == 6
  # Without a mouth mask: no mouth keys, and every other value exactly as with one (eval.json's numbers stay put).
  without = measure(target + np.where(box[..., None], noise, 0), face_mask=face)
  assert set(inside) - set(without) == {'l1_mouth', 'psnr_mouth', 'ssim_mouth'}
  assert all(without[k] == inside[k] for k in without)
  with pytest.raises(MetricInputError, match=r'the mouth mask must be \(N, H, W\)'):
    image_lib.image_metrics(target[0], target[0], mouth_mask=box[0, :, :16])
