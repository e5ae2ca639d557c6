"""3DMMs whose landmarks are the face detector's 468 points (`tracking.facemesh`): what the tracker fits.

Three kinds, one format (`face3d.morphable`); `config.face3d.model` chooses: '' = the learned default (LEARNED_MODEL),
'data_free' (DATA_FREE) = the data-free model, else the path of a model file.

- **Learned** (`learn_model`): a model on the detector's own mesh (468 vertices, 852 triangles), learned by PCA from
  tracked clips the way LSFM was learned (`morphable.learn_from_landmarks`: Procrustes, per-clip means = identity
  samples, per-frame deviations = expression samples), from the detector's 3-D points. This is what meets the
  issue's figures on real footage: `python -m headgan_jax.tracking.track learn CLIPS... --out model.npz`, then
  config.face3d.model = model.npz. The tracker's default is one such model, committed beside this module
  (LEARNED_MODEL, ~0.4 MB; its clips, licences and sha256 in LEARNED_MODEL_INFO), learned by
  `scripts/learn_face_model.py` from the fixture clips whose licences allow it (not the demo set's held-out people).
- **Data-free** (`detector_default_model`, config.face3d.model = 'data_free'): the project's own default 3DMM
  (`face3d.default_model`) sampled
  at the detector's points. The correspondence is made by the project's own code from redistributable inputs: the
  default mean face is rendered (shaded, eyes / brows / lips painted at the model's own feature positions), the
  detector (Apache-2.0) is run on that render, and each point is put on the model's surface under it (both lip
  contours on their side of the mouth slit). The mean at the points is the detector's own 3-D answer on that render
  (its style of placing points); every basis is evaluated exactly at the surface points (`build_arrays(extra...)`).
  Works with no data at all, but fits real faces less well (hand-made shape space): see the README's figures.
- **Converted** (LSFM / BFM / FLAME / SFM via `face3d.converters`): config.track.landmark_map names a text file with
  468 lines, line i = the model vertex under detector point i, or -1 where the model has none (e.g. no inner
  mouth); the fit uses the mapped points only (`apply_landmark_map`).
"""
from __future__ import annotations

import hashlib
import os

import jax.numpy as jnp
import numpy as np

from headgan_jax.tracking import facemesh as fm
from headgan_jax.errors import FaceModelError, LandmarkError
from headgan_jax.face3d import default_model as dm
from headgan_jax.face3d import morphable

LEARNED_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'learned_face_model.npz')
LEARNED_MODEL_INFO = os.path.splitext(LEARNED_MODEL)[0] + '.json'  # Its clips, licences, settings and sha256.
DATA_FREE = 'data_free'  # config.face3d.model value selecting `detector_default_model`.
RENDER_SIZE = 384
RENDER_SCALE = 1.45  # Pixels per mm: the 150 mm wide face fills ~57 % of the render, like a face photo.


def model_fingerprint(setting: str) -> str:
  """What config.face3d.model = `setting` fits with, for cache keys: the learned default's sha256 ('' ), 'data_free',
  or the path given."""
  if setting:
    return setting
  try:
    with open(LEARNED_MODEL, 'rb') as f:
      return 'learned:' + hashlib.sha256(f.read()).hexdigest()[:16]
  except OSError:
    return 'learned:missing'  # load_learned_default says so when the tracker starts.


def load_learned_default() -> morphable.MorphableModel:
  """The committed learned model (LEARNED_MODEL); FaceModelError naming the file and how to remake it."""
  if not os.path.isfile(LEARNED_MODEL):
    raise FaceModelError(f'{LEARNED_MODEL}: the learned default 3DMM is missing (a partial checkout?): restore it '
                         f'from git, run scripts/learn_face_model.py, or set config.face3d.model = {DATA_FREE!r}.')
  return morphable.load(LEARNED_MODEL)


def lip_chains(topology: fm.MeshTopology) -> dict[str, np.ndarray]:
  """The four lip contours of the mesh as point sequences from corner to corner: 'outer_a', 'outer_b', 'inner_a',
  'inner_b' in mediapipe's list order (which of a / b is upper is decided by geometry, see `lip_sides`)."""
  edges = topology.lips
  if len(edges) % 4:
    raise FaceModelError(f'the mesh topology has {len(edges)} lip edges, expected 4 chains of equal length.')
  k = len(edges) // 4
  chains = [np.concatenate([edges[i * k:(i + 1) * k, 0], edges[(i + 1) * k - 1, 1:]]) for i in range(4)]
  return dict(zip(('outer_a', 'outer_b', 'inner_a', 'inner_b'), chains))


def lip_sides(topology: fm.MeshTopology, points_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
  """(upper mask (468,), lower mask (468,), upper inner mid point, lower inner mid point) from any face's image
  points (y down): of each pair of contours the one whose middle lies higher in the image is the upper lip."""
  chains = lip_chains(topology)
  upper = np.zeros(fm.NUM_POINTS, bool)
  lower = np.zeros(fm.NUM_POINTS, bool)
  mids = {}
  for kind in ('outer', 'inner'):
    a, b = chains[f'{kind}_a'], chains[f'{kind}_b']
    ya, yb = points_xy[a[1:-1], 1].mean(), points_xy[b[1:-1], 1].mean()
    up, low = (a, b) if ya < yb else (b, a)
    upper[up[1:-1]] = True  # Corners belong to neither lip.
    lower[low[1:-1]] = True
    mids[kind] = (up[len(up) // 2], low[len(low) // 2])
  return upper, lower, int(mids['inner'][0]), int(mids['inner'][1])


def lip_points(topology: fm.MeshTopology) -> np.ndarray:
  """Sorted indices of every point on a lip contour (the mouth box follows them)."""
  return np.unique(topology.lips)


def render_default_face(size: int = RENDER_SIZE, scale: float = RENDER_SCALE) -> tuple[np.ndarray, tuple]:
  """The default model's mean face, frontal and orthographic, Lambert-shaded, with skin, lips, eyes and brows
  painted at the model's own feature positions, on a grey background: (image uint8, (scale, tx, ty)) where pixel
  (u, v) = (scale x + tx, -scale y + ty) for model (x, y) in mm (before centring)."""
  tx, ty = size / 2, size / 2 - 5 * scale
  v, u = np.mgrid[0:size, 0:size] + 0.5
  x, y = (u - tx) / scale, -(v - ty) / scale
  covered = dm._inside(x, y)  # The mesh's outline (it is a height field over it: nothing to rasterise).
  eps = 0.01
  z = dm.surface_depth(x, y)
  normal = np.stack([-(dm.surface_depth(x + eps, y) - z) / eps, -(dm.surface_depth(x, y + eps) - z) / eps,
                     np.ones_like(z)], -1)
  normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
  light = np.array([0.3, 0.4, 1.0]) / np.linalg.norm([0.3, 0.4, 1.0])
  shade = np.clip(normal @ light, 0, 1) * 0.75 + 0.25
  colour = np.broadcast_to(np.array([205.0, 160.0, 135.0]), (size, size, 3)).copy()  # Skin.
  mouth_y, mouth_w = dm.MOUTH_Y, dm.MOUTH_HALF_WIDTH
  colour[((x / (mouth_w - 1)) ** 2 + ((y - mouth_y) / 7) ** 2) <= 1] = [170, 80, 80]  # Lips.
  colour[(np.abs(y - mouth_y) < 0.8) & (np.abs(x) < mouth_w - 1)] = [60, 20, 20]  # The slit between them.
  for ex in (-33.0, 33.0):  # Eyes (sockets of surface_depth at x = +-33, y = 20) and brows above them.
    eye = (((x - ex) / 13) ** 2 + ((y - 20) / 5.5) ** 2) <= 1
    colour[eye] = [235, 235, 235]
    colour[eye & (((x - ex) ** 2 + (y - 20) ** 2) <= 5.5 ** 2)] = [70, 50, 40]
    colour[(((x - ex) / 17) ** 2 + ((y - 35 + 0.004 * (x - ex) ** 2) / 2.5) ** 2) <= 1] = [90, 60, 40]
  image = colour * shade[..., None]
  image[~covered] = [100, 110, 120]
  return np.clip(image, 0, 255).astype(np.uint8), (scale, tx, ty)


def detector_default_model(mesh: fm.FaceMesh) -> morphable.MorphableModel:
  """The data-free default on the detector's topology (module docstring): 468 vertices, 852 triangles."""
  image, (scale, tx, ty) = render_default_face()
  det = mesh.detect(image[None])
  if det.count[0] == 0:
    raise FaceModelError('the face detector finds no face on the render of the default 3DMM.')
  points, presence = mesh.landmarks(image[None], det.boxes[:, 0], det.keypoints[:, 0])
  points = points[0]
  upper, lower, _, _ = lip_sides(mesh.topology, points[:, :2])
  x, y = (points[:, 0] - tx) / scale, -(points[:, 1] - ty) / scale
  # A lip point drawn across the slit still moves with its own lip.
  y = np.where(upper, np.maximum(y, dm.MOUTH_Y), np.where(lower, np.minimum(y, dm.MOUTH_Y), y))
  surface = np.stack([x, y, dm.surface_depth(x, y)], 1)
  arrays = dm.build_arrays(surface, upper, lower)
  n = len(arrays['mean']) - fm.NUM_POINTS
  mean = np.stack([x, y, points[:, 2] / scale], 1)  # The detector's own 3-D answer, in mm.
  mean[:, 2] += (surface[:, 2] - mean[:, 2]).mean()
  centre = surface[0] - arrays['mean'][n]  # build_arrays centres on the mesh's centroid.
  return morphable.from_arrays(dict(
      mean=mean - centre, id_basis=arrays['id_basis'][:, n:], id_std=arrays['id_std'],
      exp_basis=arrays['exp_basis'][:, n:], exp_std=arrays['exp_std'], faces=mesh.topology.triangles,
      landmark_indices=np.arange(fm.NUM_POINTS), mouth_indices=lip_points(mesh.topology)),
      'the default 3DMM on the face detector\'s points')


def learn_model(points: list[np.ndarray], topology: fm.MeshTopology, num_id: int | None = None,
                num_exp: int | None = 40, frames_per_clip: int = 120,
                orthogonal_expression: bool = False) -> morphable.MorphableModel:
  """A 3DMM on the detector's mesh learned from clips: points[i] (T_i, 468, 3) in image pixels (x right, y down,
  z towards the camera, as `FaceMesh.landmarks` / `ClipTrack.points3d` give them), one person per clip, >= 2 clips.
  Each clip contributes `frames_per_clip` frames evenly spread (clips of other lengths weigh the same)."""
  if len(points) < 2:
    raise LandmarkError(f'learn_model: needs clips of at least 2 different people, got {len(points)} clip(s).')
  picked = []
  for i, p in enumerate(points):
    p = np.asarray(p, np.float32)
    if p.ndim != 3 or p.shape[1:] != (fm.NUM_POINTS, 3) or len(p) < 2:
      raise LandmarkError(f'learn_model: clip {i} has points of shape {p.shape}, expected (T >= 2, 468, 3).')
    picked.append(p[np.linspace(0, len(p) - 1, frames_per_clip).round().astype(int)])
  model_frame = np.stack(picked) * np.array([1.0, -1.0, 1.0], np.float32)  # Image y down -> model y up.
  return morphable.learn_from_landmarks(model_frame, topology.triangles, num_id=num_id, num_exp=num_exp,
                                        mouth_indices=lip_points(topology),
                                        orthogonal_expression=orthogonal_expression)


def read_landmark_map(path: str | os.PathLike, num_vertices: int) -> np.ndarray:
  """(468,) int32 from a text file of 468 integers (model vertex or -1); FaceModelError naming the file otherwise."""
  path = os.fspath(path)
  try:
    table = np.loadtxt(path, dtype=np.int64, comments='#', ndmin=1)
  except (OSError, ValueError) as e:
    raise FaceModelError(f'{path}: not a readable landmark map (468 integers, one per line): {e}') from e
  if table.shape != (fm.NUM_POINTS,):
    raise FaceModelError(f'{path}: landmark map has {table.size} entries, expected {fm.NUM_POINTS} (one per '
                         f'detector point, -1 where the model has none).')
  if table.max() >= num_vertices or table.min() < -1:
    raise FaceModelError(f'{path}: landmark map has entries outside [-1, {num_vertices}) for a model of '
                         f'{num_vertices} vertices.')
  if (table >= 0).sum() < 6:
    raise FaceModelError(f'{path}: landmark map maps only {(table >= 0).sum()} points; a fit needs at least 6.')
  return table.astype(np.int32)


def apply_landmark_map(model: morphable.MorphableModel, table: np.ndarray
                       ) -> tuple[morphable.MorphableModel, np.ndarray]:
  """(the model with landmark_indices = the mapped vertices, the detector point indices they belong to)."""
  used = np.flatnonzero(table >= 0).astype(np.int32)
  return model.replace(landmark_indices=jnp.asarray(table[used])), used
