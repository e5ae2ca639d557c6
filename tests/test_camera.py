"""Camera: 6-D rotations, axis-angle round trips and the pixel convention of `project`."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from headgan_jax.face3d import camera


def random_rotations(n, seed=0):
  rng = np.random.default_rng(seed)
  axes = rng.normal(size=(n, 3))
  axes /= np.linalg.norm(axes, axis=1, keepdims=True)
  angles = rng.uniform(0.0, np.pi * 0.999, size=(n, 1))
  return jnp.asarray(axes * angles, jnp.float32)


def test_6d_round_trip_and_orthonormality():
  rot = camera.axis_angle_to_matrix(random_rotations(64))
  np.testing.assert_allclose(np.asarray(jnp.swapaxes(rot, -1, -2) @ rot), np.broadcast_to(np.eye(3), (64, 3, 3)),
                             atol=1e-5)
  np.testing.assert_allclose(np.linalg.det(np.asarray(rot)), 1.0, atol=1e-5)
  back = camera.rotation_6d_to_matrix(camera.matrix_to_rotation_6d(rot))
  np.testing.assert_allclose(np.asarray(back), np.asarray(rot), atol=1e-6)


def test_6d_gram_schmidt_of_unnormalised_input():
  rot = camera.axis_angle_to_matrix(random_rotations(8, seed=1))
  r6 = camera.matrix_to_rotation_6d(rot)
  # Scaling each column and leaking column 1 into column 2 must not change the rotation.
  noisy = jnp.concatenate([3.0 * r6[:, :3], 0.5 * r6[:, 3:] + 0.7 * r6[:, :3]], axis=-1)
  np.testing.assert_allclose(np.asarray(camera.rotation_6d_to_matrix(noisy)), np.asarray(rot), atol=1e-5)


def test_axis_angle_round_trip_including_small_and_large_angles():
  aa = jnp.concatenate([random_rotations(32, seed=2), jnp.array([[0.0, 0.0, 0.0], [1e-5, 0.0, 0.0],
                                                                   [0.0, 3.1, 0.0]])])
  back = camera.matrix_to_axis_angle(camera.axis_angle_to_matrix(aa))
  np.testing.assert_allclose(np.asarray(back), np.asarray(aa), atol=2e-5)


def test_rodrigues_matches_scipy():
  from scipy.spatial.transform import Rotation
  aa = np.asarray(random_rotations(16, seed=3))
  np.testing.assert_allclose(np.asarray(camera.axis_angle_to_matrix(jnp.asarray(aa))),
                             Rotation.from_rotvec(aa).as_matrix(), atol=1e-5)


def test_rotation_angle_between():
  r1 = camera.euler_to_matrix(0.3, -0.2, 0.1)
  r2 = r1 @ camera.axis_angle_to_matrix(jnp.array([0.0, 0.0, np.deg2rad(2.0)]))
  np.testing.assert_allclose(float(np.rad2deg(camera.rotation_angle_between(r1, r2))), 2.0, atol=1e-3)


def test_gradients_finite_at_identity():
  g = jax.grad(lambda a: jnp.sum(camera.axis_angle_to_matrix(a) ** 2 * jnp.arange(9.0).reshape(3, 3)))(
      jnp.zeros(3))
  assert np.all(np.isfinite(np.asarray(g)))


def test_project_convention_x_right_y_down_z_towards_camera():
  cam = camera.make_camera(jnp.eye(3), jnp.array([128.0, 100.0]), 2.0)
  pts = jnp.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]])
  p = np.asarray(camera.project(pts, cam))
  np.testing.assert_allclose(p[0], [128.0, 100.0, 0.0])
  assert p[1, 0] > p[0, 0] and p[1, 1] == p[0, 1]  # +x model -> right in the image.
  assert p[2, 1] < p[0, 1] and p[2, 0] == p[0, 0]  # +y model -> up in the image (smaller row).
  assert p[3, 2] > p[0, 2]  # +z model (towards the viewer) -> larger depth.
  np.testing.assert_allclose(p[1], [148.0, 100.0, 0.0])


def test_project_yaw_turns_nose_the_right_way():
  # A positive yaw (about model +y) turns the +z (nose) direction towards +x: it moves right in the image.
  cam = camera.make_camera(camera.euler_to_matrix(jnp.deg2rad(30.0), 0.0, 0.0), jnp.zeros(2), 1.0)
  nose = np.asarray(camera.project(jnp.array([[0.0, 0.0, 10.0]]), cam))[0]
  np.testing.assert_allclose(nose, [5.0, 0.0, 10.0 * np.cos(np.deg2rad(30.0))], atol=1e-5)


def test_project_batched_matches_per_frame():
  rot = camera.axis_angle_to_matrix(random_rotations(4, seed=4))
  cams = camera.make_camera(rot, jnp.arange(8.0).reshape(4, 2), jnp.array([1.0, 2.0, 0.5, 1.5]))
  pts = jnp.asarray(np.random.default_rng(5).normal(size=(4, 7, 3)), jnp.float32)
  batched = np.asarray(jax.jit(camera.project)(pts, cams))
  for b in range(4):
    cam_b = jax.tree_util.tree_map(lambda a: a[b], cams)
    r = np.asarray(camera.rotation_matrix(cam_b))
    expected = float(cams.scale[b]) * (np.asarray(pts[b]) @ r.T) * np.array([1, -1, 1])
    expected[:, :2] += np.asarray(cams.translation[b])
    np.testing.assert_allclose(batched[b], expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('yaw', [-0.5, 0.0, 0.7])
def test_projection_preserves_handedness(yaw):
  # Orthographic + y flip: the image-plane orientation of a front-facing CCW triangle flips (seen from the camera).
  cam = camera.make_camera(camera.euler_to_matrix(yaw, 0.1, 0.2), jnp.zeros(2), 1.0)
  tri = jnp.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  p = np.asarray(camera.project(tri, cam))
  e1, e2 = p[1] - p[0], p[2] - p[0]
  assert e1[0] * e2[1] - e1[1] * e2[0] < 0
