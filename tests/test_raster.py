"""The pure-JAX rasteriser against an independent NumPy ray-casting reference, on real and synthetic meshes."""
import pathlib
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trimesh

from headgan_jax import errors
from headgan_jax.face3d import raster

SFM_OBJ = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'models' / 'sfm' / 'sfm_reference.obj'
SIZE = 128


def _rotation(yaw_deg: float, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
  y, p, r = np.deg2rad([yaw_deg, pitch_deg, roll_deg])
  ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
  rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
  rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
  return rz @ rx @ ry


def _to_pixels(vertices: np.ndarray, rotation: np.ndarray, size: int = SIZE, fill: float = 0.8) -> np.ndarray:
  """Model space (y up, z towards the viewer) -> pixel space (y down, z towards the viewer), scaled orthographic."""
  v = (vertices - vertices.mean(0)) @ rotation.T
  scale = fill * size / np.ptp(v[:, :2], axis=0).max()
  v = v * scale
  v[:, 1] = -v[:, 1]
  v[:, :2] += size / 2 + 0.137  # Off the pixel grid, so no pixel centre lies exactly on an edge by construction.
  return v.astype(np.float32)


def _bumpy_ellipsoid():
  """A face-like closed surface (nose, brow bumps on an ellipsoid): both windings present through the back side."""
  s = trimesh.creation.icosphere(subdivisions=3)
  v = np.asarray(s.vertices) * [70.0, 95.0, 60.0]
  v[:, 2] += 25.0 * np.exp(-((v[:, 0] / 12) ** 2 + (v[:, 1] / 25) ** 2)) * (v[:, 2] > 0)
  return v, np.asarray(s.faces)


def _face_meshes():
  """Real face meshes available here: the project's default 3DMM and the SFM reference mesh (else a synthetic one)."""
  meshes = []
  try:
    from headgan_jax.face3d import morphable  # Written in parallel; used once it exists.
    model = morphable.load_default()
    meshes.append(('default_3dmm', np.asarray(model.mean, np.float64), np.asarray(model.faces)))
  except (ImportError, AttributeError, errors.HeadGANError, FileNotFoundError):
    pass
  if SFM_OBJ.exists():
    m = trimesh.load(SFM_OBJ, process=False)
    meshes.append(('sfm_reference', np.asarray(m.vertices), np.asarray(m.faces)))
  if not meshes:
    meshes.append(('bumpy_ellipsoid',) + _bumpy_ellipsoid())
  return meshes


def reference_raster(vertices: np.ndarray, faces: np.ndarray, height: int, width: int):
  """Per-pixel orthographic ray casting (Moller-Trumbore, float64, edges inclusive), nearest hit = largest z.

  Returns ids (H, W), barycentrics (H, W, 3), depth (H, W). Rays are cast only within each triangle's bounding box
  grown by one pixel (rays outside it cannot hit); triangles are processed in groups of similar box size, every hit
  is kept, and the nearest hit per pixel is picked by sorting.
  """
  v = vertices.astype(np.float64)
  tri = v[faces]  # (F, 3, 3)
  lo = np.clip(np.floor(tri[:, :, :2].min(1)).astype(int) - 1, 0, [width, height])  # (F, 2) as (x, y)
  hi = np.clip(np.ceil(tri[:, :, :2].max(1)).astype(int) + 1, 0, [width, height])
  extent = (hi - lo).max(1)
  order = np.argsort(extent)
  hits = []  # (flat pixel, t, triangle, u, w)
  direction = np.array([0.0, 0.0, -1.0])
  for group in np.array_split(order, max(1, len(order) // 256)):
    side = max(1, extent[group].max())
    d = np.arange(side)
    px = lo[group, 0, None, None] + d[None, None, :]  # (G, 1, side)
    py = lo[group, 1, None, None] + d[None, :, None]  # (G, side, 1)
    px, py = np.broadcast_arrays(px, py)
    origin = np.stack([px + 0.5, py + 0.5, np.full(px.shape, 1e6)], -1)  # (G, side, side, 3)
    t0 = tri[group]
    e1, e2 = t0[:, 1] - t0[:, 0], t0[:, 2] - t0[:, 0]
    pvec = np.cross(direction, e2)
    det = np.einsum('gd,gd->g', e1, pvec)
    ok = np.abs(det) > 1e-12
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)[:, None, None]
    tvec = origin - t0[:, None, None, 0]
    u = np.einsum('gyxd,gd->gyx', tvec, pvec) * inv
    qvec = np.cross(tvec, e1[:, None, None])
    w = (qvec @ direction) * inv
    t = np.einsum('gyxd,gd->gyx', qvec, e2) * inv
    hit = (ok[:, None, None] & (u >= 0) & (w >= 0) & (u + w <= 1) & (px < hi[group, 0, None, None]) &
           (py < hi[group, 1, None, None]))
    ids = np.broadcast_to(group[:, None, None], hit.shape)
    hits.append(np.stack([(py * width + px)[hit], t[hit], ids[hit], u[hit], w[hit]], -1))
  hits = np.concatenate(hits) if hits else np.zeros((0, 5))
  hits = hits[np.lexsort((hits[:, 1], hits[:, 0]))]  # By pixel, then by distance along the ray.
  first = np.ones(len(hits), bool)
  first[1:] = hits[1:, 0] != hits[:-1, 0]
  best = hits[first]
  pix = best[:, 0].astype(int)
  ids = np.full(height * width, -1)
  ids[pix] = best[:, 2].astype(int)
  bary = np.zeros((height * width, 3))
  bary[pix] = np.stack([1 - best[:, 3] - best[:, 4], best[:, 3], best[:, 4]], -1)
  depth = np.zeros(height * width)
  depth[pix] = 1e6 - best[:, 1]
  return ids.reshape(height, width), bary.reshape(height, width, 3), depth.reshape(height, width)


POSES = {'frontal': (0.0, 0.0, 0.0), 'three_quarter': (40.0, 15.0, -10.0), 'profile': (90.0, 0.0, 0.0),
         'from_below': (-25.0, -35.0, 20.0)}


@pytest.mark.parametrize('mesh_name,vertices,faces', _face_meshes(), ids=lambda x: x if isinstance(x, str) else '')
def test_matches_ray_casting_reference(mesh_name, vertices, faces):
  for pose, angles in POSES.items():
    v = _to_pixels(vertices, _rotation(*angles))
    out = raster.rasterise(v, faces, SIZE, SIZE)
    ref_id, ref_bary, ref_depth = reference_raster(v, faces, SIZE, SIZE)
    ids = np.asarray(out.triangle_id)
    same = np.mean(ids == ref_id)
    cov, ref_cov = ids >= 0, ref_id >= 0
    iou = np.sum(cov & ref_cov) / np.sum(cov | ref_cov)
    assert ref_cov.mean() > 0.1, (mesh_name, pose)  # The face fills the image: the comparison means something.
    assert same >= 0.995, (mesh_name, pose, same)
    assert iou >= 0.995, (mesh_name, pose, iou)
    agree = (ids == ref_id) & cov
    np.testing.assert_allclose(np.asarray(out.barycentric)[agree], ref_bary[agree], atol=2e-3)
    np.testing.assert_allclose(np.asarray(out.depth)[agree], ref_depth[agree], atol=2e-2)
    assert np.all(np.asarray(out.barycentric)[~cov] == 0) and np.all(np.asarray(out.depth)[~cov] == 0)


def test_big_triangles_and_off_screen_geometry():
  """A box larger than the screen (triangles far beyond the full-screen window) and a small sphere in front of it."""
  box = trimesh.creation.box(extents=(300.0, 200.0, 80.0))
  sphere = trimesh.creation.icosphere(subdivisions=2, radius=30.0)
  rot = _rotation(30.0, 20.0, 10.0)
  vb = np.asarray(box.vertices) @ rot.T + [60.3, 70.1, 0.0]
  vs = np.asarray(sphere.vertices) + [90.2, 40.7, 200.0]  # In front (larger z).
  v = np.concatenate([vb, vs]).astype(np.float32)
  f = np.concatenate([box.faces, sphere.faces + len(vb)])
  out = raster.rasterise(v, f, 96, 112)
  ref_id, _, _ = reference_raster(v, f, 96, 112)
  assert np.mean(np.asarray(out.triangle_id) == ref_id) >= 0.995
  assert np.mean(np.asarray(out.triangle_id) >= 0) > 0.9  # The box covers most of the screen.


def test_batched_equals_per_frame_and_chunking_does_not_matter():
  """A batch equals frame-by-frame calls made with tiny chunks and windows (many loop steps per level, partial last
  chunks, more levels): the same z-buffer whatever the tiling."""
  vertices, faces = _bumpy_ellipsoid()
  frames = np.stack([_to_pixels(vertices, _rotation(*a), size=64) for a in POSES.values()])
  batched = raster.rasterise(frames, faces, 64, 48)
  assert batched.triangle_id.shape == (4, 64, 48) and batched.barycentric.shape == (4, 64, 48, 3)
  for i, frame in enumerate(frames):
    single = raster.rasterise(frame, faces, 64, 48, chunk_pixels=100, min_window=2)
    np.testing.assert_array_equal(np.asarray(batched.triangle_id[i]), np.asarray(single.triangle_id))
    np.testing.assert_allclose(np.asarray(batched.barycentric[i]), np.asarray(single.barycentric), atol=1e-6)
    np.testing.assert_allclose(np.asarray(batched.depth[i]), np.asarray(single.depth), atol=1e-5)


def test_fill_rule_is_watertight_and_top_left():
  """A square of two triangles with corners on pixel centres covers exactly 8 x 8 pixels: top/left edges in,
  bottom/right edges out, and every pixel on the shared diagonal goes to exactly one triangle, in both windings."""
  v = np.array([[0.5, 0.5, 0], [8.5, 0.5, 0], [8.5, 8.5, 0], [0.5, 8.5, 0]], np.float32)
  for tris in (np.array([[0, 1, 2], [0, 2, 3]]), np.array([[0, 2, 1], [0, 3, 2]])):
    alone = [np.asarray(raster.rasterise(v, tris[k:k + 1], 12, 12).triangle_id) >= 0 for k in range(2)]
    assert np.sum(alone[0] & alone[1]) == 0
    union = alone[0] | alone[1]
    expected = np.zeros((12, 12), bool)
    expected[0:8, 0:8] = True
    np.testing.assert_array_equal(union, expected)


def test_nearest_triangle_wins_whatever_the_order():
  """Two crossing triangles (one tilted through the other): per pixel the larger z wins, in either face order."""
  v = np.array([[2, 2, 0], [30, 4, 0], [6, 28, 0],  # flat at z = 0
                [4, 6, -20], [28, 26, 20], [26, 3, 20]], np.float32)  # tilted: z from -20 to 20
  v[:, :2] += 0.137  # No pixel centre exactly on an edge (there the fill rule, not depth, decides).
  for faces in (np.array([[0, 1, 2], [3, 4, 5]]), np.array([[3, 4, 5], [0, 1, 2]])):
    out = raster.rasterise(v, faces, 32, 32)
    ref_id, _, _ = reference_raster(v, faces, 32, 32)
    np.testing.assert_array_equal(np.asarray(out.triangle_id), ref_id)
    ids = set(np.unique(ref_id).tolist())
    assert ids == {-1, 0, 1}


def test_barycentrics_are_differentiable_for_fixed_ids():
  """Reverse-mode gradients of barycentrics and depth w.r.t. the vertices match central finite differences on the
  pixels whose triangle does not change under the perturbation."""
  sphere = trimesh.creation.icosphere(subdivisions=2)  # Triangles of a few pixels: FD stays in the linear range.
  faces = np.asarray(sphere.faces)
  v = jnp.asarray(_to_pixels(np.asarray(sphere.vertices), _rotation(10.0, 5.0), size=32))
  weights = jax.random.normal(jax.random.PRNGKey(0), (32, 32, 3))
  direction = jax.random.normal(jax.random.PRNGKey(1), v.shape)
  eps = 1e-2
  ids = [np.asarray(raster.rasterise(v + s * eps * direction, faces, 32, 32).triangle_id) for s in (0, 1, -1)]
  stable = jnp.asarray((ids[0] == ids[1]) & (ids[0] == ids[2]) & (ids[0] >= 0))
  assert float(stable.mean()) > 0.3

  def loss(verts):
    r = raster.rasterise(verts, faces, 32, 32)
    return jnp.sum(jnp.where(stable[..., None], r.barycentric * weights, 0.0)) + 0.01 * jnp.sum(
        jnp.where(stable, r.depth, 0.0))

  grad = jax.grad(loss)(v)
  assert np.all(np.isfinite(np.asarray(grad))) and np.abs(np.asarray(grad)).sum() > 0
  fd = (loss(v + eps * direction) - loss(v - eps * direction)) / (2 * eps)
  np.testing.assert_allclose(float(jnp.sum(grad * direction)), float(fd), rtol=2e-2)


@pytest.mark.slow
def test_100k_triangles_at_256():
  """A 225 x 225 vertex height field (100,352 triangles) at 256 x 256: ids equal the analytic cell/diagonal ids."""
  n, h, x0, y0 = 224, 1.05371, 10.1234, 12.3713
  r, c = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing='ij')
  x, y = x0 + c * h, y0 + r * h
  z = 20 * np.sin(x / 30.0) * np.cos(y / 25.0)
  v = np.stack([x, y, z], -1).reshape(-1, 3).astype(np.float32)
  idx = (r * (n + 1) + c)[:n, :n].ravel()
  upper = np.stack([idx, idx + 1, idx + n + 2], -1)  # (r,c) (r,c+1) (r+1,c+1): above the diagonal.
  lower = np.stack([idx, idx + n + 2, idx + n + 1], -1)
  faces = np.stack([upper, lower], 1).reshape(-1, 3)  # Triangle 2k = upper of cell k, 2k+1 = lower.
  assert faces.shape[0] >= 100_000
  start = time.perf_counter()
  out = raster.rasterise(v, faces, 256, 256)
  ids = np.asarray(out.triangle_id)
  first = time.perf_counter() - start
  start = time.perf_counter()
  jax.block_until_ready(raster.rasterise(v, faces, 256, 256))
  again = time.perf_counter() - start
  py, px = np.meshgrid(np.arange(256) + 0.5, np.arange(256) + 0.5, indexing='ij')
  u, w = (px - x0) / h, (py - y0) / h
  cu, cw = np.floor(u).astype(int), np.floor(w).astype(int)
  inside = (cu >= 0) & (cu < n) & (cw >= 0) & (cw < n)
  expected = np.where(inside, 2 * (cw * n + cu) + ((u - cu) <= (w - cw)), -1)
  assert np.mean(ids == expected) >= 0.9999
  print(f'100k triangles at 256x256: first call {first:.2f} s (compile), then {again * 1e3:.1f} ms; '
        f'peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB')


def test_bad_input_raises():
  v = np.zeros((4, 3), np.float32)
  f = np.array([[0, 1, 2]])
  with pytest.raises(errors.FaceModelError, match='vertices'):
    raster.rasterise(np.zeros((4, 2), np.float32), f, 8, 8)
  with pytest.raises(errors.FaceModelError, match='faces'):
    raster.rasterise(v, np.array([[0, 1, 7]]), 8, 8)
  with pytest.raises(errors.ConfigError):
    raster.rasterise(v, f, 0, 8)
  bad = np.zeros((2, 4, 3), np.float32)
  bad[1, 2, 0] = np.nan
  with pytest.raises(errors.FaceModelError, match=r'frame\(s\) \[1\]'):
    raster.rasterise(bad, f, 8, 8)
  # Inside jit the check cannot run: the non-finite triangle is skipped, never a NaN in the output.
  out = jax.jit(lambda a: raster.rasterise(a, f, 8, 8))(jnp.asarray(bad))
  assert np.all(np.isfinite(np.asarray(out.barycentric))) and np.all(np.asarray(out.triangle_id[1]) == -1)
