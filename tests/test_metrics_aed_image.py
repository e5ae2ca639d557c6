"""AED / APD on synthetic fitted coefficients, and the L1 / PSNR / SSIM image metrics (whole frame and masked)."""
import jax.numpy as jnp
import numpy as np
import pytest

from headgan_jax.errors import MetricInputError
from headgan_jax.face3d import camera as cam_lib
from headgan_jax.metrics import aed as aed_lib
from headgan_jax.metrics import image as image_lib


def test_aed_zero_for_identical_and_grows_with_expression_change():
  rng = np.random.default_rng(0)
  driving = rng.normal(size=(4, 25, 24)).astype(np.float32)  # (clips, frames, K_exp)
  assert aed_lib.aed(driving, driving) == 0.0
  direction = rng.normal(size=driving.shape).astype(np.float32)
  values = [aed_lib.aed(driving + s * direction, driving) for s in (0.05, 0.2, 0.5, 1.0)]
  assert all(a < b for a, b in zip(values, values[1:])), values
  # L1 distance per frame, averaged over frames.
  np.testing.assert_allclose(values[-1], np.mean(np.abs(direction).sum(-1)), rtol=1e-5)
  with pytest.raises(MetricInputError, match='differ in shape'):
    aed_lib.aed(driving[:, :, :10], driving)
  with pytest.raises(MetricInputError, match='NaN'):
    aed_lib.aed(np.full_like(driving, np.nan), driving)


def _cameras(yaw, pitch, roll, t):
  rot = cam_lib.euler_to_matrix(jnp.asarray(yaw), jnp.asarray(pitch), jnp.asarray(roll))
  return cam_lib.make_camera(rot, jnp.asarray(t), jnp.ones(np.shape(yaw)))


def test_euler_angles_invert_the_camera_convention():
  rng = np.random.default_rng(1)
  angles = rng.uniform(-1.2, 1.2, size=(50, 3)).astype(np.float32)
  rot = cam_lib.euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
  np.testing.assert_allclose(np.asarray(aed_lib.matrix_to_euler(rot)), angles, atol=1e-5)


def test_apd_zero_for_identical_and_measures_angle_and_translation():
  n = 10
  base = _cameras(np.zeros(n), np.zeros(n), np.zeros(n), np.full((n, 2), 128.0))
  assert aed_lib.apd(base, base) == {'apd_rotation_deg': 0.0, 'apd_geodesic_deg': 0.0, 'apd_translation_px': 0.0}
  yaw = np.deg2rad(np.full(n, 9.0))
  moved = _cameras(yaw, np.zeros(n), np.zeros(n), np.full((n, 2), 128.0) + [4.0, -2.0])
  res = aed_lib.apd(moved, base)
  assert res['apd_rotation_deg'] == pytest.approx(3.0, abs=1e-3)  # 9 degrees of yaw, averaged over 3 angles.
  assert res['apd_geodesic_deg'] == pytest.approx(9.0, abs=1e-2)
  assert res['apd_translation_px'] == pytest.approx(3.0, abs=1e-4)
  bigger = aed_lib.apd(_cameras(2 * yaw, np.zeros(n), np.zeros(n), np.full((n, 2), 128.0)), base)
  assert bigger['apd_rotation_deg'] > res['apd_rotation_deg']


def test_image_metrics_whole_and_masked():
  rng = np.random.default_rng(0)
  target = rng.uniform(-1, 1, size=(3, 32, 32, 3)).astype(np.float32)
  mask = np.zeros((3, 32, 32), bool)
  mask[:, 8:24, 8:24] = True
  same = image_lib.image_metrics(target, target, mask)
  assert np.all(same['l1'] == 0) and np.all(np.isinf(same['psnr']))
  np.testing.assert_allclose(same['ssim'], 1.0, atol=1e-5)
  np.testing.assert_allclose(same['ssim_face'], 1.0, atol=1e-5)
  # Noise only outside the face: the whole-frame scores drop, the masked ones stay perfect.
  outside = target + np.where(mask[..., None], 0.0, 0.2 * rng.normal(size=target.shape)).astype(np.float32)
  res = image_lib.image_metrics(np.clip(outside, -1, 1), target, mask)
  assert np.all(res['l1'] > 0) and np.all(res['l1_face'] == 0) and np.all(np.isinf(res['psnr_face']))
  assert np.all(res['ssim'] < 0.99)
  # PSNR from its definition on [0, 1] images.
  gen = np.clip(target + 0.1, -1, 1)
  mse = np.mean(((gen + 1) / 2 - (target + 1) / 2) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(image_lib.image_metrics(gen, target)['psnr'], 10 * np.log10(1 / mse), rtol=1e-4)
  # uint8 frames give the same numbers as their float [-1, 1] version; no mask -> NaN face metrics.
  u8 = np.round((target + 1) * 127.5).astype(np.uint8)
  r8 = image_lib.image_metrics(u8, u8)
  assert np.all(np.isnan(r8['l1_face'])) and np.all(r8['l1'] == 0)
  with pytest.raises(MetricInputError, match='differ in shape'):
    image_lib.image_metrics(target[:2], target)
  with pytest.raises(MetricInputError, match='NaN'):
    image_lib.image_metrics(np.full_like(target, np.nan), target)


def test_face_mask_matches_the_training_loss_mask():
  x = np.zeros((1, 8, 8, 3), np.float32)
  x[0, 2:5, 3:6] = 0.3
  m = np.asarray(image_lib.face_mask(x))
  assert m.shape == (1, 8, 8) and m.sum() == 9


def test_ssim_equals_dm_pix_default():
  import dm_pix
  rng = np.random.default_rng(3)
  a = rng.uniform(0, 1, size=(2, 24, 20, 3)).astype(np.float32)
  b = np.clip(a + 0.1 * rng.normal(size=a.shape), 0, 1).astype(np.float32)
  ours = image_lib.image_metrics(a * 2 - 1, b * 2 - 1)['ssim']
  np.testing.assert_allclose(ours, np.asarray(dm_pix.ssim(a, b)), atol=1e-5)
