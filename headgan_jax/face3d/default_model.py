"""The embedded default 3DMM: a stand-in for LSFM that the project builds itself, deterministically.

Why: LSFM (the paper's model), BFM and FLAME need a licence and cannot ship with the project; the Surrey Face Model
may not be committed here and its 6 emotion blendshapes cannot open a jaw. This model can speak.

What it is (model units are millimetres; axes x right, y up, z out of the face):
- Mean shape: a height field z = f(x, y) over a rounded face outline (150 x 200 mm) sampled on a regular grid
  with `GRID_STEP` mm spacing (3954 vertices, 7596 triangles): curved forehead and cheeks, brow ridge, eye sockets
  with eyeball bulges, nose bridge, tip and wings, cheekbones, lips, chin. The lips meet along a MOUTH SLIT: the
  vertices on the mouth line between the two mouth corners exist twice, one copy used by the upper-lip triangles
  and one by the lower-lip triangles, so the lips coincide at rest and part when the jaw opens. The mesh is an open
  mask (no back of the head, no inner mouth: an open mouth shows what is behind it, as LSFM's does).
- Identity basis U_id (40 components): PCA of an analytic population - semantic deformations (face width, height,
  depth, lower-face and forehead height, nose length / width / protrusion / bridge / deviation, jaw width, chin
  height and protrusion, brow height and depth, cheek fullness, cheekbones, eye spacing / depth / height, mouth
  height, forehead slope and flatness, jaw-line asymmetry) plus smooth Legendre-polynomial
  fields P_i(x) P_j(y) (1 <= i + j <= 3) along each axis, each with a plausible 1-std magnitude in mm. Rigid motion
  and uniform scale are projected out first (the camera owns them). All are smooth, so identity never parts the
  lips. PCA gives orthonormal components and their standard deviations (mm).
- Expression basis U_exp (24 components, `EXPRESSION_NAMES`): jaw open (a linearised rotation of the lower face
  about a jaw axis behind the face, 10 degrees per std; the lower-lip copies follow the jaw, the upper-lip copies
  stay), jaw sideways, lip pucker, funnel, stretch, smile, mouth corners down, upper-lip raise, lower-lip depress,
  lips sideways, chin raise, cheek puff, nose wrinkle, brows up, frown, eyes close, squint, and
  asymmetric (left minus right) variants of stretch, smile, lip raise / depress, cheek puff, brows and eyes. The
  identity subspace is projected out of them (so U_exp is orthogonal to U_id and eq. 1 separates identity from
  expression exactly), then they are Gram-Schmidt-orthonormalised in that order; a component's std is the length
  of its orthogonalised field, so +1 std of component 0 parts the lips by about 13 mm. (Orthogonality to the
  smooth identity basis leaves some expressions a small global component, e.g. jaw open lifts the forehead by
  ~2 mm per std; the lips, chin and cheeks carry the movement.)
- Landmarks: a dense set of 1854 vertices (the paper fits ~1K regressed 3D points): a checkerboard half of the
  front-face grid (inside 90 % of the outline) plus both copies of every mouth-slit vertex. Half the grid rather
  than a quarter: with 0.5-pixel landmark noise the small expression components (lip raise, chin raise, nose
  wrinkle) need that many points to be recovered to ~10 %. Mouth indices: the 238 vertices of the lips region (an
  ellipse 64 x 28 mm around the mouth).

Built with numpy in about 0.1-0.3 s, identical every time (no randomness, no cache needed).

The real LSFM (or another licensed model) plugs in through `face3d.converters` -> `.npz` -> config.face3d.model.
"""
from __future__ import annotations

import numpy as np

GRID_STEP = 2.5  # mm between grid vertices.
MOUTH_Y = -55.0  # Height of the mouth line (mm).
MOUTH_HALF_WIDTH = 25.0  # Mouth corners at x = +-MOUTH_HALF_WIDTH.
JAW_PIVOT = (-20.0, -80.0)  # (y, z) of the jaw's rotation axis (parallel to x), roughly at the ears.
NUM_ID = 40

EXPRESSION_NAMES = (
    'jaw_open', 'jaw_sideways', 'lip_pucker', 'lip_funnel', 'lip_stretch', 'lip_stretch_asymmetric', 'smile',
    'smile_asymmetric', 'mouth_corners_down', 'upper_lip_raise', 'upper_lip_raise_asymmetric', 'lower_lip_depress',
    'lower_lip_depress_asymmetric', 'lips_sideways', 'chin_raise', 'cheek_puff', 'cheek_puff_asymmetric',
    'nose_wrinkle', 'brows_up', 'brows_asymmetric', 'frown', 'eyes_close', 'eyes_close_asymmetric', 'squint')


def _gauss(x, y, cx, cy, sx, sy):
  return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _sym_gauss(x, y, cx, cy, sx, sy):
  """A pair of Gaussian bumps mirrored about x = 0."""
  return _gauss(x, y, cx, cy, sx, sy) + _gauss(x, y, -cx, cy, sx, sy)


def _sigmoid(t):
  return 0.5 * (1.0 + np.tanh(0.5 * t))


def _smoothstep(a, b, t):
  u = np.clip((t - a) / (b - a), 0.0, 1.0)
  return u * u * (3 - 2 * u)


def surface_depth(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """z = f(x, y) of the mean face, mm."""
  z = -0.006 * x ** 2 - 1.2e-6 * x ** 4 - 0.0025 * (y - 10.0) ** 2
  z += 10.0 * _gauss(x, y, 0, 15, 7, 28) + 18.0 * _gauss(x, y, 0, -17, 9, 10)  # Nose bridge and tip.
  z += 6.0 * _sym_gauss(x, y, 14, -24, 6, 6) - 3.0 * _gauss(x, y, 0, -30, 8, 3)  # Nose wings, below the tip.
  z += 6.0 * _sym_gauss(x, y, 32, 38, 18, 7)  # Brow ridge.
  z += -12.0 * _sym_gauss(x, y, 33, 20, 13, 8) + 5.0 * _sym_gauss(x, y, 33, 20, 7, 4)  # Eye sockets, eyeballs.
  z += 6.0 * _sym_gauss(x, y, 42, -12, 15, 16)  # Cheekbones / cheeks.
  z += 6.0 * _gauss(x, y, 0, MOUTH_Y + 5, 20, 5) + 6.0 * _gauss(x, y, 0, MOUTH_Y - 6, 18, 5)  # Upper, lower lip.
  z += -3.0 * _gauss(x, y, 0, MOUTH_Y - 17, 18, 4) + 8.0 * _gauss(x, y, 0, -92, 20, 12)  # Chin groove, chin.
  return z


def _inside(x, y, margin=1.0):
  """Rounded face outline (a superellipse, narrower towards the chin)."""
  yy = (y + 5.0) / 100.0
  half_w = 75.0 * np.where(yy < 0, 1.0 - 0.18 * yy ** 2, 1.0)
  return np.abs(x / half_w) ** 2.5 + np.abs(yy) ** 2.5 <= margin


def build_mesh():
  """Vertices (N, 3), faces (F, 3), grid (row, col) per vertex, slit masks (upper copy, lower copy)."""
  h = GRID_STEP
  cols = np.arange(-32, 33)  # x = col * h
  rows = np.arange(int(np.floor((-106 - MOUTH_Y) / h)), int(np.ceil((96 - MOUTH_Y) / h)) + 1)  # y = MOUTH_Y + row h
  cc, rr = np.meshgrid(cols, rows)
  gx, gy = cc * h, MOUTH_Y + rr * h
  inside = _inside(gx, gy)
  r0, c0 = np.meshgrid(np.arange(len(rows) - 1), np.arange(len(cols) - 1), indexing='ij')
  r0, c0 = r0.ravel(), c0.ravel()
  ok = inside[r0, c0] & inside[r0, c0 + 1] & inside[r0 + 1, c0] & inside[r0 + 1, c0 + 1]
  r0, c0 = r0[ok], c0[ok]
  inside = np.zeros_like(inside)  # Keep only grid points that belong to a whole square.
  for dr, dc in ((0, 0), (0, 1), (1, 0), (1, 1)):
    inside[r0 + dr, c0 + dc] = True
  index = -np.ones(inside.shape, np.int64)
  index[inside] = np.arange(inside.sum())
  slit = (rr == 0) & (np.abs(gx) < MOUTH_HALF_WIDTH - 1e-6) & inside
  lower_index = index.copy()
  lower_index[slit] = inside.sum() + np.arange(slit.sum())
  a = index[r0, c0]
  b = index[r0, c0 + 1]
  # Squares just below the mouth line take the lower-lip copies of the slit vertices on their top edge.
  below_slit = rows[r0 + 1] == 0
  c = np.where(below_slit, lower_index[r0 + 1, c0 + 1], index[r0 + 1, c0 + 1])
  d = np.where(below_slit, lower_index[r0 + 1, c0], index[r0 + 1, c0])
  faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)], 0)
  vx, vy = gx[inside], gy[inside]
  sx, sy = gx[slit], gy[slit]
  x = np.concatenate([vx, sx])
  y = np.concatenate([vy, sy])
  verts = np.stack([x, y, surface_depth(x, y)], 1)
  n_main = inside.sum()
  upper = np.zeros(len(x), bool)
  upper[index[slit]] = True
  lower = np.zeros(len(x), bool)
  lower[n_main:] = True
  grid_rc = np.concatenate([np.stack([rr[inside], cc[inside]], 1), np.stack([rr[slit], cc[slit]], 1)])
  return verts, faces.astype(np.int64), grid_rc, upper, lower


def _orthonormal_rows(fields: np.ndarray, tol: float = 1e-9) -> np.ndarray:
  """Orthonormal basis (K', D) of the row span of (K, D) fields (via the small K x K Gram matrix: fast)."""
  evals, evecs = np.linalg.eigh(fields @ fields.T)
  keep = evals > tol * evals.max()
  return (evecs[:, keep] / np.sqrt(evals[keep])).T @ fields


def _remove_span(fields: np.ndarray, basis: np.ndarray) -> np.ndarray:
  return fields - (fields @ basis.T) @ basis


def rigid_fields(verts: np.ndarray, centre: np.ndarray | None = None) -> np.ndarray:
  """(7, N, 3): translations, infinitesimal rotations about the centre (default the centroid) and uniform scaling."""
  c = verts - (verts.mean(0) if centre is None else centre)
  eye = np.eye(3)
  fields = [np.broadcast_to(eye[k], c.shape) for k in range(3)] + [np.cross(eye[k], c) for k in range(3)] + [c]
  return np.stack(fields)


def _split(verts, upper, lower):
  """Per-vertex helpers: coordinates, side of the mouth line (+1 upper lip side, -1 lower), sign of x."""
  x, y, z = verts.T
  above = (y > MOUTH_Y + 1e-6) | upper
  below = (y < MOUTH_Y - 1e-6) | lower
  return x, y, z, above.astype(float), below.astype(float)


def identity_fields(verts, upper, lower) -> np.ndarray:
  """(K, N, 3) identity deformations, each a plausible 1-std change in mm."""
  x, y, z, above, below = _split(verts, upper, lower)
  zr = z - z.mean()
  g, sg, sgn = _gauss, _sym_gauss, np.sign(x)
  f = []

  def add(dx=0.0, dy=0.0, dz=0.0):
    f.append(np.stack(np.broadcast_arrays(dx + 0 * x, dy + 0 * x, dz + 0 * x), 1))

  add(dx=0.05 * x)  # Face width.
  add(dy=0.05 * (y + 5))  # Face height.
  add(dz=0.08 * zr)  # Face depth.
  add(dy=0.08 * np.minimum(y + 20, 0))  # Lower-face height.
  add(dy=0.06 * np.maximum(y - 30, 0))  # Forehead height.
  add(dy=-4 * g(x, y, 0, -17, 10, 10))  # Nose length.
  add(dx=0.25 * x * g(x, y, 0, -20, 14, 10))  # Nose width.
  add(dz=5 * g(x, y, 0, -10, 8, 20))  # Nose protrusion.
  add(dz=3 * g(x, y, 0, 20, 6, 15))  # Nose bridge.
  add(dx=3 * g(x, y, 0, -5, 10, 25))  # Crooked nose.
  add(dx=0.08 * x * _sigmoid((-40 - y) / 10))  # Jaw width.
  add(dy=-4 * g(x, y, 0, -92, 25, 15))  # Chin height.
  add(dz=4 * g(x, y, 0, -92, 20, 12))  # Chin protrusion.
  add(dy=3 * sg(x, y, 32, 38, 18, 8))  # Brow height.
  add(dz=3 * sg(x, y, 32, 38, 18, 7))  # Brow depth.
  add(dx=2 * sgn * sg(x, y, 45, -25, 15, 15), dz=4 * sg(x, y, 45, -25, 15, 15))  # Cheek fullness.
  add(dz=3 * sg(x, y, 50, 0, 12, 10))  # Cheekbones.
  add(dx=3 * sgn * sg(x, y, 33, 20, 15, 10))  # Eye spacing.
  add(dz=-3 * sg(x, y, 33, 20, 12, 8))  # Eye depth.
  add(dy=2.5 * sg(x, y, 33, 20, 15, 10))  # Eye height.
  add(dy=3 * g(x, y, 0, MOUTH_Y, 30, 12))  # Mouth height on the face.
  add(dz=-0.1 * np.maximum(y - 30, 0))  # Forehead slope.
  add(dy=0.03 * x * _sigmoid((-30 - y) / 10))  # Asymmetric jaw line.
  add(dz=0.04 * np.abs(x) * _sigmoid((y - 40) / 10))  # Forehead flatness.
  px = np.polynomial.legendre.legval(x / 75.0, np.eye(4))  # (4, N) P_0..P_3
  py = np.polynomial.legendre.legval((y + 5) / 100.0, np.eye(4))
  for i in range(4):
    for j in range(4):
      if 1 <= i + j <= 3:
        for axis in range(3):
          d = [0.0, 0.0, 0.0]
          d[axis] = 2.0 * px[i] * py[j]
          add(*d)
  return np.stack(f)


def expression_fields(verts, upper, lower) -> np.ndarray:
  """(len(EXPRESSION_NAMES), N, 3) expression deformations, each a 1-std movement in mm."""
  x, y, z, above, below = _split(verts, upper, lower)
  g, sg, sgn = _gauss, _sym_gauss, np.sign(x)
  pos, neg = (x > 0).astype(float), (x < 0).astype(float)
  lips = g(x, y, 0, MOUTH_Y, 18, 8)
  up_lip = g(x, y, 0, MOUTH_Y + 3, 18, 6) * above
  low_lip = g(x, y, 0, MOUTH_Y - 3, 18, 6) * below
  corners = sg(x, y, MOUTH_Y * 0 + MOUTH_HALF_WIDTH, MOUTH_Y, 9, 9)
  # Jaw weight: 1 below the mouth line, 0 above; sharp at the lips, soft over the cheeks.
  soft = 0.8 + 10.0 * _smoothstep(20.0, 45.0, np.abs(x))
  jaw = _sigmoid((MOUTH_Y - y) / soft)
  jaw = np.where(upper, 0.0, np.where(lower, 1.0, jaw))
  angle = np.deg2rad(10.0)
  py, pz = JAW_PIVOT
  cheek = sg(x, y, 40, -40, 14, 14)
  brow = sg(x, y, 32, 38, 20, 10)
  lid = sg(x, y, 33, 24, 12, 4)
  fields = {}

  def put(name, dx=0.0, dy=0.0, dz=0.0):
    fields[name] = np.stack(np.broadcast_arrays(dx + 0 * x, dy + 0 * x, dz + 0 * x), 1)

  put('jaw_open', dy=-angle * (z - pz) * jaw, dz=angle * (y - py) * jaw)
  put('jaw_sideways', dx=4 * jaw)
  put('lip_pucker', dx=-0.25 * x * lips, dz=5 * lips)
  put('lip_funnel', dy=3 * (above - below) * g(x, y, 0, MOUTH_Y, 12, 5), dz=4 * lips)
  put('lip_stretch', dx=0.2 * x * g(x, y, 0, MOUTH_Y, 30, 10), dz=-2 * lips)
  put('lip_stretch_asymmetric', dx=0.2 * x * g(x, y, 0, MOUTH_Y, 30, 10) * (pos - neg))
  put('smile', dx=3 * sgn * corners, dy=4 * corners + 2 * sg(x, y, 35, -25, 12, 12), dz=-2 * corners)
  put('smile_asymmetric', dx=3 * sgn * corners * (pos - neg), dy=4 * corners * (pos - neg))
  put('mouth_corners_down', dx=-1 * sgn * corners, dy=-4 * corners)
  put('upper_lip_raise', dy=4 * up_lip, dz=1 * up_lip)
  put('upper_lip_raise_asymmetric', dy=4 * up_lip * (pos - neg))
  put('lower_lip_depress', dy=-4 * low_lip, dz=1 * low_lip)
  put('lower_lip_depress_asymmetric', dy=-4 * low_lip * (pos - neg))
  put('lips_sideways', dx=4 * g(x, y, 0, MOUTH_Y, 22, 10))
  put('chin_raise', dy=3 * g(x, y, 0, -85, 20, 14) * below, dz=2 * low_lip)
  put('cheek_puff', dx=3 * sgn * cheek, dz=6 * cheek)
  put('cheek_puff_asymmetric', dx=3 * sgn * cheek * (pos - neg), dz=6 * cheek * (pos - neg))
  put('nose_wrinkle', dy=2.5 * sg(x, y, 12, -15, 8, 10), dz=-1 * g(x, y, 0, 5, 8, 10))
  put('brows_up', dy=5 * brow + 2 * g(x, y, 0, 60, 40, 20))
  put('brows_asymmetric', dy=5 * brow * (pos - neg))
  put('frown', dx=-2 * sgn * sg(x, y, 14, 34, 10, 8), dy=-3 * sg(x, y, 14, 34, 10, 8))
  put('eyes_close', dy=-4 * lid + 1 * sg(x, y, 33, 16, 12, 3))
  put('eyes_close_asymmetric', dy=(-4 * lid + 1 * sg(x, y, 33, 16, 12, 3)) * (pos - neg))
  put('squint', dy=2 * sg(x, y, 33, 15, 14, 5) + 2 * sg(x, y, 38, 0, 12, 8))
  return np.stack([fields[name] for name in EXPRESSION_NAMES])


def _gram_schmidt(fields: np.ndarray):
  """Orthonormal rows in the given order and the length of each orthogonalised field (its std).

  Gram-Schmidt of the rows equals L^-1 fields with L the Cholesky factor of the Gram matrix.
  """
  chol = np.linalg.cholesky(fields @ fields.T)
  return np.linalg.solve(chol, fields), np.diag(chol).copy()


def _pca(fields: np.ndarray, k: int):
  """Top-k principal directions (k, D) and standard deviations of samples z @ fields, z ~ N(0, I)."""
  evals, evecs = np.linalg.eigh(fields @ fields.T)
  order = np.argsort(evals)[::-1][:k]
  std = np.sqrt(evals[order])
  return (evecs[:, order] / std).T @ fields, std


def landmark_and_mouth_indices(verts, grid_rc, upper, lower):
  x, y = verts[:, 0], verts[:, 1]
  front = _inside(x, y, margin=0.9)
  dense = front & ((grid_rc[:, 0] + grid_rc[:, 1]) % 2 == 0)
  landmarks = np.flatnonzero(dense | upper | lower)
  mouth = np.flatnonzero(((x / 32.0) ** 2 + ((y - MOUTH_Y) / 14.0) ** 2) <= 1.0)
  return landmarks, mouth


def build_arrays(extra_points: np.ndarray | None = None, extra_upper: np.ndarray | None = None,
                 extra_lower: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """All arrays of the default model in the layout of `face3d.morphable` (float32 / int32).

  extra_points (P, 3), mm in the mesh's frame (before centring): more vertices, appended after the mesh's and used by
  no triangle, at which every basis is evaluated exactly - the analytic fields are functions of position - with the
  same combinations (rigid removal, PCA, Gram-Schmidt) as the mesh, all computed on the mesh alone: the model with
  extra points is the model without them, sampled at more places. extra_upper / extra_lower (P,) bool mark points
  on the upper / lower lip (they decide which side of the mouth slit a point moves with). A tracker uses this to
  put a landmark detector's points on the model (`tracking.face_model`).
  """
  verts, faces, grid_rc, upper, lower = build_mesh()
  n = len(verts)
  num_extra = 0 if extra_points is None else len(extra_points)
  all_verts, all_upper, all_lower = verts, upper, lower
  if num_extra:
    no = np.zeros(num_extra, bool)
    all_verts = np.concatenate([verts, np.asarray(extra_points, np.float64).reshape(-1, 3)])
    all_upper = np.concatenate([upper, no if extra_upper is None else np.asarray(extra_upper, bool)])
    all_lower = np.concatenate([lower, no if extra_lower is None else np.asarray(extra_lower, bool)])
  centre = verts.mean(0)
  mesh = lambda f: f[:, :n].reshape(len(f), -1)
  both = lambda f: f.reshape(len(f), -1)
  # Identity: smooth deformations without rigid motion / uniform scale (the camera owns those), PCA-ordered.
  rigid_all = rigid_fields(all_verts, centre)
  rigid_gram = mesh(rigid_all) @ mesh(rigid_all).T
  evals, evecs = np.linalg.eigh(rigid_gram)
  keep = evals > 1e-9 * evals.max()
  rigid = (evecs[:, keep] / np.sqrt(evals[keep])).T @ both(rigid_all)  # Orthonormal on the mesh.
  id_fields = identity_fields(all_verts, all_upper, all_lower)
  id_raw = both(id_fields) - (mesh(id_fields) @ rigid[:, :3 * n].T) @ rigid
  evals, evecs = np.linalg.eigh(id_raw[:, :3 * n] @ id_raw[:, :3 * n].T)
  order = np.argsort(evals)[::-1][:NUM_ID]
  id_std = np.sqrt(evals[order])
  id_basis = (evecs[:, order] / id_std).T @ id_raw
  id_basis *= np.sign(id_basis[:, :3 * n].sum(1, keepdims=True) + 1e-12)  # Deterministic signs.
  # Expression: what identity cannot do (eq. 1 separates them exactly), Gram-Schmidt in EXPRESSION_NAMES order.
  # Identity fields are smooth, so the lips' split (the mouth opening) survives the projection intact.
  exp_fields = both(expression_fields(all_verts, all_upper, all_lower))
  exp_raw = exp_fields - (exp_fields[:, :3 * n] @ id_basis[:, :3 * n].T) @ id_basis
  chol = np.linalg.cholesky(exp_raw[:, :3 * n] @ exp_raw[:, :3 * n].T)
  exp_basis, exp_std = np.linalg.solve(chol, exp_raw), np.diag(chol).copy()
  landmarks, mouth = landmark_and_mouth_indices(verts, grid_rc, upper, lower)
  total = n + num_extra
  return dict(
      mean=(all_verts - centre).astype(np.float32),
      id_basis=id_basis.reshape(NUM_ID, total, 3).astype(np.float32), id_std=id_std.astype(np.float32),
      exp_basis=exp_basis.reshape(-1, total, 3).astype(np.float32), exp_std=exp_std.astype(np.float32),
      faces=faces.astype(np.int32), landmark_indices=landmarks.astype(np.int32), mouth_indices=mouth.astype(np.int32))
