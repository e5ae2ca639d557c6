"""The mouth window y_t^m for the mouth discriminator D_m (paper Section 3.3).

The window is a square of side `mouth_box_size(image_size, crop_size)` = round(crop_size * image_size / 256) pixels
(config.disc.mouth_size = 64 at the paper's 256x256 gives 64 px; the side scales with the image so the window covers
the same part of the face at any resolution), centred on the mean of the fitted mesh's projected mouth vertices
(model.mouth_indices) and shifted, not shrunk, to lie inside the image. `crop_mouth` cuts the windows out of a batch
and resizes them to crop_size x crop_size, D_m's input size.
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


def mouth_box(vertices_px: jax.Array, mouth_indices: jax.Array, image_size: int, crop_size: int = 64) -> jax.Array:
  """Integer top-left corners (..., 2) as (row y, column x) of the mouth windows of (..., N, 3) pixel-space vertices.

  Outside jit, non-finite mouth vertices raise LandmarkError; inside jit such a frame's window falls back to the
  image centre (a corner cannot be NaN).
  """
  if vertices_px.ndim < 2 or vertices_px.shape[-1] not in (2, 3):
    raise errors.LandmarkError(f'mouth_box: vertices must be (..., N, 2 or 3), got shape {vertices_px.shape}.')
  points = jnp.asarray(vertices_px)[..., jnp.asarray(mouth_indices), :2]
  if not isinstance(points, jax.core.Tracer):
    finite = np.all(np.isfinite(np.asarray(points)), axis=(-2, -1))
    if not np.all(finite):
      bad = np.flatnonzero(~np.ravel(finite)).tolist()
      raise errors.LandmarkError(f'mouth_box: projected mouth vertices hold NaN/inf (frame(s) {bad}).')
  side = mouth_box_size(image_size, crop_size)
  centre = jnp.mean(points, axis=-2)  # (..., 2) as (x, y)
  centre = jnp.where(jnp.isfinite(centre), centre, image_size / 2.0)
  corner_xy = jnp.round(centre - side / 2.0)
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
