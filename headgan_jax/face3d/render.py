"""The paper's 3D face image x_t (Section 4.1): the fitted mesh rasterised, coloured by normalised mean-shape coordinates.

Every vertex carries a fixed colour, its position in the MEAN shape (not the fitted one), so the same point of the face
has the same colour in every frame and for every identity: x_t tells G where each face point lands, with pose and
expression, while identity is taken out (eq. 1 already put the reference identity into the mesh).

Normalisation: each axis of the mean shape's bounding box is mapped linearly to [COLOUR_FLOOR, 1] = [0.05, 1]
(channel 0 = x, 1 = y, 2 = z of the model frame). Covered pixels therefore have every channel >= 0.05 and a channel sum
>= 0.15, while the background is exactly 0: the L1 face mask sum(x_t) > config.loss.face_mask_threshold (0.01) is
exactly the coverage mask. Images are float32, background 0, values in [0.05, 1] on the face (not [-1, 1]).

Modes (config.face3d.x_image_mode):
  'triangle_centre' (paper): a pixel holds the colour of its visible triangle's mean-shape centroid - flat shading.
  'interpolated': the mean-shape coordinates interpolated with the pixel's barycentrics - smooth shading.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from headgan_jax import errors
from headgan_jax.face3d import raster as raster_lib

COLOUR_FLOOR = 0.05
MODES = ('triangle_centre', 'interpolated')


def normalise_to_colours(points: jax.Array, reference: jax.Array) -> jax.Array:
  """Maps points (..., 3) per axis from the bounding box of reference (N, 3) to [COLOUR_FLOOR, 1]."""
  lo = jnp.min(reference, axis=0)
  extent = jnp.max(reference, axis=0) - lo
  unit = (points - lo) / jnp.where(extent > 0, extent, 1.0)
  return jnp.clip(COLOUR_FLOOR + (1.0 - COLOUR_FLOOR) * unit, COLOUR_FLOOR, 1.0)


def vertex_colours(model_mean: jax.Array) -> jax.Array:
  """(N, 3) colour of each vertex: its normalised mean-shape coordinates."""
  return normalise_to_colours(model_mean, model_mean)


def triangle_colours(model_mean: jax.Array, faces: jax.Array) -> jax.Array:
  """(F, 3) colour of each triangle: its normalised mean-shape centroid."""
  return normalise_to_colours(jnp.mean(model_mean[faces], axis=1), model_mean)


def face_image(model_mean: jax.Array, faces: jax.Array, raster: raster_lib.Rasterised,
               mode: str = 'triangle_centre') -> jax.Array:
  """x_t (..., H, W, 3) from a rasterised mesh: mean-shape colours on covered pixels, 0 on background."""
  if mode not in MODES:
    raise errors.ConfigError(f'config.face3d.x_image_mode must be one of {MODES}, got {mode!r}.')
  model_mean = jnp.asarray(model_mean, jnp.float32)
  faces = jnp.asarray(faces, jnp.int32)
  tid = raster.triangle_id
  covered = (tid >= 0)[..., None]
  safe = jnp.maximum(tid, 0)
  if mode == 'triangle_centre':
    image = triangle_colours(model_mean, faces)[safe]
  else:
    corner_colours = vertex_colours(model_mean)[faces[safe]]  # (..., H, W, 3 corners, 3 channels)
    image = jnp.einsum('...k,...kc->...c', raster.barycentric, corner_colours)
    # Pixel centres on an edge can carry barycentrics a rounding error outside [0, 1]; keep the documented range.
    image = jnp.clip(image, COLOUR_FLOOR, 1.0)
  return jnp.where(covered, image, 0.0)


def face_mask(x_t: jax.Array, threshold: float) -> jax.Array:
  """(..., H, W, 1) float32 mask of the face region: pixels where the channel sum of |x_t| exceeds the threshold.

  The authors threshold the channel sum of the 3D face image (config.loss.face_mask_threshold); the absolute value
  makes the mask independent of the sign convention of x_t's coordinate colours (identical when they are >= 0),
  as long as the background is 0. Shared by the training losses and the image metrics.
  """
  return (jnp.sum(jnp.abs(jnp.asarray(x_t).astype(jnp.float32)), axis=-1, keepdims=True) > threshold
          ).astype(jnp.float32)


def render_face(model, vertices_px: jax.Array, height: int, width: int, mode: str = 'triangle_centre') -> jax.Array:
  """x_t of fitted vertices (N, 3) or (B, N, 3) in pixels (see camera.project): rasterise + face_image."""
  raster = raster_lib.rasterise(vertices_px, model.faces, height, width)
  return face_image(model.mean, model.faces, raster, mode)
