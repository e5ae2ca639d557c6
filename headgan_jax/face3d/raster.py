"""Z-buffered triangle rasterisation in pure JAX (no OpenGL, no custom CUDA op).

`rasterise(vertices, faces, height, width)` turns an orthographically projected mesh, (N, 3) or a batch (B, N, 3) in
PIXEL coordinates (x to the right, y downwards, pixel (i, j) centred at (j + 0.5, i + 0.5), z growing towards the
camera; see `camera.project`), into per-pixel triangle ids, barycentric coordinates and depth. The visible triangle
at a pixel is the one with the LARGEST interpolated z. Both windings are drawn (no back-face culling): the z-buffer
decides, as in the paper's orthographic 3D-face image.

How it scales (a 100k-triangle mesh at 256x256 never builds a pixels x triangles matrix):
  1. Per triangle: the pixel bounding box (pixel centres inside the triangle's x/y range, clipped to the screen).
  2. Triangles are binned by bounding-box size into window levels of side min_window, 2 min_window, 4 min_window,
     ..., the full screen, and counting-sorted so each level is one contiguous run. Each triangle is evaluated only
     on the pixels of one fixed-size window of its level, placed over its bounding box - so a 1-pixel triangle costs
     min_window^2 evaluations, a full-screen one H*W, and big triangles are exact, never clipped to a window.
  3. Per level, a `lax.fori_loop` with a data-dependent trip count walks fixed-size chunks of that level's triangles
     (chunk = chunk_pixels / window area triangles): edge functions at the window's pixel centres, coverage test,
     depth, and a scatter-max of a packed (depth, id) key into one z-buffer for the whole batch (the batch's
     triangles are one list; a frame's offset into the z-buffer travels with each triangle).
  4. Per pixel, the winning triangle's barycentrics and depth are recomputed from the (differentiable) vertices.
Shapes are fixed for any input, so everything compiles once per (N, F, B, H, W). Per-triangle data is planar
(field-major) and windows are laid out (rows, cols, triangles): XLA's CPU code is many times slower on a short minor
axis. Memory is O(B (N + F + H W) + chunk_pixels).

Packed key (uint32): the low b bits hold triangle id + 1 (b = bits needed for F + 1; 0 = empty), the bits above them
the depth quantised over the frame's vertex z range to min(24, 32 - b) bits. With F = 100k triangles that is 15 depth
bits (8k triangles: 18): two surfaces closer than (z range / 2^15) at a pixel are ordered by triangle id instead
(the larger id wins) - far below anything visible in x_t. The coverage/id part is not differentiable;
`barycentric` and `depth` are differentiable with respect to the vertices for the fixed triangle ids.

Fill rule: a pixel centre exactly on an edge belongs to the triangle for which that edge is a top or left edge
(Direct3D / OpenGL convention, in y-down screen space). Edge functions are evaluated from the edge's lower-index
vertex, so two triangles sharing an edge compute bit-identical values of opposite sign: a closed or tiled mesh is
drawn watertight - no pixel lost, none drawn twice by the two triangles of an edge.

Background pixels have triangle_id -1, barycentric 0 and depth 0. Triangles with a non-finite vertex, zero area, or no
pixel centre inside the screen are not drawn (`rasterise` raises on non-finite vertices when called outside jit).
"""
from __future__ import annotations

import functools
import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from headgan_jax import errors

# Pixel evaluations per loop step (triangles x window pixels). It bounds the working memory of a step (~100 bytes per
# evaluation) and the work wasted on the last, partly filled chunk of each level: small on CPU, where steps are
# cheap and serial, large on accelerators, which need wide steps to fill the device. Measured on CPU by
# bench/face3d.py: 2^12 fastest here (100k triangles: ~2x faster than 2^14; 7.6k-triangle face: 2^18 ~3x slower).
CPU_CHUNK_PIXELS = 1 << 12
ACCELERATOR_CHUNK_PIXELS = 1 << 18
# Side of the smallest window: most triangles of a dense face mesh at 256x256 cover one or two pixels.
DEFAULT_MIN_WINDOW = 2


@flax.struct.dataclass
class Rasterised:
  """Per-pixel result of `rasterise`; leading batch axis present when the vertices were batched."""
  triangle_id: jax.Array  # (..., H, W) int32: index into faces of the visible triangle, -1 = background.
  barycentric: jax.Array  # (..., H, W, 3) float32: weights of the triangle's 3 vertices at the pixel centre.
  depth: jax.Array  # (..., H, W) float32: interpolated z of the visible triangle (0 on background).


def window_levels(height: int, width: int, min_window: int = DEFAULT_MIN_WINDOW) -> tuple[tuple[int, int], ...]:
  """The (rows, cols) window sizes: min_window doubled until it reaches the screen, then the screen."""
  levels = []
  side = max(1, min_window)
  while True:
    level = (min(side, height), min(side, width))
    if not levels or levels[-1] != level:
      levels.append(level)
    if side >= max(height, width):
      return tuple(levels)
    side *= 2


def _key_bits(num_faces: int) -> tuple[int, int]:
  """(id bits, depth bits) of the packed key; depth stays within float32's exact integers (24 bits)."""
  id_bits = max(1, math.ceil(math.log2(num_faces + 1)))
  return id_bits, min(24, 32 - id_bits)


def _triangle_setup(vertices: jax.Array, faces: jax.Array, height: int, width: int,
                    levels: tuple[tuple[int, int], ...]):
  """Per-triangle data of the whole batch, flattened to T = B * F triangles.

  Returns planar arrays (XLA's CPU code is far faster on them than on a short minor axis): floats (18, T), ints
  (4, T), level (T,), area2 (T,). floats = for each edge k (opposite vertex k) its canonical start point (px, py) and
  direction (dx, dy) (rows 4k..4k+3), its orientation sign (row 12 + k), then the 3 quantised vertex depths (rows
  15..17); ints = bounding-box top row, left column, z-buffer offset of the frame, id + 1. Level len(levels) = not
  drawn.
  """
  batch, num_faces = vertices.shape[0], faces.shape[0]
  depth_bits = _key_bits(num_faces)[1]
  x, y, z = vertices[..., 0], vertices[..., 1], vertices[..., 2]  # (B, N) planes
  finite_v = jnp.isfinite(x) & jnp.isfinite(y) & jnp.isfinite(z)
  # Depth quantisation over each frame's finite vertex z range.
  zmin = jnp.min(jnp.where(finite_v, z, jnp.inf), axis=-1, keepdims=True)
  zmax = jnp.max(jnp.where(finite_v, z, -jnp.inf), axis=-1, keepdims=True)
  zmin = jnp.where(jnp.isfinite(zmin), zmin, 0.0)
  zrange = jnp.where(jnp.isfinite(zmax), zmax - zmin, 1.0)
  zscale = (2.0**depth_bits - 1.0) / jnp.maximum(zrange, 1e-12)
  zq = jnp.clip((z - zmin) * zscale, 0.0, 2.0**depth_bits - 1.0)

  corner = [faces[:, k] for k in range(3)]
  tri_finite = finite_v[:, corner[0]] & finite_v[:, corner[1]] & finite_v[:, corner[2]]  # (B, F)
  cx = [jnp.where(tri_finite, x[:, c], 0.0) for c in corner]  # 3 x (B, F)
  cy = [jnp.where(tri_finite, y[:, c], 0.0) for c in corner]
  cz = [zq[:, c] for c in corner]
  area2 = (cx[1] - cx[0]) * (cy[2] - cy[0]) - (cy[1] - cy[0]) * (cx[2] - cx[0])  # < 0: clockwise on screen
  orientation = jnp.where(area2 < 0, -1.0, 1.0)

  rows_f = []
  signs = []
  for k in range(3):
    # Edge k joins corners a = (k + 1) % 3 -> b = (k + 2) % 3; evaluated from its lower-index vertex so that two
    # triangles sharing it compute identical values (watertightness).
    a, b = (k + 1) % 3, (k + 2) % 3
    forward = (corner[a] < corner[b])[None]  # (1, F)
    sx, sy = jnp.where(forward, cx[a], cx[b]), jnp.where(forward, cy[a], cy[b])
    ex, ey = jnp.where(forward, cx[b], cx[a]), jnp.where(forward, cy[b], cy[a])
    rows_f += [sx, sy, ex - sx, ey - sy]
    signs.append(jnp.where(forward, 1.0, -1.0) * orientation)  # Makes the interior positive.

  # Pixel bounding box: pixels whose centre lies in [min, max], clipped to the screen.
  big = float(max(height, width) + 2)
  box = lambda v, fn: fn(jnp.clip(v, -2.0, big) - 0.5).astype(jnp.int32)
  j0 = jnp.maximum(box(jnp.minimum(jnp.minimum(cx[0], cx[1]), cx[2]), jnp.ceil), 0)
  j1 = jnp.minimum(box(jnp.maximum(jnp.maximum(cx[0], cx[1]), cx[2]), jnp.floor), width - 1)
  i0 = jnp.maximum(box(jnp.minimum(jnp.minimum(cy[0], cy[1]), cy[2]), jnp.ceil), 0)
  i1 = jnp.minimum(box(jnp.maximum(jnp.maximum(cy[0], cy[1]), cy[2]), jnp.floor), height - 1)
  rows, cols = i1 - i0 + 1, j1 - j0 + 1
  drawn = tri_finite & (area2 != 0) & (rows > 0) & (cols > 0)
  # Level = the first window that holds the bounding box (window sizes grow monotonically).
  level = sum(((rows > wh) | (cols > ww)).astype(jnp.int32) for wh, ww in levels[:-1])
  level = jnp.where(drawn, level, len(levels))

  base = jnp.broadcast_to((jnp.arange(batch, dtype=jnp.int32) * (height * width))[:, None], i0.shape)
  ids = jnp.broadcast_to(jnp.arange(1, num_faces + 1, dtype=jnp.int32)[None], i0.shape)
  floats = jnp.stack(rows_f + signs + cz).reshape(18, -1)
  ints = jnp.stack([i0, j0, base, ids]).reshape(4, -1)
  return floats, ints, level.reshape(-1), area2.reshape(-1)


def _window_keys(floats: jax.Array, ints: jax.Array, area2: jax.Array, valid: jax.Array, window: tuple[int, int],
                 height: int, width: int, key_bits: tuple[int, int], out_of_range: int):
  """Packed (depth, id) keys and flat z-buffer indices of a chunk of C triangles on their (wh, ww) windows.

  Arrays are laid out (wh, ww, C), triangles on the minor axis, so XLA's CPU code vectorises over triangles.
  """
  wh, ww = window
  id_bits, depth_bits = key_bits
  top = jnp.minimum(ints[0], height - wh)  # Keep the window on screen; it still holds the bounding box.
  left = jnp.minimum(ints[1], width - ww)
  rows = top + jnp.arange(wh, dtype=jnp.int32)[:, None, None]  # (wh, 1, C)
  cols = left + jnp.arange(ww, dtype=jnp.int32)[None, :, None]  # (1, ww, C)
  py = rows.astype(jnp.float32) + 0.5
  px = cols.astype(jnp.float32) + 0.5
  inside = valid
  weights = []
  for k in range(3):
    sx, sy, dx, dy = floats[4 * k], floats[4 * k + 1], floats[4 * k + 2], floats[4 * k + 3]
    s = floats[12 + k]
    e = s * (dx * (py - sy) - dy * (px - sx))  # Edge function, interior positive.
    odx, ody = s * dx, s * dy  # Oriented edge direction.
    top_left = (ody < 0) | ((ody == 0) & (odx > 0))
    inside = inside & ((e > 0) | ((e == 0) & top_left))
    weights.append(e)
  depth_q = (weights[0] * floats[15] + weights[1] * floats[16] + weights[2] * floats[17]) / jnp.abs(area2)
  depth_q = jnp.clip(jnp.floor(depth_q), 0.0, 2.0**depth_bits - 1.0).astype(jnp.int32).astype(jnp.uint32)
  keys = (depth_q << jnp.uint32(id_bits)) | ints[3].astype(jnp.uint32)
  flat = jnp.where(inside, ints[2] + rows * width + cols, out_of_range)
  return keys.reshape(-1), flat.reshape(-1)


def _zbuffer(vertices: jax.Array, faces: jax.Array, height: int, width: int, chunk_pixels: int,
             min_window: int) -> jax.Array:
  """Visible triangle id per pixel, (B, H, W) int32 (-1 = background); not differentiable."""
  batch, num_faces = vertices.shape[0], faces.shape[0]
  levels = window_levels(height, width, min_window)
  floats, ints, level, area2 = _triangle_setup(vertices, faces, height, width, levels)
  num_tri = level.shape[0]
  key_bits = _key_bits(num_faces)
  id_bits = key_bits[0]
  chunks = [max(1, chunk_pixels // (wh * ww)) for wh, ww in levels]
  # Counting sort by level (O(T), unlike XLA's CPU argsort): each level becomes one contiguous run of triangles.
  one_hot = level[:, None] == jnp.arange(len(levels) + 1, dtype=level.dtype)[None]  # (T, L + 1)
  counts = jnp.sum(one_hot, axis=0, dtype=jnp.int32)
  starts = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(counts)])
  rank = jnp.sum(jnp.where(one_hot, jnp.cumsum(one_hot, axis=0, dtype=jnp.int32) - 1, 0), axis=1)
  position = starts[level] + rank
  order = jnp.zeros((num_tri,), jnp.int32).at[position].set(jnp.arange(num_tri, dtype=jnp.int32),
                                                              unique_indices=True)
  pad = max(chunks)  # Padding keeps every chunk slice in bounds (dynamic_slice would shift it back otherwise).
  floats = jnp.pad(floats[:, order], ((0, 0), (0, pad)))
  ints = jnp.pad(ints[:, order], ((0, 0), (0, pad)))
  area2 = jnp.pad(area2[order], (0, pad), constant_values=1.0)
  size = batch * height * width
  zbuf = jnp.zeros((size,), jnp.uint32)

  for lvl, (window, chunk) in enumerate(zip(levels, chunks)):
    start, count = starts[lvl], counts[lvl]

    def step(i, zbuf, start=start, count=count, window=window, chunk=chunk):
      offset = start + i * chunk
      f = jax.lax.dynamic_slice_in_dim(floats, offset, chunk, axis=1)
      n = jax.lax.dynamic_slice_in_dim(ints, offset, chunk, axis=1)
      a = jax.lax.dynamic_slice_in_dim(area2, offset, chunk)
      valid = i * chunk + jnp.arange(chunk) < count
      keys, flat = _window_keys(f, n, a, valid, window, height, width, key_bits, size)
      return zbuf.at[flat].max(keys, mode='drop')

    zbuf = jax.lax.fori_loop(0, (count + chunk - 1) // chunk, step, zbuf)
  ids = (zbuf & jnp.uint32((1 << id_bits) - 1)).astype(jnp.int32) - 1
  return ids.reshape(batch, height, width)


def _pixel_attributes(vertices: jax.Array, faces: jax.Array, triangle_id: jax.Array, height: int, width: int):
  """Barycentrics (B, H, W, 3) and depth (B, H, W) of the given triangles at the pixel centres (differentiable)."""
  batch, num_faces = vertices.shape[0], faces.shape[0]
  covered = triangle_id >= 0
  # Planar layout (one (H, W) plane per corner coordinate): XLA's CPU code is ~20x slower on a minor axis of 3.
  table = jnp.moveaxis(vertices[:, faces], (2, 3), (0, 1)).reshape(9, batch * num_faces)  # (corner*coord, B*F)
  flat = (jnp.maximum(triangle_id, 0) + (jnp.arange(batch, dtype=jnp.int32) * num_faces)[:, None, None]).reshape(-1)
  x, y, z = [[table[3 * k + c][flat].reshape(triangle_id.shape) for k in range(3)] for c in range(3)]
  py = jnp.arange(height, dtype=jnp.float32)[None, :, None] + 0.5
  px = jnp.arange(width, dtype=jnp.float32)[None, None, :] + 0.5
  area2 = (x[1] - x[0]) * (y[2] - y[0]) - (y[1] - y[0]) * (x[2] - x[0])
  safe_area = jnp.where(covered & (area2 != 0), area2, 1.0)
  weights = []
  for k in range(3):
    a, b = (k + 1) % 3, (k + 2) % 3
    e = (x[b] - x[a]) * (py - y[a]) - (y[b] - y[a]) * (px - x[a])
    weights.append(jnp.where(covered, e / safe_area, 0.0))
  depth = weights[0] * z[0] + weights[1] * z[1] + weights[2] * z[2]
  return jnp.stack(weights, axis=-1), depth


# Two jitted halves: under jax.grad the z-buffer half gets concrete (stop_gradient) vertices and reuses the forward
# compilation; only the small attribute half is differentiated.
_triangle_ids = jax.jit(_zbuffer, static_argnames=('height', 'width', 'chunk_pixels', 'min_window'))


@functools.partial(jax.jit, static_argnames=('height', 'width'))
def _with_attributes(vertices: jax.Array, faces: jax.Array, triangle_id: jax.Array, height: int,
                     width: int) -> Rasterised:
  bary, depth = _pixel_attributes(vertices, faces, triangle_id, height, width)
  return Rasterised(triangle_id=triangle_id, barycentric=bary, depth=depth)


def _check_inputs(vertices, faces, height: int, width: int) -> None:
  if vertices.ndim not in (2, 3) or vertices.shape[-1] != 3:
    raise errors.FaceModelError(f'rasterise: vertices must be (N, 3) or (B, N, 3), got shape {vertices.shape}.')
  if faces.ndim != 2 or faces.shape[-1] != 3 or faces.shape[0] == 0:
    raise errors.FaceModelError(f'rasterise: faces must be a non-empty (F, 3) index array, got shape {faces.shape}.')
  if not jnp.issubdtype(faces.dtype, jnp.integer):
    raise errors.FaceModelError(f'rasterise: faces must hold integer vertex indices, got dtype {faces.dtype}.')
  if int(height) <= 0 or int(width) <= 0:
    raise errors.ConfigError(f'rasterise: height and width must be positive, got {height} x {width}.')
  num_vertices = vertices.shape[-2]
  if not isinstance(faces, jax.core.Tracer):
    f = np.asarray(faces)
    if f.min() < 0 or f.max() >= num_vertices:
      raise errors.FaceModelError(
          f'rasterise: faces index vertices {f.min()}..{f.max()} but the mesh has {num_vertices} vertices.')
  if not isinstance(vertices, jax.core.Tracer):
    finite = np.all(np.isfinite(np.asarray(vertices)), axis=(-2, -1))
    if not np.all(finite):
      where = 'mesh' if vertices.ndim == 2 else f'frame(s) {np.flatnonzero(~finite).tolist()}'
      raise errors.FaceModelError(f'rasterise: vertices of {where} hold NaN or inf.')


def rasterise(vertices: jax.Array, faces: jax.Array, height: int, width: int, *,
              chunk_pixels: int | None = None, min_window: int = DEFAULT_MIN_WINDOW) -> Rasterised:
  """Rasterises (N, 3) or (B, N, 3) pixel-space vertices with (F, 3) faces into an H x W z-buffer.

  Jit-compiled once per (shapes, height, width); callable inside jit too (input checks that need values are then
  skipped and non-finite triangles are simply not drawn). chunk_pixels (default: by backend) and min_window only
  trade speed for memory; the result does not depend on them.
  """
  if chunk_pixels is None:
    chunk_pixels = CPU_CHUNK_PIXELS if jax.default_backend() == 'cpu' else ACCELERATOR_CHUNK_PIXELS
  vertices = jnp.asarray(vertices, jnp.float32) if not isinstance(vertices, jax.Array) else vertices
  faces = faces if isinstance(faces, jax.Array) else np.asarray(faces)
  _check_inputs(vertices, faces, height, width)
  batched = vertices.ndim == 3
  vertices = vertices.astype(jnp.float32) if batched else vertices.astype(jnp.float32)[None]
  faces = jnp.asarray(faces, jnp.int32)
  height, width = int(height), int(width)
  ids = _triangle_ids(jax.lax.stop_gradient(vertices), faces, height=height, width=width,
                      chunk_pixels=int(chunk_pixels), min_window=int(min_window))
  out = _with_attributes(vertices, faces, ids, height=height, width=width)
  if batched:
    return out
  return jax.tree.map(lambda a: a[0], out)
