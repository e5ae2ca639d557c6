"""Scaled orthographic camera c = (R, t, s) and rotation helpers.

Model axes are right-handed: x right, y up, z out of the face towards the viewer. Pixel coordinates follow the
raster convention: x to the right, y downwards, pixel (i, j) centred at (j + 0.5, i + 0.5), depth z growing
towards the camera. That pixel frame is left-handed, so `project` flips only y:

  u = s (R v)_x + t_x,    w = -s (R v)_y + t_y,    z = s (R v)_z

with R a proper rotation (det +1) acting in model space, t the pixel position of the model origin and s pixels per
model unit. A point at +x in the model lands to the right in the image, +y lands higher (smaller row), and the
point nearest the viewer has the largest z.

Rotations are stored as the 6-D parameterisation of Zhou et al. (2019): the first two columns of R, turned back
into R by Gram-Schmidt (continuous, no gimbal lock).
"""
from __future__ import annotations

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class Camera:
  """c_t: rotation (..., 6) = first two columns of R, translation (..., 2) in pixels, scale (...) pixels/unit."""
  rotation: jax.Array
  translation: jax.Array
  scale: jax.Array


def _normalise(v: jax.Array, eps: float = 1e-12) -> jax.Array:
  return v / jnp.sqrt(jnp.maximum(jnp.sum(v * v, axis=-1, keepdims=True), eps))


def rotation_6d_to_matrix(r6: jax.Array) -> jax.Array:
  """(..., 6) -> (..., 3, 3) by Gram-Schmidt on the two 3-vectors, the third column their cross product."""
  b1 = _normalise(r6[..., 0:3])
  a2 = r6[..., 3:6]
  b2 = _normalise(a2 - jnp.sum(b1 * a2, axis=-1, keepdims=True) * b1)
  b3 = jnp.cross(b1, b2)
  return jnp.stack([b1, b2, b3], axis=-1)


def matrix_to_rotation_6d(rot: jax.Array) -> jax.Array:
  """(..., 3, 3) -> (..., 6): the first two columns."""
  return jnp.concatenate([rot[..., :, 0], rot[..., :, 1]], axis=-1)


def skew(v: jax.Array) -> jax.Array:
  """(..., 3) -> (..., 3, 3) cross-product matrix [v]_x."""
  x, y, z = v[..., 0], v[..., 1], v[..., 2]
  o = jnp.zeros_like(x)
  return jnp.stack([jnp.stack([o, -z, y], -1), jnp.stack([z, o, -x], -1), jnp.stack([-y, x, o], -1)], -2)


def axis_angle_to_matrix(aa: jax.Array) -> jax.Array:
  """Rodrigues: (..., 3) axis * angle (radians) -> (..., 3, 3); exact and differentiable at angle 0."""
  theta2 = jnp.sum(aa * aa, axis=-1)[..., None, None]
  small = theta2 < 1e-8
  safe2 = jnp.where(small, 1.0, theta2)
  theta = jnp.sqrt(safe2)
  # Taylor series near 0 keeps gradients finite.
  a = jnp.where(small, 1.0 - theta2 / 6.0, jnp.sin(theta) / theta)
  b = jnp.where(small, 0.5 - theta2 / 24.0, (1.0 - jnp.cos(theta)) / safe2)
  k = skew(aa)
  eye = jnp.eye(3, dtype=aa.dtype)
  return eye + a * k + b * (k @ k)


def matrix_to_quaternion(rot: jax.Array) -> jax.Array:
  """(..., 3, 3) -> (..., 4) unit quaternion (w, x, y, z) with w >= 0 (Shepperd's method, branch-free)."""
  m = rot
  tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
  # Four candidate solutions, each stable when its leading component is largest.
  cands = jnp.stack([
      jnp.stack([1 + tr, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
      jnp.stack([m[..., 2, 1] - m[..., 1, 2], 1 + 2 * m[..., 0, 0] - tr, m[..., 0, 1] + m[..., 1, 0],
                 m[..., 0, 2] + m[..., 2, 0]], -1),
      jnp.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 + 2 * m[..., 1, 1] - tr,
                 m[..., 1, 2] + m[..., 2, 1]], -1),
      jnp.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                 1 + 2 * m[..., 2, 2] - tr], -1),
  ], axis=-2)
  lead = jnp.stack([1 + tr, 1 + 2 * m[..., 0, 0] - tr, 1 + 2 * m[..., 1, 1] - tr, 1 + 2 * m[..., 2, 2] - tr], -1)
  best = jnp.argmax(lead, axis=-1)
  q = jnp.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
  q = _normalise(q)
  return q * jnp.where(q[..., :1] < 0, -1.0, 1.0)


def matrix_to_axis_angle(rot: jax.Array) -> jax.Array:
  """(..., 3, 3) -> (..., 3) axis * angle with angle in [0, pi]."""
  q = matrix_to_quaternion(rot)
  v = q[..., 1:]
  n = jnp.sqrt(jnp.sum(v * v, axis=-1, keepdims=True))
  angle = 2.0 * jnp.arctan2(n, q[..., :1])
  small = n < 1e-7
  factor = jnp.where(small, 2.0 / jnp.maximum(q[..., :1], 1e-12), angle / jnp.where(small, 1.0, n))
  return v * factor


def euler_to_matrix(yaw: jax.Array, pitch: jax.Array, roll: jax.Array) -> jax.Array:
  """R = R_z(roll) R_x(pitch) R_y(yaw) in radians: yaw turns about the model's up axis, pitch nods, roll tilts."""
  yaw, pitch, roll = jnp.asarray(yaw), jnp.asarray(pitch), jnp.asarray(roll)
  ax = lambda a, axis: axis_angle_to_matrix(a[..., None] * jnp.eye(3, dtype=jnp.float32)[axis])
  return ax(roll, 2) @ ax(pitch, 0) @ ax(yaw, 1)


def rotation_matrix(cam: Camera) -> jax.Array:
  """(..., 3, 3) rotation of the camera."""
  return rotation_6d_to_matrix(cam.rotation)


def make_camera(rot: jax.Array, translation: jax.Array, scale: jax.Array) -> Camera:
  """Camera from a rotation matrix (..., 3, 3), translation (..., 2) pixels and scale (...)."""
  return Camera(rotation=matrix_to_rotation_6d(jnp.asarray(rot, jnp.float32)),
                translation=jnp.asarray(translation, jnp.float32), scale=jnp.asarray(scale, jnp.float32))


def project(vertices: jax.Array, cam: Camera) -> jax.Array:
  """Scaled orthographic projection of (..., N, 3) model points into pixels (..., N, 3): (x right, y down, z to cam).

  The camera's batch shape (...) must broadcast against the vertices' leading shape.
  """
  rot = rotation_matrix(cam)
  v = jnp.einsum('...ij,...nj->...ni', rot, vertices)
  s = jnp.asarray(cam.scale)[..., None, None]
  flip = jnp.array([1.0, -1.0, 1.0], vertices.dtype)
  t = jnp.concatenate([cam.translation, jnp.zeros_like(cam.translation[..., :1])], axis=-1)[..., None, :]
  return s * v * flip + t


def rotation_angle_between(r1: jax.Array, r2: jax.Array) -> jax.Array:
  """Geodesic angle (radians) between rotation matrices (..., 3, 3)."""
  # Via the quaternion rather than arccos of the trace: accurate for small angles in float32.
  aa = matrix_to_axis_angle(jnp.swapaxes(r1, -1, -2) @ r2)
  return jnp.sqrt(jnp.sum(aa * aa, axis=-1))
