"""The 3D morphable model (3DMM): file format, loader, shape synthesis and identity adaptation (paper eq. 1).

A shape is  s = mean + sum_k p_id[k] id_std[k] U_id[k] + sum_k p_exp[k] exp_std[k] U_exp[k],  so the coefficients
p_id, p_exp are in units of standard deviations (the fitting's priors and bounds are in those units too).

File format (one `.npz`, written by `save` and by every converter in `face3d.converters`):

  name               shape        dtype    meaning
  mean               (N, 3)       float32  mean shape x-bar, model units (mm for LSFM / BFM / SFM / the default),
                                           model axes: x right (subject's left), y up, z out of the face (to viewer)
  id_basis           (K_id, N, 3) float32  identity basis U_id, each component of unit L2 norm over its 3N values
  id_std             (K_id,)      float32  standard deviation of each identity component, model units, > 0
  exp_basis          (K_exp, N, 3) float32 expression basis U_exp, unit L2 norm per component (K_exp may be 0)
  exp_std            (K_exp,)     float32  standard deviation of each expression component, model units, > 0
  faces              (F, 3)       int32    triangles, 0-based vertex indices, counter-clockwise seen from +z
  landmark_indices   (L,)         int32    model vertices matching the L landmark points used for fitting
  mouth_indices      (M,)         int32    vertices of the lips (the mouth box of the mouth discriminator D_m)

Other arrays in the file are ignored. `load` raises FaceModelError naming the file and the array when an array is
missing, has the wrong rank / shape / dtype kind, holds NaN or inf, a standard deviation is not positive, or an
index is out of range. The bases need not be exactly orthonormal (FLAME's are not); converters normalise each
component to unit norm and put its length into the std.

`load_default()` gives the model the project builds itself (`face3d.default_model`): a stand-in for LSFM, which
cannot be redistributed. To use LSFM, BFM 2009/2017, FLAME or the Surrey Face Model instead, convert it once with
`face3d.converters` into an `.npz` of this layout and set `config.face3d.model` to its path (`load_from_config`).
"""
from __future__ import annotations

import functools
import os
import tempfile
import zipfile
from typing import Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

from headgan_jax.errors import FaceModelError

FLOAT_ARRAYS = ('mean', 'id_basis', 'id_std', 'exp_basis', 'exp_std')
INDEX_ARRAYS = ('faces', 'landmark_indices', 'mouth_indices')
ARRAY_NAMES = FLOAT_ARRAYS + INDEX_ARRAYS


@flax.struct.dataclass
class MorphableModel:
  """A linear 3DMM (see the module docstring for shapes and units)."""
  mean: jax.Array  # (N, 3)
  id_basis: jax.Array  # (K_id, N, 3)
  id_std: jax.Array  # (K_id,)
  exp_basis: jax.Array  # (K_exp, N, 3)
  exp_std: jax.Array  # (K_exp,)
  faces: jax.Array  # (F, 3) int32
  landmark_indices: jax.Array  # (L,) int32
  mouth_indices: jax.Array  # (M,) int32

  @property
  def num_vertices(self) -> int:
    return self.mean.shape[0]

  @property
  def num_id(self) -> int:
    return self.id_basis.shape[0]

  @property
  def num_exp(self) -> int:
    return self.exp_basis.shape[0]

  @property
  def num_landmarks(self) -> int:
    return self.landmark_indices.shape[0]


def validate_arrays(arrays: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
  """Checks the arrays of a model (names, ranks, shapes, finiteness, index ranges); returns them cast.

  Raises FaceModelError naming `source` (a file path or a description) and the offending array.
  """
  for name in ARRAY_NAMES:
    if name not in arrays:
      raise FaceModelError(f'{source}: missing array "{name}" (a 3DMM file needs {", ".join(ARRAY_NAMES)}).')
  out = {}
  for name in ARRAY_NAMES:
    a = np.asarray(arrays[name])
    if name in FLOAT_ARRAYS:
      if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise FaceModelError(f'{source}: array "{name}" has dtype {a.dtype}, expected a float type.')
      if not np.all(np.isfinite(a)):
        raise FaceModelError(f'{source}: array "{name}" contains NaN or inf values.')
      out[name] = a.astype(np.float32)
    else:
      if not np.issubdtype(a.dtype, np.integer):
        raise FaceModelError(f'{source}: array "{name}" has dtype {a.dtype}, expected an integer type.')
      out[name] = a.astype(np.int32)
  expected_rank = dict(mean=2, id_basis=3, id_std=1, exp_basis=3, exp_std=1, faces=2, landmark_indices=1,
                       mouth_indices=1)
  for name, rank in expected_rank.items():
    if out[name].ndim != rank:
      raise FaceModelError(f'{source}: array "{name}" has shape {out[name].shape}, expected {rank} dimensions.')
  n = out['mean'].shape[0]
  if out['mean'].shape[1] != 3 or n < 3:
    raise FaceModelError(f'{source}: array "mean" has shape {out["mean"].shape}, expected (N, 3) with N >= 3.')
  for kind in ('id', 'exp'):
    basis, std = out[f'{kind}_basis'], out[f'{kind}_std']
    if basis.shape[1:] != (n, 3):
      raise FaceModelError(f'{source}: array "{kind}_basis" has shape {basis.shape}, expected (K, {n}, 3) to match '
                           f'"mean" {out["mean"].shape}.')
    if std.shape != (basis.shape[0],):
      raise FaceModelError(f'{source}: array "{kind}_std" has shape {std.shape}, expected ({basis.shape[0]},) to '
                           f'match "{kind}_basis".')
    if np.any(std <= 0):
      raise FaceModelError(f'{source}: array "{kind}_std" has non-positive entries (standard deviations must be > 0).')
  if out['faces'].shape[1:] != (3,) or out['faces'].shape[0] < 1:
    raise FaceModelError(f'{source}: array "faces" has shape {out["faces"].shape}, expected (F, 3) with F >= 1.')
  for name in INDEX_ARRAYS:
    a = out[name]
    if a.size == 0 and name != 'faces':
      raise FaceModelError(f'{source}: array "{name}" is empty.')
    if a.size and (a.min() < 0 or a.max() >= n):
      raise FaceModelError(f'{source}: array "{name}" has indices outside [0, {n}) (min {a.min()}, max {a.max()}).')
  return out


def from_arrays(arrays: Mapping[str, np.ndarray], source: str = 'arrays') -> MorphableModel:
  """Builds a MorphableModel from numpy arrays after `validate_arrays`."""
  checked = validate_arrays(arrays, source)
  return MorphableModel(**{k: jnp.asarray(v) for k, v in checked.items()})


def to_arrays(model: MorphableModel) -> dict[str, np.ndarray]:
  """The model as a dict of numpy arrays (the file layout)."""
  return {name: np.asarray(getattr(model, name)) for name in ARRAY_NAMES}


def load(path: str | os.PathLike) -> MorphableModel:
  """Reads a 3DMM `.npz` (layout in the module docstring); FaceModelError on any problem, naming the file."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FaceModelError(f'{path}: 3DMM file not found.')
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
    raise FaceModelError(f'{path}: not a readable 3DMM .npz file ({e}).') from e
  return from_arrays(arrays, path)


def save(model: MorphableModel, path: str | os.PathLike) -> None:
  """Writes the model atomically (temporary file in the same folder, then os.replace)."""
  path = os.fspath(path)
  arrays = validate_arrays(to_arrays(model), path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-', suffix='.npz')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def load_default() -> MorphableModel:
  """The embedded default model (a stand-in for LSFM built by `face3d.default_model`, deterministic, ~50 ms)."""
  from headgan_jax.face3d import default_model  # Local import: default_model imports this module.
  return from_arrays(default_model.build_arrays(), 'the embedded default 3DMM')


def load_from_config(config) -> MorphableModel:
  """`config.face3d.model` if set, else the embedded default."""
  path = config.face3d.model
  return load(path) if path else load_default()


def shape(model: MorphableModel, p_id: jax.Array, p_exp: jax.Array) -> jax.Array:
  """s = mean + U_id (id_std * p_id) + U_exp (exp_std * p_exp); p_id (..., K_id), p_exp (..., K_exp) -> (..., N, 3)."""
  s = model.mean + jnp.einsum('...k,knc->...nc', p_id * model.id_std, model.id_basis)
  return s + jnp.einsum('...k,knc->...nc', p_exp * model.exp_std, model.exp_basis)


def identity_adaptation(model: MorphableModel, p_id_ref: jax.Array, p_exp_t: jax.Array) -> jax.Array:
  """Paper eq. 1: s_t = x-bar + U_id p_ref^id + U_exp p_t^exp, the driver's expression on the reference's identity.

  p_id_ref (K_id,) or (..., K_id) broadcasts against p_exp_t (..., K_exp); returns (..., N, 3).
  """
  p_id_ref = jnp.broadcast_to(p_id_ref, p_exp_t.shape[:-1] + p_id_ref.shape[-1:])
  return shape(model, p_id_ref, p_exp_t)


def landmark_model(model: MorphableModel) -> MorphableModel:
  """The model restricted to its landmark vertices (what the fitting evaluates); landmarks become 0..L-1."""
  idx = model.landmark_indices
  num_l = idx.shape[0]
  return MorphableModel(
      mean=model.mean[idx], id_basis=model.id_basis[:, idx], id_std=model.id_std,
      exp_basis=model.exp_basis[:, idx], exp_std=model.exp_std,
      faces=jnp.zeros((0, 3), jnp.int32), landmark_indices=jnp.arange(num_l, dtype=jnp.int32),
      mouth_indices=jnp.arange(num_l, dtype=jnp.int32))


def project_identity(model: MorphableModel, vertices: jax.Array) -> jax.Array:
  """Coordinates (in std units) of (vertices - mean) along each identity component: the identity-only part."""
  return jnp.einsum('...nc,knc->...k', vertices - model.mean, model.id_basis) / model.id_std


def similarity_align(source: jax.Array, target: jax.Array) -> jax.Array:
  """Umeyama: the rotation + uniform scale + translation of source (L, 3) that best matches target (L, 3)."""
  mu_s, mu_t = source.mean(0), target.mean(0)
  s, t = source - mu_s, target - mu_t
  u, sv, vt = jnp.linalg.svd(t.T @ s)
  d = jnp.sign(jnp.linalg.det(u @ vt))  # No reflections.
  fix = jnp.array([1.0, 1.0, 0.0]) + jnp.array([0.0, 0.0, 1.0]) * d
  rot = (u * fix) @ vt
  scale = jnp.sum(sv * fix) / jnp.sum(s * s)
  return scale * s @ rot.T + mu_t


@functools.partial(jax.jit, static_argnames=('iterations',))
def generalised_procrustes(points: jax.Array, iterations: int = 5) -> jax.Array:
  """Aligns every shape of points (S, L, 3) to their evolving mean by similarity transforms; returns aligned shapes.

  The mean keeps the average RMS size of the inputs, so the model units stay the landmarks' units.
  """
  centred = points - points.mean(1, keepdims=True)
  size = jnp.mean(jnp.sqrt(jnp.mean(jnp.sum(centred ** 2, -1), -1)))

  def body(reference, _):
    aligned = jax.vmap(similarity_align, in_axes=(0, None))(centred, reference)
    mean = aligned.mean(0)
    mean = mean - mean.mean(0)
    return mean * size / jnp.sqrt(jnp.mean(jnp.sum(mean ** 2, -1))), None

  reference, _ = jax.lax.scan(body, centred[0], None, length=iterations)
  return jax.vmap(similarity_align, in_axes=(0, None))(centred, reference)


def _pca_rows(samples: jax.Array, count: int, num_samples_dof: int):
  """Top principal directions (count, D) and standard deviations of centred samples (S, D)."""
  s_count, dim = samples.shape
  # The smaller of the two Gram matrices: S x S or D x D.
  if s_count <= dim:
    evals, evecs = jnp.linalg.eigh(samples @ samples.T)
    evals, evecs = evals[::-1][:count], evecs[:, ::-1][:, :count]
    dirs = (evecs.T @ samples) / jnp.sqrt(jnp.maximum(evals, 1e-30))[:, None]
  else:
    evals, evecs = jnp.linalg.eigh(samples.T @ samples)
    evals, dirs = evals[::-1][:count], evecs[:, ::-1][:, :count].T
  return dirs, jnp.sqrt(jnp.maximum(evals, 0.0) / max(num_samples_dof, 1))


def learn_from_landmarks(points, faces, num_id: int | None = None, num_exp: int | None = None,
                         mouth_indices=None, procrustes_iterations: int = 5,
                         orthogonal_expression: bool = False) -> MorphableModel:
  """A 3DMM on a landmark detector's own topology, learned by PCA as LSFM was (paper's [5]).

  points (V, T, L, 3): T frames of V videos (one person per video), in a right-handed frame with y up and z towards
  the viewer (flip image-space y and z first). After generalised Procrustes alignment (similarity transforms),
  per-clip means are the identity samples and per-frame deviations from them the expression samples; each set is
  reduced by PCA (default: all components with non-negligible variance, at most V - 1 and V (T - 1)). With
  orthogonal_expression the identity subspace is removed from the expression samples first (U_exp orthogonal to
  U_id, as in the default model: a fit cannot trade identity for expression). Off by default: learned from few
  people, the bounded identity cannot reach a new person's shape and the expression components take up the rest
  (on the fixtures, leave-one-person-out from five clips: median RMS 1.05 px without, 1.75 px with).
  faces (F, 3): the detector's triangles. mouth_indices: the detector's lip points (default: the 3 % of points that
  move most under the expression basis). Landmark indices are all L points. The model's frame is that of the first
  input shape (rotation and position; scale = the inputs' average size), as generalised Procrustes leaves it.
  """
  from headgan_jax.errors import LandmarkError
  pts = np.asarray(points)
  if pts.ndim != 4 or pts.shape[-1] != 3 or pts.shape[0] < 2 or pts.shape[1] < 2:
    raise LandmarkError(f'learn_from_landmarks: points must be (videos >= 2, frames >= 2, L, 3), got {pts.shape}.')
  bad = ~np.isfinite(pts).all(axis=(2, 3))
  if bad.any():
    v, t = np.argwhere(bad)[0]
    raise LandmarkError(f'learn_from_landmarks: video {v}, frame {t} has NaN or inf coordinates.')
  n_vid, n_frames, n_pts, _ = pts.shape
  aligned = generalised_procrustes(jnp.asarray(pts, jnp.float32).reshape(-1, n_pts, 3), procrustes_iterations)
  aligned = aligned.reshape(n_vid, n_frames, n_pts, 3)
  clip_means = aligned.mean(1)
  mean = clip_means.mean(0)
  id_samples = (clip_means - mean).reshape(n_vid, -1)
  exp_samples = (aligned - clip_means[:, None]).reshape(n_vid * n_frames, -1)
  num_id = min(num_id or n_vid - 1, n_vid - 1, 3 * n_pts)
  num_exp = min(num_exp or n_vid * (n_frames - 1), n_vid * (n_frames - 1), 3 * n_pts)
  id_dirs, id_std = _pca_rows(id_samples, num_id, n_vid - 1)
  id_keep = np.asarray(id_std > 1e-6 * max(float(id_std.max()), 1e-30))
  if orthogonal_expression:  # Expression = what identity cannot do: eq. 1 then separates them exactly.
    kept = id_dirs[id_keep]
    exp_samples = exp_samples - (exp_samples @ kept.T) @ kept
  exp_dirs, exp_std = _pca_rows(exp_samples, num_exp, n_vid * (n_frames - 1))
  # Drop directions without variance (fewer samples than requested components): a std must be > 0.
  exp_keep = np.asarray(exp_std > 1e-6 * max(float(exp_std.max()), 1e-30))
  id_basis = np.asarray(id_dirs)[id_keep].reshape(-1, n_pts, 3)
  exp_basis = np.asarray(exp_dirs)[exp_keep].reshape(-1, n_pts, 3)
  exp_std_np = np.asarray(exp_std)[exp_keep]
  if mouth_indices is None:
    var = np.einsum('k,knc->n', exp_std_np ** 2, exp_basis ** 2)
    mouth_indices = np.sort(np.argsort(var)[::-1][:max(1, int(round(0.03 * n_pts)))])
  return from_arrays(dict(mean=np.asarray(mean), id_basis=id_basis, id_std=np.asarray(id_std)[id_keep],
                          exp_basis=exp_basis, exp_std=exp_std_np, faces=np.asarray(faces),
                          landmark_indices=np.arange(n_pts), mouth_indices=np.asarray(mouth_indices)),
                     'learn_from_landmarks')
