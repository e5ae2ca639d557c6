"""AED and APD: expression and pose distances between 3DMM fits of driving and generated frames.

AED (the paper's "average expression distance", as Head2Head's scripts): for each frame the L1 distance
sum_k |p_exp,k(generated) - p_exp,k(driving)| of the fitted expression coefficients (in the 3DMM's units of
standard deviations), averaged over frames. APD (the follow-up literature's pose distance): the mean absolute
difference of the head's rotation angles (yaw, pitch, roll, in degrees, averaged over the three) and of its 2D
translation (pixels, averaged over x and y), from the fitted cameras (`face3d.camera.Camera`).

The coefficients come from the face tracker (face3d fitting on landmarks of generated and driving frames); these
functions take the fitted arrays, so any tracker can feed them. Numbers depend on the 3DMM: they are comparable
between runs that use the same model, not with the paper's (LSFM) values.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from headgan_jax.errors import MetricInputError
from headgan_jax.face3d import camera as cam_lib


def _as_2d(x, name: str) -> np.ndarray:
  a = np.asarray(x, np.float32)
  if a.ndim < 2:
    raise MetricInputError(f'{name} must be (..., K) coefficients with a frame axis, got shape {a.shape}')
  if not np.all(np.isfinite(a)):
    raise MetricInputError(f'{name} hold NaN or infinite values (a failed fit?)')
  return a.reshape(-1, a.shape[-1])


def expression_distances(exp_generated, exp_driving) -> np.ndarray:
  """(N,) per-frame L1 distances of (..., K) expression coefficients (leading axes are flattened)."""
  a, b = _as_2d(exp_generated, 'generated expression coefficients'), _as_2d(exp_driving,
                                                                             'driving expression coefficients')
  if a.shape != b.shape:
    raise MetricInputError(f'expression coefficients differ in shape: generated {a.shape}, driving {b.shape}')
  return np.asarray(jnp.sum(jnp.abs(jnp.asarray(a) - jnp.asarray(b)), axis=-1), np.float64)


def aed(exp_generated, exp_driving) -> float:
  """Average expression distance: mean over frames of the L1 distance of expression coefficients."""
  return float(np.mean(expression_distances(exp_generated, exp_driving)))


@jax.jit
def matrix_to_euler(rot: jax.Array) -> jax.Array:
  """(..., 3, 3) rotations -> (..., 3) (yaw, pitch, roll) radians, the inverse of `camera.euler_to_matrix`
  (R = R_z(roll) R_x(pitch) R_y(yaw)): pitch = asin(R21), yaw = atan2(-R20, R22), roll = atan2(-R01, R11)."""
  pitch = jnp.arcsin(jnp.clip(rot[..., 2, 1], -1.0, 1.0))
  yaw = jnp.arctan2(-rot[..., 2, 0], rot[..., 2, 2])
  roll = jnp.arctan2(-rot[..., 0, 1], rot[..., 1, 1])
  return jnp.stack([yaw, pitch, roll], axis=-1)


def _wrap(angle):
  """Angle differences into (-pi, pi]."""
  return jnp.mod(angle + jnp.pi, 2 * jnp.pi) - jnp.pi


def pose_distances(camera_generated: cam_lib.Camera, camera_driving: cam_lib.Camera) -> dict[str, np.ndarray]:
  """Per-frame (N,) |d angle| in degrees (mean of yaw, pitch, roll), geodesic angle in degrees, |d t| in pixels
  (mean of x, y) between two batches of fitted cameras (any matching leading shape, flattened)."""
  rg, rd = (np.asarray(c.rotation, np.float32) for c in (camera_generated, camera_driving))
  tg, td = (np.asarray(c.translation, np.float32) for c in (camera_generated, camera_driving))
  if rg.shape != rd.shape or tg.shape != td.shape or rg.shape[-1] != 6 or tg.shape[-1] != 2:
    raise MetricInputError(f'cameras differ or are not (..., 6) rotations / (..., 2) translations: generated '
                           f'{rg.shape} {tg.shape}, driving {rd.shape} {td.shape}')
  for name, a in (('generated camera', rg), ('driving camera', rd), ('generated translation', tg),
                  ('driving translation', td)):
    if not np.all(np.isfinite(a)):
      raise MetricInputError(f'{name} holds NaN or infinite values')
  d_angles, geodesic, d_t = _pose_core(rg.reshape(-1, 6), rd.reshape(-1, 6), tg.reshape(-1, 2), td.reshape(-1, 2))
  return {'rotation_deg': np.asarray(d_angles, np.float64), 'geodesic_deg': np.asarray(geodesic, np.float64),
          'translation_px': np.asarray(d_t, np.float64)}


@jax.jit
def _pose_core(rg, rd, tg, td):
  mg, md = cam_lib.rotation_6d_to_matrix(rg), cam_lib.rotation_6d_to_matrix(rd)
  deg = 180.0 / np.pi
  d_angles = jnp.mean(jnp.abs(_wrap(matrix_to_euler(mg) - matrix_to_euler(md))), -1) * deg
  return d_angles, cam_lib.rotation_angle_between(mg, md) * deg, jnp.mean(jnp.abs(tg - td), -1)


def apd(camera_generated: cam_lib.Camera, camera_driving: cam_lib.Camera) -> dict[str, float]:
  """Average pose distance: {'apd_rotation_deg', 'apd_geodesic_deg', 'apd_translation_px'} over frames."""
  d = pose_distances(camera_generated, camera_driving)
  return {f'apd_{k}': float(np.mean(v)) for k, v in d.items()}
