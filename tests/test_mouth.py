"""The mouth window for D_m: placement inside the image, and crops equal to slicing + resizing."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs import paper, tiny
from headgan_jax import errors
from headgan_jax.face3d import mouth


def test_box_size_follows_config():
  assert mouth.mouth_box_size(256, paper.get_config().disc.mouth_size) == 64
  assert mouth.mouth_box_size(512, 64) == 128
  c = tiny.get_config()
  assert mouth.mouth_box_size(c.image_size, c.disc.mouth_size) == 8


@pytest.mark.parametrize('centre, stat', [('mesh_median', np.median), ('mesh_mean', np.mean)])
def test_mouth_box_centred_and_inside_image(centre, stat):
  rng = np.random.default_rng(0)
  mouth_idx = np.arange(5, 25)
  verts = rng.uniform(0, 256, (6, 40, 3)).astype(np.float32)
  # Frame 0: mouth well inside; frames 1-4 pushed against each border; frame 5 beyond the corner.
  offsets = [(0, 0), (-200, 0), (200, 0), (0, -200), (0, 200), (400, 400)]
  for f, (dx, dy) in enumerate(offsets):
    verts[f, mouth_idx, 0] = 128 + dx + rng.normal(0, 5, 20)
    verts[f, mouth_idx, 1] = 150 + dy + rng.normal(0, 5, 20)
  corners = np.asarray(mouth.mouth_box(jnp.asarray(verts), mouth_idx, 256, 64, centre=centre))
  assert corners.shape == (6, 2) and corners.dtype == np.int32
  assert np.all(corners >= 0) and np.all(corners + 64 <= 256)
  middle = stat(verts[0, mouth_idx, :2], axis=0)
  np.testing.assert_array_equal(corners[0], np.round(middle[::-1] - 32))
  assert corners[1, 1] == 0 and corners[2, 1] == 192 and corners[3, 0] == 0 and corners[4, 0] == 192
  np.testing.assert_array_equal(corners[5], [192, 192])
  # jit-able, and a single frame gives (2,).
  jitted = jax.jit(lambda v: mouth.mouth_box(v, mouth_idx, 256, 64, centre=centre))(jnp.asarray(verts))
  np.testing.assert_array_equal(np.asarray(jitted), corners)
  assert mouth.mouth_box(jnp.asarray(verts[0]), mouth_idx, 256, 64, centre=centre).shape == (2,)


def test_mouth_centre_options_give_the_documented_centres():
  """'mesh_median' (the authors' rule, the default) is the per-coordinate median of the mouth points, 'mesh_mean'
  their mean; on lips with a skewed spread the two windows differ and each sits where its statistic says."""
  x = np.array([100.0, 102.0, 104.0, 106.0, 140.0])  # One far point drags the mean, not the median.
  y = np.array([150.0, 151.0, 152.0, 170.0, 171.0])
  verts = np.zeros((1, 8, 3), np.float32)
  idx = np.array([1, 2, 4, 5, 7])
  verts[0, idx, 0], verts[0, idx, 1] = x, y
  verts[0, [0, 3, 6], :2] = 10.0  # Not mouth points: ignored.
  median = np.asarray(mouth.mouth_box(jnp.asarray(verts), idx, 256, 64, centre='mesh_median'))[0]
  mean = np.asarray(mouth.mouth_box(jnp.asarray(verts), idx, 256, 64, centre='mesh_mean'))[0]
  np.testing.assert_array_equal(median, [152 - 32, 104 - 32])  # (row, col) = median (y, x) - side / 2
  np.testing.assert_array_equal(mean, [np.round(158.8 - 32), np.round(110.4 - 32)])
  np.testing.assert_array_equal(np.asarray(mouth.mouth_box(jnp.asarray(verts), idx, 256, 64))[0], median)
  assert paper.get_config().disc.mouth_centre in mouth.MOUTH_CENTRES
  np.testing.assert_allclose(np.asarray(mouth.mouth_centre(jnp.asarray(verts[0, idx, :2]), 'mesh_median')), [104, 152])


def test_unknown_mouth_centre_names_the_config_field():
  v = jnp.zeros((2, 10, 3))
  with pytest.raises(errors.ConfigError, match=r"config\.disc\.mouth_centre.*'box'.*mesh_median.*mesh_mean"):
    mouth.mouth_box(v, np.arange(10), 64, 32, centre='box')
  with pytest.raises(errors.ConfigError, match='config.disc.mouth_centre'):
    jax.jit(lambda a: mouth.mouth_box(a, np.arange(10), 64, 32, centre='median'))(v)


def test_mouth_box_rejects_nan():
  v = np.zeros((2, 10, 3), np.float32)
  v[1, 3, 0] = np.nan
  with pytest.raises(errors.LandmarkError, match=r'frame\(s\) \[1\]'):
    mouth.mouth_box(jnp.asarray(v), np.arange(10), 64, 32)


def test_crop_equals_slicing_and_resize():
  rng = np.random.default_rng(1)
  images = rng.uniform(-1, 1, (3, 64, 64, 3)).astype(np.float32)
  corners = np.array([[0, 0], [10, 37], [48, 48]], np.int32)
  same = np.asarray(mouth.crop_mouth(jnp.asarray(images), jnp.asarray(corners), 16, 16))
  for b, (y, x) in enumerate(corners):
    np.testing.assert_array_equal(same[b], images[b, y:y + 16, x:x + 16])
  # Upsampling (tiny config: 8 px window -> 32 px crop): bilinear with half-pixel centres, as torch computes it.
  up = np.asarray(mouth.crop_mouth(jnp.asarray(images), jnp.asarray(corners), 8, 32))
  assert up.shape == (3, 32, 32, 3)
  for b, (y, x) in enumerate(corners):
    patch = torch.from_numpy(images[b, y:y + 8, x:x + 8].transpose(2, 0, 1)[None].copy())
    ref = torch.nn.functional.interpolate(patch, size=(32, 32), mode='bilinear', align_corners=False)
    np.testing.assert_allclose(up[b], ref[0].numpy().transpose(1, 2, 0), atol=1e-5)
  # Downsampling (paper: 128 px window of a 512 image -> 64 px): antialiased, an exact 2x box mean here.
  big = rng.uniform(-1, 1, (2, 96, 96, 1)).astype(np.float32)
  down = np.asarray(mouth.crop_mouth(jnp.asarray(big), jnp.asarray([[4, 6], [30, 0]]), 32, 16))
  patch = torch.from_numpy(big[0, 4:36, 6:38].transpose(2, 0, 1)[None].copy())
  ref = torch.nn.functional.interpolate(patch, size=(16, 16), mode='bilinear', align_corners=False, antialias=True)
  np.testing.assert_allclose(down[0], ref[0].numpy().transpose(1, 2, 0), atol=1e-5)


def test_box_mask_equals_a_hand_made_box_clipped_at_the_edges():
  corners = np.array([[3, 5], [0, 0], [12, 10], [-2, 14], [20, 20]], np.int32)  # In, at (0, 0), at / past edges.
  got = np.asarray(mouth.box_mask(jnp.asarray(corners), 4, 16, 18))
  want = np.zeros((5, 16, 18), bool)
  want[0, 3:7, 5:9] = True  # Rows 3-6 and columns 5-8, both edges included.
  want[1, 0:4, 0:4] = True
  want[2, 12:16, 10:14] = True  # Touches the bottom edge.
  want[3, 0:2, 14:18] = True  # Above the top and touching the right edge: the part inside the image.
  assert got.dtype == bool and got.shape == (5, 16, 18)  # Corner (20, 20): wholly outside, an empty mask.
  np.testing.assert_array_equal(got, want)
  # Any leading axes, e.g. (B, T, 2) -> (B, T, H, W).
  np.testing.assert_array_equal(np.asarray(mouth.box_mask(jnp.asarray(corners[:4].reshape(2, 2, 2)), 4, 16, 18)),
                                want[:4].reshape(2, 2, 16, 18))
