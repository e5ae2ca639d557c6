"""The landmark image of the "with landmarks" ablation (paper Table 1): 2-D points drawn instead of the 3D face x_t.

Each point is a filled disc of `radius` pixels (default max(1, round(min(H, W) / 128)): 2 px at 256x256) around the
pixel that contains it, coloured by its index along a hue wheel (landmark i of L gets hue i / L, full saturation,
value 1, so every lit pixel has a channel sum >= 1 and the face mask sum > 0.01 still works). Where discs overlap the
higher index wins. Background 0. Points are (x, y) in the pixel convention of camera.project (pixel (i, j) centred at
(j + 0.5, i + 0.5)); a z column is ignored; non-finite points are not drawn.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from headgan_jax import errors


def default_radius(height: int, width: int) -> int:
  return max(1, round(min(height, width) / 128))


def landmark_colours(num_landmarks: int) -> np.ndarray:
  """(L, 3) float32 RGB in [0, 1]: a hue wheel over the landmark indices."""
  hue = np.arange(num_landmarks) / max(num_landmarks, 1)
  k = (np.array([5.0, 3.0, 1.0])[None] + hue[:, None] * 6.0) % 6.0  # HSV -> RGB with S = V = 1.
  return (1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)).astype(np.float32)


def _disc_offsets(radius: int) -> np.ndarray:
  d = np.arange(-radius, radius + 1)
  dy, dx = np.meshgrid(d, d, indexing='ij')
  keep = dy**2 + dx**2 <= radius**2 + radius  # Rounder than <= radius^2 on a pixel grid; radius 1 -> 3 x 3.
  return np.stack([dy[keep], dx[keep]], -1).astype(np.int32)  # (K, 2)


@functools.partial(jax.jit, static_argnames=('height', 'width', 'radius'))
def _draw(points: jax.Array, colours: jax.Array, height: int, width: int, radius: int) -> jax.Array:
  batch, num = points.shape[:2]
  offsets = jnp.asarray(_disc_offsets(radius))
  finite = jnp.all(jnp.isfinite(points), axis=-1)  # (B, L)
  safe = jnp.where(finite[..., None], points, -1e4)
  centre = jnp.floor(jnp.clip(safe, -1e4, 1e4)).astype(jnp.int32)[..., ::-1]  # (B, L, 2) as (row, col)
  pix = centre[:, :, None, :] + offsets[None, None]  # (B, L, K, 2)
  on_screen = (finite[..., None] & (pix[..., 0] >= 0) & (pix[..., 0] < height) & (pix[..., 1] >= 0) &
               (pix[..., 1] < width))
  base = (jnp.arange(batch, dtype=jnp.int32) * height * width)[:, None, None]
  size = batch * height * width
  flat = jnp.where(on_screen, base + pix[..., 0] * width + pix[..., 1], size)
  label = jnp.broadcast_to(jnp.arange(1, num + 1, dtype=jnp.int32)[None, :, None], flat.shape)
  canvas = jnp.zeros((size,), jnp.int32).at[flat.reshape(-1)].max(label.reshape(-1), mode='drop')
  table = jnp.concatenate([jnp.zeros((1, 3), jnp.float32), colours.astype(jnp.float32)])
  return table[canvas].reshape(batch, height, width, 3)


def draw_landmarks(points: jax.Array, height: int, width: int, radius: int | None = None,
                   colours: jax.Array | None = None) -> jax.Array:
  """(..., H, W, 3) float32 image of the (..., L, 2 or 3) pixel-space points; optional (L, 3) colours override."""
  points = jnp.asarray(points, jnp.float32)
  if points.ndim < 2 or points.shape[-1] not in (2, 3):
    raise errors.LandmarkError(f'draw_landmarks: points must be (..., L, 2 or 3), got shape {points.shape}.')
  if int(height) <= 0 or int(width) <= 0:
    raise errors.ConfigError(f'draw_landmarks: height and width must be positive, got {height} x {width}.')
  num = points.shape[-2]
  colours = jnp.asarray(landmark_colours(num) if colours is None else colours, jnp.float32)
  if colours.shape != (num, 3):
    raise errors.LandmarkError(f'draw_landmarks: colours must be ({num}, 3) for {num} points, got {colours.shape}.')
  radius = default_radius(height, width) if radius is None else int(radius)
  lead = points.shape[:-2]
  flat = points[..., :2].reshape((-1, num, 2))
  image = _draw(flat, colours, int(height), int(width), radius)
  return image.reshape(lead + (int(height), int(width), 3))
