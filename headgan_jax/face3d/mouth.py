"""The mouth window y_t^m for the mouth discriminator D_m (paper Section 3.3).

The window is a square of side `mouth_box_size(image_size, crop_size)` = round(crop_size * image_size / 256) pixels
(config.disc.mouth_size = 64 at the paper's 256x256 gives 64 px; the side scales with the image so the window covers
the same part of the face at any resolution), centred on the fitted mesh's projected mouth vertices
(model.mouth_indices) as config.disc.mouth_centre says, and shifted, not shrunk, to lie inside the image:

  'mesh_median'  per-coordinate median of the mouth vertices: the authors' rule (their dataloader/video_dataset.py
                 `get_mouth_center`: np.median over the dlib-68 points from 48 on, i.e. the outer and inner lip
                 contours 48-67 together with points 68-69, the two pupils detect_landmarks.py appends; no offset;
                 then util.get_ROI's window [c - 32, c + 32) moved inside the frame). The mesh has no pupil
                 vertices, so the lips alone. Measured on ../shared/fixtures/driving.mp4 (150 crops, 256 px) against
                 the authors' centre computed on the same crops (dlib 68 points + pupils): 2.1 / 2.0 px mean distance
                 (learned / data-free model); with the mesh's two eye-contour centres standing in for the pupils
                 1.8 / 2.3 px, no better overall, so they are left out.
  'mesh_mean'    mean of the mouth vertices (ours before): 3.7 / 3.1 px from the authors' centre on the same
                 frames, mostly lower (mean dy +3.3 / +2.5 px).

The authors truncate the median to an integer pixel; here the corner is rounded (< 1 px apart). `crop_mouth` cuts
the windows out of a batch and resizes them to crop_size x crop_size, D_m's input size; `box_mask` gives them as
(..., H, W) masks (the mouth image metrics of metrics/evaluators/image.py).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from headgan_jax import errors


def mouth_box_size(image_size: int, crop_size: int = 64) -> int:
  """Side in pixels of the mouth window in an image_size x image_size frame."""
  return int(min(image_size, max(1, round(crop_size * image_size / 256))))


MOUTH_CENTRES = ('mesh_median', 'mesh_mean')  # config.disc.mouth_centre: the authors' rule first.


def check_centre(centre: str) -> str:
  """centre if it is one of MOUTH_CENTRES, else ConfigError naming config.disc.mouth_centre."""
  if centre not in MOUTH_CENTRES:
    raise errors.ConfigError(f'config.disc.mouth_centre is {centre!r}; expected one of {MOUTH_CENTRES} '
                             "('mesh_median': the authors' median of the lip points, 'mesh_mean': their mean).")
  return centre


def mouth_centre(points: jax.Array, centre: str = 'mesh_median') -> jax.Array:
  """(..., 2) centre of the (..., M, 2) mouth points as `centre` (MOUTH_CENTRES) says."""
  check_centre(centre)
  if centre == 'mesh_median':
    return jnp.median(points, axis=-2)
  return jnp.mean(points, axis=-2)


def mouth_box(vertices_px: jax.Array, mouth_indices: jax.Array, image_size: int, crop_size: int = 64, *,
              centre: str = 'mesh_median') -> jax.Array:
  """Integer top-left corners (..., 2) as (row y, column x) of the mouth windows of (..., N, 3) pixel-space vertices,
  centred as `centre` says (config.disc.mouth_centre, one of MOUTH_CENTRES; see the module docstring).

  Outside jit, non-finite mouth vertices raise LandmarkError; inside jit such a frame's window falls back to the
  image centre (a corner cannot be NaN).
  """
  check_centre(centre)  # Before any work: a typo in the config fails here, not as a silently other box.
  if vertices_px.ndim < 2 or vertices_px.shape[-1] not in (2, 3):
    raise errors.LandmarkError(f'mouth_box: vertices must be (..., N, 2 or 3), got shape {vertices_px.shape}.')
  points = jnp.asarray(vertices_px)[..., jnp.asarray(mouth_indices), :2]
  if not isinstance(points, jax.core.Tracer):
    finite = np.all(np.isfinite(np.asarray(points)), axis=(-2, -1))
    if not np.all(finite):
      bad = np.flatnonzero(~np.ravel(finite)).tolist()
      raise errors.LandmarkError(f'mouth_box: projected mouth vertices hold NaN/inf (frame(s) {bad}).')
  side = mouth_box_size(image_size, crop_size)
  middle = mouth_centre(points, centre)  # (..., 2) as (x, y)
  middle = jnp.where(jnp.isfinite(middle), middle, image_size / 2.0)
  corner_xy = jnp.round(middle - side / 2.0)
  corner_xy = jnp.clip(corner_xy, 0, image_size - side).astype(jnp.int32)
  return corner_xy[..., ::-1]  # (y, x)


@functools.partial(jax.jit, static_argnames=('box_size', 'out_size'))
def crop_mouth(images: jax.Array, corners: jax.Array, box_size: int, out_size: int) -> jax.Array:
  """(B, out, out, C) crops of images (B, H, W, C) at corners (B, 2) = (y, x), box_size square, resized bilinearly
  (antialiased when shrinking). Corners are expected inside the image (as `mouth_box` gives them); dynamic_slice
  would shift an out-of-range window back in."""
  channels = images.shape[-1]
  corners = corners.astype(jnp.int32)
  crops = jax.vmap(lambda im, c: jax.lax.dynamic_slice(im, (c[0], c[1], 0), (box_size, box_size, channels)))(
      images, corners)
  if box_size == out_size:
    return crops
  return jax.image.resize(crops, (crops.shape[0], out_size, out_size, channels), method='linear', antialias=True)


@functools.partial(jax.jit, static_argnames=('box_size', 'height', 'width'))
def box_mask(corners: jax.Array, box_size: int, height: int, width: int) -> jax.Array:
  """(..., height, width) bool masks of the box_size squares at corners (..., 2) = (row y, column x), e.g. the mouth
  windows of `mouth_box` (the mouth image metrics). A box reaching past the image keeps only its pixels inside it."""
  corners = jnp.asarray(corners, jnp.int32)
  rows = jnp.arange(height, dtype=jnp.int32)
  cols = jnp.arange(width, dtype=jnp.int32)
  top, left = corners[..., 0:1], corners[..., 1:2]  # (..., 1): broadcast against the pixel indices.
  in_rows = (rows >= top) & (rows < top + box_size)  # (..., H)
  in_cols = (cols >= left) & (cols < left + box_size)  # (..., W)
  return in_rows[..., :, None] & in_cols[..., None, :]
