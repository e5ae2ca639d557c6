"""The 3D face image x_t (triangle-centre and interpolated modes) and the landmark image of the ablation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from headgan_jax import errors
from headgan_jax.face3d import camera, landmarks_image, morphable, raster, render

SIZE = 64


@pytest.fixture(scope='module')
def model():
  return morphable.load_default()


@pytest.fixture(scope='module')
def frames(model):
  """Two poses of the default 3DMM's mean shape projected into a 64 x 64 image."""
  extent = float(np.ptp(np.asarray(model.mean)[:, 1]))
  rot = camera.euler_to_matrix(jnp.array([0.0, 0.6]), jnp.array([0.1, -0.2]), jnp.array([0.0, 0.15]))
  cam = camera.make_camera(rot, jnp.full((2, 2), SIZE / 2 + 0.21), jnp.full((2,), 0.8 * SIZE / extent))
  return camera.project(model.mean[None], cam)  # (2, N, 3)


def test_triangle_centre_image(model, frames):
  r = raster.rasterise(frames, model.faces, SIZE, SIZE)
  x = np.asarray(render.face_image(model.mean, model.faces, r, 'triangle_centre'))
  ids = np.asarray(r.triangle_id)
  assert x.shape == (2, SIZE, SIZE, 3) and x.dtype == np.float32
  cov = ids >= 0
  assert 0.2 < cov.mean() < 0.9
  assert np.all(x[~cov] == 0)
  assert np.all(x[cov].sum(-1) >= 0.15) and np.all(x[cov] >= render.COLOUR_FLOOR) and np.all(x[cov] <= 1)
  # The L1 face mask of the losses is exactly the coverage.
  np.testing.assert_array_equal(x.sum(-1) > tiny.get_config().loss.face_mask_threshold, cov)
  # Constant per triangle, equal to the normalised centroid of its mean-shape corners.
  mean = np.asarray(model.mean, np.float64)
  faces = np.asarray(model.faces)
  lo, hi = mean.min(0), mean.max(0)
  for t in np.unique(ids[cov])[::7]:
    colours = x[ids == t]
    np.testing.assert_array_equal(colours, np.broadcast_to(colours[0], colours.shape))
    expected = 0.05 + 0.95 * (mean[faces[t]].mean(0) - lo) / (hi - lo)
    np.testing.assert_allclose(colours[0], expected, atol=1e-5)
  # Colour follows the mean shape's x axis: the face's right side (image left in the frontal frame) is darker in R.
  rows = ids[0] >= 0
  cols = np.nonzero(rows.any(0))[0]
  left = x[0][:, cols[:3]][rows[:, cols[:3]]][:, 0].mean()
  right = x[0][:, cols[-3:]][rows[:, cols[-3:]]][:, 0].mean()
  assert left < 0.3 < 0.7 < right


def test_interpolated_image(model, frames):
  r = raster.rasterise(frames, model.faces, SIZE, SIZE)
  x = np.asarray(render.face_image(model.mean, model.faces, r, 'interpolated'))
  ids = np.asarray(r.triangle_id)
  cov = ids >= 0
  assert np.all(x[~cov] == 0) and np.all(x[cov] >= render.COLOUR_FLOOR) and np.all(x[cov] <= 1)
  mean = np.asarray(model.mean, np.float64)
  faces = np.asarray(model.faces)
  colour = 0.05 + 0.95 * (mean - mean.min(0)) / np.ptp(mean, 0)
  bary = np.asarray(r.barycentric)
  expected = np.einsum('...k,...kc->...c', bary[cov], colour[faces[ids[cov]]])
  np.testing.assert_allclose(x[cov], np.clip(expected, 0.05, 1), atol=1e-5)
  # Smooth shading: neighbouring covered pixels differ by little; flat shading agrees on average.
  flat = np.asarray(render.face_image(model.mean, model.faces, r, 'triangle_centre'))
  assert np.abs(flat[cov] - x[cov]).mean() < 0.02


def test_render_face_and_bad_mode(model, frames):
  x = render.render_face(model, frames, SIZE, SIZE)  # Same shapes as above: reuses the compiled rasteriser.
  assert x.shape == (2, SIZE, SIZE, 3)
  r = raster.rasterise(frames, model.faces, SIZE, SIZE)
  np.testing.assert_array_equal(np.asarray(x), np.asarray(render.face_image(model.mean, model.faces, r)))
  with pytest.raises(errors.ConfigError, match='x_image_mode'):
    render.face_image(model.mean, model.faces, r, 'phong')


def test_landmark_image_lights_landmarks_only():
  key = jax.random.PRNGKey(0)
  points = jax.random.uniform(key, (3, 20, 2), minval=2.0, maxval=SIZE - 2.0)
  points = points.at[1, 4].set(jnp.nan).at[2, 5].set(jnp.array([-30.0, 10.0]))  # Not drawn: NaN, off screen.
  image = np.asarray(landmarks_image.draw_landmarks(points, SIZE, SIZE, radius=1))
  assert image.shape == (3, SIZE, SIZE, 3)
  p = np.asarray(points)
  colours = landmarks_image.landmark_colours(20)
  lit = image.sum(-1) > 0
  for b in range(3):
    ok = np.all(np.isfinite(p[b]), -1) & (p[b, :, 0] >= 0)
    rows, cols = np.floor(p[b, ok, 1]).astype(int), np.floor(p[b, ok, 0]).astype(int)
    assert np.all(lit[b, rows, cols])  # The pixel holding each landmark is lit ...
    assert np.all(image[b, rows, cols].sum(-1) >= 1.0)
    # ... with the colour of a landmark whose disc covers it; the pixel of the highest-index landmark at a spot is
    # exactly that landmark's colour.
    idx = np.nonzero(ok)[0]
    for i, r, c in zip(idx, rows, cols):
      near = [j for j, rr, cc in zip(idx, rows, cols) if abs(rr - r) <= 1 and abs(cc - c) <= 1]
      if max(near) == i:
        np.testing.assert_allclose(image[b, r, c], colours[i])
    # Everything farther than the disc radius from every drawn landmark is 0.
    yy, xx = np.mgrid[:SIZE, :SIZE]
    dist = np.min(np.maximum(np.abs(yy[..., None] - rows), np.abs(xx[..., None] - cols)), axis=-1)
    assert np.all(image[b][dist > 1] == 0)
    assert lit[b].sum() <= 9 * ok.sum()
  # Batched equals one at a time, and a z column is ignored.
  single = landmarks_image.draw_landmarks(jnp.concatenate([points[0], jnp.ones((20, 1))], -1), SIZE, SIZE, radius=1)
  np.testing.assert_array_equal(np.asarray(single), image[0])


def test_landmark_image_bad_input():
  with pytest.raises(errors.LandmarkError):
    landmarks_image.draw_landmarks(jnp.zeros((5,)), SIZE, SIZE)
  with pytest.raises(errors.LandmarkError, match='colours'):
    landmarks_image.draw_landmarks(jnp.zeros((5, 2)), SIZE, SIZE, colours=jnp.zeros((4, 3)))
