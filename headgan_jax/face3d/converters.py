"""Converters from public 3DMMs a user may have licensed into the project's `.npz` format (face3d.morphable).

Each `convert_*` returns a validated MorphableModel (write it with `morphable.save`, or use the command line:
`python -m headgan_jax.face3d.converters sfm sfm_shape_3448.bin --blendshapes expression_blendshapes_3448.bin
--ibug ibug_to_sfm.txt --out sfm.npz`), then set config.face3d.model to the `.npz`. Layouts read:

- LSFM (`.mat`, menpo's release): `mean` (3N,) or (1, 3N), `components` (K, 3N) orthonormal rows (or (3N, K)),
  `eigenvalues` (K,) variances, `trilist` (F, 3) 0-based; mm. LSFM has no expression model: pass
  `expression_path`, a second `.mat` of the same layout (e.g. an expression model on LSFM's topology, as the
  paper's authors combine), whose `mean` (the expression mean offset) is added to the shape mean.
- BFM 2009 (`01_MorphableModel.mat`): `shapeMU` (3N, 1), `shapePC` (3N, K) orthonormal columns, `shapeEV` (K, 1)
  standard deviations, `tl` (F, 3) 1-based; coordinates in micrometres (x `unit_scale` = 1e-3 -> mm). No
  expression model (optional `expression_path` in the LSFM layout, e.g. an expression basis on BFM's topology).
- BFM 2017 (`model2017-1_face12_nomouth.h5` etc., statismo layout): `shape/model/{mean (3N,), pcaBasis (3N, K),
  pcaVariance (K,)}`, `shape/representer/cells` (3, F), and the same under `expression/`; mm. If pcaBasis columns
  are not of unit length they are taken as already scaled by the standard deviation.
- FLAME (`generic_model.pkl`, `flame2023.pkl`): a Python-2 pickle whose arrays are chumpy objects. Read WITHOUT
  chumpy: chumpy classes are replaced by a stub that keeps the pickled state and its value `x`. Also accepted:
  the "numpy-converted" pkl where every array is a plain ndarray. `v_template` (N, 3), `f` (F, 3), `shapedirs`
  (N, 3, K_shape + K_exp): the first `num_shape` (300) are identity, the rest expression, each column a PCA
  component already multiplied by its standard deviation; metres (x `unit_scale` = 1000 -> mm).
- Surrey Face Model (eos's cereal `.bin`; `pip install eos-py`): `eos.morphablemodel.load_model` (orthonormal PCA
  basis, eigenvalues = variances) and `load_blendshapes` (expression blendshapes; not orthogonal, so they are
  orthonormalised: U_exp = the SVD directions, exp_std = the singular values, i.e. one std ~ one blendshape at
  weight 1). The ibug-68 mapping file gives the lip vertices (points 49-68) as mouth indices.

Landmark indices default to a dense, evenly spaced subset of the vertices (`max_landmarks`, like the paper's ~1K
dense points); pass `landmark_indices` to match another landmark detector. Mouth indices must come from the
mapping file (SFM), be passed, or default to the vertices that move most under the expression basis.
"""
from __future__ import annotations

import os
import pickle
import re
from typing import Any, Sequence

import numpy as np

from headgan_jax.errors import FaceModelError
from headgan_jax.face3d import morphable
from headgan_jax.face3d.morphable import MorphableModel


def dense_landmark_indices(num_vertices: int, max_landmarks: int = 1000) -> np.ndarray:
  """Evenly spaced vertex indices (all of them when num_vertices <= max_landmarks)."""
  if num_vertices <= max_landmarks:
    return np.arange(num_vertices, dtype=np.int32)
  return np.unique(np.round(np.linspace(0, num_vertices - 1, max_landmarks)).astype(np.int32))


def mobile_vertex_indices(exp_basis: np.ndarray, exp_std: np.ndarray, fraction: float = 0.03) -> np.ndarray:
  """The `fraction` of vertices with the largest expression variance (the lips and jaw in a face model)."""
  var = np.einsum('k,knc->n', exp_std ** 2, exp_basis ** 2)
  count = max(1, int(round(fraction * var.shape[0])))
  return np.sort(np.argsort(var)[::-1][:count]).astype(np.int32)


def read_ibug_mapping(path: str | os.PathLike) -> dict[int, int]:
  """eos's `ibug_to_*.txt` (TOML `[landmark_mappings]`, `ibug = vertex`) -> {ibug point (1-based): vertex}."""
  mapping = {}
  section = ''
  with open(path, encoding='utf-8') as f:
    for line in f:
      line = line.split('#', 1)[0].strip()
      if line.startswith('['):
        section = line
        continue
      m = re.fullmatch(r'(\d+)\s*=\s*(\d+)', line)
      if m and section == '[landmark_mappings]':
        mapping[int(m.group(1))] = int(m.group(2))
  if not mapping:
    raise FaceModelError(f'{path}: no [landmark_mappings] entries found.')
  return mapping


def _components(rows: np.ndarray, num_vertices: int, std: np.ndarray | None, source: str, name: str):
  """(K, 3N) component rows -> unit-norm basis (K, N, 3) and std; with std None the rows hold basis * std."""
  rows = np.asarray(rows, np.float64)
  if rows.ndim != 2 or rows.shape[1] != 3 * num_vertices:
    raise FaceModelError(f'{source}: "{name}" has shape {rows.shape}, expected (K, {3 * num_vertices}).')
  norms = np.linalg.norm(rows, axis=1)
  if np.any(norms <= 0) or not np.all(np.isfinite(norms)):
    raise FaceModelError(f'{source}: "{name}" has zero, NaN or inf components.')
  std = norms if std is None else np.asarray(std, np.float64).reshape(-1) * norms
  if std.shape != (rows.shape[0],):
    raise FaceModelError(f'{source}: {rows.shape[0]} components in "{name}" but {std.size} standard deviations.')
  return (rows / norms[:, None]).reshape(-1, num_vertices, 3), std


def assemble(source: str, mean: np.ndarray, faces: np.ndarray, id_rows: np.ndarray, id_std: np.ndarray | None,
             exp_rows: np.ndarray | None = None, exp_std: np.ndarray | None = None, *,
             landmark_indices: Sequence[int] | None = None, mouth_indices: Sequence[int] | None = None,
             max_landmarks: int = 1000, unit_scale: float = 1.0) -> MorphableModel:
  """Builds and validates a model from raw arrays: mean (N, 3), faces (F, 3) 0-based, component rows (K, 3N)."""
  mean = np.asarray(mean, np.float64).reshape(-1, 3)
  n = mean.shape[0]
  id_basis, id_s = _components(id_rows, n, id_std, source, 'identity components')
  if exp_rows is None or np.size(exp_rows) == 0:
    exp_basis, exp_s = np.zeros((0, n, 3)), np.zeros((0,))
  else:
    exp_basis, exp_s = _components(exp_rows, n, exp_std, source, 'expression components')
  if mouth_indices is None:
    if exp_basis.shape[0] == 0:
      raise FaceModelError(f'{source}: no expression model to find the mouth from; pass mouth_indices.')
    mouth_indices = mobile_vertex_indices(exp_basis, exp_s)
  if landmark_indices is None:
    landmark_indices = dense_landmark_indices(n, max_landmarks)
  arrays = dict(mean=mean * unit_scale, id_basis=id_basis, id_std=id_s * unit_scale, exp_basis=exp_basis,
                exp_std=exp_s * unit_scale, faces=np.asarray(faces, np.int64).reshape(-1, 3),
                landmark_indices=np.asarray(landmark_indices, np.int64),
                mouth_indices=np.asarray(mouth_indices, np.int64))
  return morphable.from_arrays(arrays, source)


def orthonormalise_blendshapes(deformations: np.ndarray):
  """(K, 3N) blendshape offsets -> orthonormal rows (K, 3N) spanning them and their lengths (std), by SVD."""
  _, sv, vt = np.linalg.svd(np.asarray(deformations, np.float64), full_matrices=False)
  keep = sv > 1e-9 * sv.max()
  return vt[keep], sv[keep]


def _load_mat(path: str) -> dict[str, np.ndarray]:
  import scipy.io
  if not os.path.isfile(path):
    raise FaceModelError(f'{path}: file not found.')
  try:
    return scipy.io.loadmat(path)
  except NotImplementedError:  # MATLAB v7.3 files are HDF5.
    import h5py
    with h5py.File(path, 'r') as f:
      return {k: np.asarray(v).T for k, v in f.items() if hasattr(v, 'shape')}
  except Exception as e:  # scipy raises several types on corrupt files.
    raise FaceModelError(f'{path}: not a readable .mat file ({e}).') from e


def _need(arrays: dict[str, Any], key: str, path: str) -> np.ndarray:
  if key not in arrays:
    raise FaceModelError(f'{path}: missing array "{key}".')
  return np.asarray(arrays[key])


def _rows(a: np.ndarray, length: int) -> np.ndarray:
  """Components as rows: accepts (K, 3N) or (3N, K)."""
  a = np.asarray(a, np.float64)
  return a.T if a.ndim == 2 and a.shape[0] == length and a.shape[1] != length else a


def _read_lsfm_layout(path: str):
  m = _load_mat(path)
  mean = _need(m, 'mean', path).reshape(-1)
  rows = _rows(_need(m, 'components', path), mean.size)
  std = np.sqrt(np.asarray(_need(m, 'eigenvalues', path), np.float64).reshape(-1))
  return m, mean, rows, std


def convert_lsfm(path: str | os.PathLike, expression_path: str | os.PathLike | None = None,
                 **kwargs) -> MorphableModel:
  """LSFM `.mat` (+ optional expression `.mat` of the same layout) -> MorphableModel."""
  path = os.fspath(path)
  m, mean, id_rows, id_std = _read_lsfm_layout(path)
  faces = _need(m, 'trilist', path)
  exp_rows = exp_std = None
  if expression_path is not None:
    _, exp_mean, exp_rows, exp_std = _read_lsfm_layout(os.fspath(expression_path))
    if exp_mean.size != mean.size:
      raise FaceModelError(f'{expression_path}: {exp_mean.size // 3} vertices, but {path} has {mean.size // 3}.')
    mean = mean + exp_mean
  return assemble(path, mean, faces, id_rows, id_std, exp_rows, exp_std, **kwargs)


def convert_bfm2009(path: str | os.PathLike, expression_path: str | os.PathLike | None = None,
                    unit_scale: float = 1e-3, **kwargs) -> MorphableModel:
  """Basel Face Model 2009 `01_MorphableModel.mat` (micrometres -> mm) -> MorphableModel."""
  path = os.fspath(path)
  m = _load_mat(path)
  mean = _need(m, 'shapeMU', path).reshape(-1).astype(np.float64)
  id_rows = _rows(_need(m, 'shapePC', path), mean.size)
  id_std = _need(m, 'shapeEV', path).reshape(-1)
  faces = _need(m, 'tl', path).astype(np.int64) - 1
  exp_rows = exp_std = None
  if expression_path is not None:
    _, exp_mean, exp_rows, exp_std = _read_lsfm_layout(os.fspath(expression_path))
    mean = mean + exp_mean
  return assemble(path, mean, faces, id_rows, id_std, exp_rows, exp_std, unit_scale=unit_scale, **kwargs)


def convert_bfm2017(path: str | os.PathLike, unit_scale: float = 1.0, **kwargs) -> MorphableModel:
  """Basel Face Model 2017 `.h5` (statismo layout) -> MorphableModel."""
  import h5py
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FaceModelError(f'{path}: file not found.')

  def read(f, key):
    if key not in f:
      raise FaceModelError(f'{path}: missing dataset "{key}".')
    return np.asarray(f[key], np.float64)

  def model_part(f, part):
    mean = read(f, f'{part}/model/mean').reshape(-1)
    basis = _rows(read(f, f'{part}/model/pcaBasis'), mean.size)
    std = np.sqrt(read(f, f'{part}/model/pcaVariance').reshape(-1))
    norms = np.linalg.norm(basis, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-2):  # Columns already scaled by their std.
      std = np.ones_like(std)
    return mean, basis, std

  try:
    f = h5py.File(path, 'r')
  except OSError as e:
    raise FaceModelError(f'{path}: not a readable HDF5 file ({e}).') from e
  with f:
    mean, id_rows, id_std = model_part(f, 'shape')
    cells = read(f, 'shape/representer/cells').astype(np.int64)
    faces = cells.T if cells.shape[0] == 3 and cells.shape[1] != 3 else cells
    exp_rows = exp_std = None
    if 'expression' in f:
      exp_mean, exp_rows, exp_std = model_part(f, 'expression')
      mean = mean + exp_mean
  return assemble(path, mean, faces, id_rows, id_std, exp_rows, exp_std, unit_scale=unit_scale, **kwargs)


class _ChumpyStub:
  """Stands in for any chumpy class while unpickling: keeps the pickled state (a Ch's value is its `x`)."""

  def __init__(self, *args, **kwargs):
    self.args = args

  def __setstate__(self, state):
    if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
      state = {**(state[0] or {}), **(state[1] or {})}
    self.__dict__.update(state if isinstance(state, dict) else {'x': state})


class _ChumpyFreeUnpickler(pickle.Unpickler):

  def find_class(self, module, name):
    if module == 'chumpy' or module.startswith('chumpy.'):
      return _ChumpyStub
    return super().find_class(module, name)


def _as_array(obj: Any, path: str, key: str) -> np.ndarray:
  if isinstance(obj, _ChumpyStub):
    if 'x' not in obj.__dict__:
      raise FaceModelError(f'{path}: "{key}" is a chumpy expression without a stored value; convert the file to '
                           f'plain numpy arrays first.')
    obj = obj.__dict__['x']
  a = np.asarray(obj)
  if a.dtype == object:
    raise FaceModelError(f'{path}: "{key}" is not a numeric array.')
  return a


def read_flame_pickle(path: str | os.PathLike) -> dict[str, Any]:
  """FLAME's pickle without chumpy: {key: numpy array or the original object}."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FaceModelError(f'{path}: file not found.')
  try:
    with open(path, 'rb') as f:
      data = _ChumpyFreeUnpickler(f, encoding='latin1').load()
  except Exception as e:  # Corrupt pickles raise many types.
    raise FaceModelError(f'{path}: not a readable FLAME pickle ({e}).') from e
  if not isinstance(data, dict):
    raise FaceModelError(f'{path}: expected a dict in the pickle, got {type(data).__name__}.')
  return data


def convert_flame(path: str | os.PathLike, num_shape: int = 300, num_id: int | None = None,
                  num_exp: int | None = None, unit_scale: float = 1000.0, **kwargs) -> MorphableModel:
  """FLAME `.pkl` (metres -> mm): shapedirs[..., :num_shape] identity, the rest expression."""
  path = os.fspath(path)
  data = read_flame_pickle(path)
  for key in ('v_template', 'f', 'shapedirs'):
    if key not in data:
      raise FaceModelError(f'{path}: missing array "{key}".')
  mean = _as_array(data['v_template'], path, 'v_template').astype(np.float64)
  faces = _as_array(data['f'], path, 'f').astype(np.int64)
  dirs = _as_array(data['shapedirs'], path, 'shapedirs').astype(np.float64)
  if dirs.ndim != 3 or dirs.shape[:2] != mean.shape:
    raise FaceModelError(f'{path}: "shapedirs" has shape {dirs.shape}, expected ({mean.shape[0]}, 3, K).')
  rows = np.moveaxis(dirs, 2, 0).reshape(dirs.shape[2], -1)
  id_rows, exp_rows = rows[:num_shape][:num_id], rows[num_shape:][:num_exp]
  return assemble(path, mean, faces, id_rows, None, exp_rows, None, unit_scale=unit_scale, **kwargs)


def convert_sfm(path: str | os.PathLike, blendshapes_path: str | os.PathLike | None = None,
                ibug_mapping_path: str | os.PathLike | None = None, **kwargs) -> MorphableModel:
  """Surrey Face Model (eos cereal `.bin` + optional blendshapes `.bin` and ibug mapping) -> MorphableModel."""
  try:
    import eos
  except ImportError as e:
    raise FaceModelError('Reading the Surrey Face Model needs eos: pip install eos-py') from e
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FaceModelError(f'{path}: file not found.')
  try:
    shape_model = eos.morphablemodel.load_model(path).get_shape_model()
  except Exception as e:  # eos raises RuntimeError subclasses from cereal.
    raise FaceModelError(f'{path}: eos cannot read it as a morphable model ({e}).') from e
  mean = np.asarray(shape_model.get_mean(), np.float64)
  id_rows = np.asarray(shape_model.get_orthonormal_pca_basis(), np.float64).T
  id_std = np.sqrt(np.asarray(shape_model.get_eigenvalues(), np.float64))
  faces = np.asarray(shape_model.get_triangle_list(), np.int64)
  exp_rows = exp_std = None
  if blendshapes_path is not None:
    try:
      shapes = eos.morphablemodel.load_blendshapes(os.fspath(blendshapes_path))
    except Exception as e:
      raise FaceModelError(f'{blendshapes_path}: eos cannot read it as blendshapes ({e}).') from e
    exp_rows, exp_std = orthonormalise_blendshapes(np.stack([np.asarray(b.deformation) for b in shapes]))
  if ibug_mapping_path is not None and kwargs.get('mouth_indices') is None:
    mapping = read_ibug_mapping(ibug_mapping_path)
    kwargs['mouth_indices'] = sorted({v for k, v in mapping.items() if 49 <= k <= 68})
  return assemble(path, mean, faces, id_rows, id_std, exp_rows, exp_std, **kwargs)


if __name__ == '__main__':  # The command moved (headgan_jax/commands/convert.py); this spelling still runs it.
  import runpy
  runpy.run_module('headgan_jax.commands.convert', run_name='__main__', alter_sys=True)
