"""3DMM format, the embedded default model, eq. 1, learning from landmarks and the converters."""
import pickle
import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest

from headgan_jax.errors import FaceModelError, LandmarkError
from headgan_jax.commands import convert
from headgan_jax.face3d import converters, default_model, morphable


@pytest.fixture(scope='module')
def model():
  return morphable.load_default()


# --- The embedded default model -------------------------------------------------------------------------------


def test_default_model_shapes_and_validity(model):
  n = model.num_vertices
  assert 2000 < n < 8000
  assert model.id_basis.shape == (40, n, 3) and model.exp_basis.shape[1:] == (n, 3)
  assert model.num_exp >= 20
  assert 500 <= model.num_landmarks <= 2500
  assert model.mean.dtype == jnp.float32 and model.faces.dtype == jnp.int32
  assert np.all(np.asarray(model.id_std) > 0) and np.all(np.asarray(model.exp_std) > 0)
  # Every vertex is used by a triangle and every triangle is non-degenerate.
  faces = np.asarray(model.faces)
  assert np.array_equal(np.unique(faces), np.arange(n))
  mean = np.asarray(model.mean)
  area = np.linalg.norm(np.cross(mean[faces[:, 1]] - mean[faces[:, 0]], mean[faces[:, 2]] - mean[faces[:, 0]]), 1)
  assert area.min() > 0.1
  # Front-facing: triangles are counter-clockwise seen from +z (normals towards the viewer).
  normal_z = np.cross(mean[faces[:, 1]] - mean[faces[:, 0]], mean[faces[:, 2]] - mean[faces[:, 0]])[:, 2]
  assert np.mean(normal_z > 0) > 0.99


def test_default_model_is_deterministic():
  a, b = default_model.build_arrays(), default_model.build_arrays()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_default_bases_are_orthonormal_and_separable(model):
  basis = np.concatenate([np.asarray(model.id_basis).reshape(model.num_id, -1),
                          np.asarray(model.exp_basis).reshape(model.num_exp, -1)]).astype(np.float64)
  np.testing.assert_allclose(basis @ basis.T, np.eye(len(basis)), atol=1e-4)


def test_default_face_geometry(model):
  mean = np.asarray(model.mean)
  width, height = np.ptp(mean[:, 0]), np.ptp(mean[:, 1])
  assert 130 < width < 170 and 180 < height < 220  # mm
  nose_tip = mean[np.argmax(mean[:, 2])]
  assert abs(nose_tip[0]) < 3 and -40 < nose_tip[1] < 10  # The nose is the most prominent point, centred.
  mouth = mean[np.asarray(model.mouth_indices)]
  assert np.all(np.abs(mouth[:, 0]) < 35) and np.ptp(mouth[:, 1]) < 30
  assert mouth[:, 1].mean() < nose_tip[1] - 20  # Mouth below the nose.
  # The mean is symmetric: mirroring x maps the vertex cloud onto itself.
  from scipy.spatial import cKDTree
  dist, _ = cKDTree(mean).query(mean * np.array([-1, 1, 1]))
  assert dist.max() < 1e-3


def test_jaw_open_parts_the_lips(model):
  """The mouth slit: upper- and lower-lip vertices coincide at rest and separate when the jaw opens."""
  _, _, _, upper, lower = default_model.build_mesh()
  jaw = default_model.EXPRESSION_NAMES.index('jaw_open')
  assert upper.sum() >= 10 and upper.sum() == lower.sum()
  p_id = jnp.zeros(model.num_id)
  closed = np.asarray(morphable.shape(model, p_id, jnp.zeros(model.num_exp)))
  np.testing.assert_allclose(closed[upper], closed[lower], atol=1e-4)
  opened = np.asarray(morphable.shape(model, p_id, jnp.zeros(model.num_exp).at[jaw].set(1.5)))
  gap = opened[upper, 1] - opened[lower, 1]
  assert gap.min() > 10.0  # mm: the lower lip drops
  # The chin moves down too, the forehead does not.
  chin = np.argmin(closed[:, 1])
  top = np.argmax(closed[:, 1])
  # (Orthogonality to the identity basis leaves the forehead a small shift: U_exp is orthogonal to U_id.)
  assert opened[chin, 1] < closed[chin, 1] - 5 and abs(opened[top, 1] - closed[top, 1]) < 4.0
  # Identity never parts the lips (identity deformations are smooth).
  rng = np.random.default_rng(0)
  some_id = np.asarray(morphable.shape(model, jnp.asarray(rng.uniform(-1, 1, model.num_id), jnp.float32),
                                       jnp.zeros(model.num_exp)))
  np.testing.assert_allclose(some_id[upper], some_id[lower], atol=1e-3)


def test_landmarks_cover_the_front_face_and_both_lips(model):
  _, _, _, upper, lower = default_model.build_mesh()
  lm = set(np.asarray(model.landmark_indices).tolist())
  assert set(np.flatnonzero(upper)) <= lm and set(np.flatnonzero(lower)) <= lm
  pts = np.asarray(model.mean)[np.asarray(model.landmark_indices)]
  assert np.ptp(pts[:, 0]) > 100 and np.ptp(pts[:, 1]) > 150


# --- Eq. 1 ----------------------------------------------------------------------------------------------------


def test_shape_is_linear_in_std_units(model):
  k = 3
  p_id = jnp.zeros(model.num_id).at[k].set(2.0)
  s = morphable.shape(model, p_id, jnp.zeros(model.num_exp))
  np.testing.assert_allclose(np.asarray(s - model.mean), 2.0 * float(model.id_std[k]) * np.asarray(model.id_basis[k]),
                             atol=1e-3)


def test_identity_adaptation_keeps_reference_identity(model):
  rng = np.random.default_rng(1)
  p_id_ref = jnp.asarray(rng.uniform(-0.8, 0.8, model.num_id), jnp.float32)
  p_id_driver = jnp.asarray(rng.uniform(-0.8, 0.8, model.num_id), jnp.float32)
  p_exp_t = jnp.asarray(rng.uniform(-1.5, 1.5, (5, model.num_exp)), jnp.float32)
  s = morphable.identity_adaptation(model, p_id_ref, p_exp_t)
  assert s.shape == (5, model.num_vertices, 3)
  # Identity-only component (projection onto U_id) is the reference's for every frame ...
  np.testing.assert_allclose(np.asarray(morphable.project_identity(model, s)),
                             np.broadcast_to(np.asarray(p_id_ref), (5, model.num_id)), atol=2e-3)
  # ... and the expression part is the driver's.
  exp_part = np.einsum('tnc,knc->tk', np.asarray(s - model.mean), np.asarray(model.exp_basis)) / np.asarray(
      model.exp_std)
  np.testing.assert_allclose(exp_part, np.asarray(p_exp_t), atol=2e-3)
  # The driver's own mesh has the driver's identity, not the reference's.
  driver = morphable.shape(model, p_id_driver, p_exp_t[0])
  assert np.abs(np.asarray(morphable.project_identity(model, driver)) - np.asarray(p_id_ref)).max() > 0.3


# --- File format ----------------------------------------------------------------------------------------------


def small_arrays(n=30, k_id=5, k_exp=3, seed=0):
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.normal(size=(3 * n, k_id + k_exp)))
  return dict(mean=rng.normal(size=(n, 3)).astype(np.float32),
              id_basis=q[:, :k_id].T.reshape(k_id, n, 3).astype(np.float32),
              id_std=rng.uniform(1, 5, k_id).astype(np.float32),
              exp_basis=q[:, k_id:].T.reshape(k_exp, n, 3).astype(np.float32),
              exp_std=rng.uniform(1, 5, k_exp).astype(np.float32),
              faces=rng.integers(0, n, (40, 3)).astype(np.int32),
              landmark_indices=np.arange(0, n, 2, dtype=np.int32), mouth_indices=np.array([1, 2, 3], np.int32))


def test_save_load_round_trip(model, tmp_path):
  path = tmp_path / 'sub' / 'default.npz'
  morphable.save(model, path)
  back = morphable.load(path)
  for name in morphable.ARRAY_NAMES:
    np.testing.assert_array_equal(np.asarray(getattr(back, name)), np.asarray(getattr(model, name)))
  assert [p.name for p in path.parent.iterdir()] == ['default.npz']  # No temporary file left behind.


def test_load_from_config(tmp_path):
  from configs import tiny
  cfg = tiny.get_config()
  arrays = small_arrays()
  path = tmp_path / 'm.npz'
  np.savez(path, **arrays)
  cfg.face3d.model = str(path)
  assert morphable.load_from_config(cfg).num_vertices == 30


@pytest.mark.parametrize('mutate, message', [
    (lambda a: a.pop('exp_std'), 'missing array "exp_std"'),
    (lambda a: a.update(id_basis=a['id_basis'][:, :10]), '"id_basis" has shape'),
    (lambda a: a.update(exp_std=a['exp_std'][:2]), '"exp_std" has shape'),
    (lambda a: a['mean'].__setitem__((3, 1), np.nan), '"mean" contains NaN'),
    (lambda a: a['faces'].__setitem__((0, 0), 30), '"faces" has indices outside'),
    (lambda a: a['landmark_indices'].__setitem__(0, -1), '"landmark_indices" has indices outside'),
    (lambda a: a.update(mouth_indices=np.array([1.5])), '"mouth_indices" has dtype'),
    (lambda a: a['id_std'].__setitem__(0, 0.0), '"id_std" has non-positive'),
])
def test_load_rejects_bad_files(tmp_path, mutate, message):
  arrays = small_arrays()
  mutate(arrays)
  path = tmp_path / 'bad.npz'
  np.savez(path, **arrays)
  with pytest.raises(FaceModelError, match=message) as info:
    morphable.load(path)
  assert str(path) in str(info.value)


def test_load_missing_and_corrupt_files(tmp_path):
  with pytest.raises(FaceModelError, match='not found'):
    morphable.load(tmp_path / 'nope.npz')
  bad = tmp_path / 'corrupt.npz'
  bad.write_bytes(b'not a zip file')
  with pytest.raises(FaceModelError, match='corrupt.npz'):
    morphable.load(bad)


# --- Learning a model from landmarks (LSFM-style PCA) ---------------------------------------------------------


def _principal_cosines(a, b):
  qa, _ = np.linalg.qr(a.T)
  qb, _ = np.linalg.qr(b.T)
  return np.linalg.svd(qa.T @ qb, compute_uv=False)


def test_learn_from_landmarks_recovers_subspaces(model):
  from headgan_jax.face3d import camera
  rng = np.random.default_rng(2)
  idx = np.asarray(model.landmark_indices)[::6]
  k_id, k_exp, n_vid, n_frames = 4, 3, 12, 10
  p_id = np.zeros((n_vid, model.num_id), np.float32)
  p_id[:, :k_id] = rng.normal(0, 1, (n_vid, k_id))
  p_exp = np.zeros((n_vid, n_frames, model.num_exp), np.float32)
  p_exp[..., :k_exp] = rng.normal(0, 1, (n_vid, n_frames, k_exp))
  # Zero mean expression per clip: then clip means are pure identity, and the test isolates the algorithm.
  p_exp -= p_exp.mean(1, keepdims=True)
  shapes = np.asarray(morphable.shape(model, jnp.asarray(p_id)[:, None], jnp.asarray(p_exp)))[:, :, idx]
  rot = np.asarray(camera.euler_to_matrix(*(jnp.deg2rad(rng.uniform(-30, 30, (3, n_vid, n_frames))))))
  scale = rng.uniform(0.5, 2.0, (n_vid, n_frames, 1, 1))
  points = scale * np.einsum('vtij,vtnj->vtni', rot, shapes) + rng.normal(0, 20, (n_vid, n_frames, 1, 3))
  learned = morphable.learn_from_landmarks(points, faces=np.zeros((1, 3), np.int32), num_id=k_id, num_exp=k_exp)
  assert learned.id_basis.shape == (k_id, len(idx), 3) and learned.exp_basis.shape == (k_exp, len(idx), 3)
  np.testing.assert_array_equal(np.asarray(learned.landmark_indices), np.arange(len(idx)))
  # The true subspaces, less what a similarity transform of the mean can do (Procrustes removes that).
  mean = np.asarray(model.mean)[idx].astype(np.float64)
  rigid = default_model._orthonormal_rows(default_model.rigid_fields(mean).reshape(7, -1))
  true_id = default_model._remove_span(np.asarray(model.id_basis)[:k_id, idx].reshape(k_id, -1), rigid)
  true_exp = default_model._remove_span(np.asarray(model.exp_basis)[:k_exp, idx].reshape(k_exp, -1), rigid)
  # The learned model lives in the frame of the first input shape: rotate it into the model's frame to compare.
  learned_mean = np.asarray(learned.mean, np.float64)
  u, _, vt = np.linalg.svd((mean - mean.mean(0)).T @ (learned_mean - learned_mean.mean(0)))
  rot = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
  to_model = lambda basis: (np.asarray(basis, np.float64) @ rot.T).reshape(len(basis), -1)
  cos_id = _principal_cosines(to_model(learned.id_basis), true_id)
  cos_exp = _principal_cosines(to_model(learned.exp_basis), true_exp)
  assert cos_id.min() > 0.99, cos_id
  assert cos_exp.min() > 0.99, cos_exp
  # A random subspace of the same size would be far off.
  random_dirs = rng.normal(size=(k_id, 3 * len(idx)))
  assert _principal_cosines(random_dirs, true_id).min() < 0.5
  # Units are kept: the learned mean has the inputs' size (scale ~ mean of the draws).
  size = np.sqrt(np.mean(np.sum((np.asarray(learned.mean) - np.asarray(learned.mean).mean(0)) ** 2, -1)))
  true_size = np.sqrt(np.mean(np.sum((mean - mean.mean(0)) ** 2, -1)))
  assert 0.8 * true_size < size < 1.6 * true_size


def test_learn_from_landmarks_rejects_bad_points():
  with pytest.raises(LandmarkError, match='video 1, frame 2'):
    pts = np.zeros((2, 3, 5, 3))
    pts[1, 2, 0, 0] = np.inf
    morphable.learn_from_landmarks(pts, np.zeros((1, 3), np.int32))
  with pytest.raises(LandmarkError, match='must be'):
    morphable.learn_from_landmarks(np.zeros((3, 5, 3)), np.zeros((1, 3), np.int32))


# --- Converters -----------------------------------------------------------------------------------------------


def expected(arrays, unit=1.0):
  return dict(mean=arrays['mean'] * unit, id_std=arrays['id_std'] * unit, exp_std=arrays['exp_std'] * unit,
              id_basis=arrays['id_basis'], exp_basis=arrays['exp_basis'])


def check_converted(model, want, atol=1e-4):
  for name, value in want.items():
    np.testing.assert_allclose(np.asarray(getattr(model, name)), value, rtol=1e-4, atol=atol * max(
        1.0, float(np.abs(value).max())), err_msg=name)


def test_convert_sfm_real_files(sfm_dir, tmp_path):
  pytest.importorskip('eos')
  m = converters.convert_sfm(sfm_dir / 'sfm_shape_3448.bin', sfm_dir / 'expression_blendshapes_3448.bin',
                             sfm_dir / 'ibug_to_sfm.txt')
  assert m.num_vertices == 3448 and m.num_id == 63 and m.num_exp == 6 and m.faces.shape == (6736, 3)
  assert m.num_landmarks == 1000
  # Mouth: the ibug lip points (49-68 less 61 and 65), all around the mouth below the nose tip.
  assert m.mouth_indices.shape == (18,)
  mean = np.asarray(m.mean)
  assert mean[np.asarray(m.mouth_indices), 1].max() < mean[114, 1]  # Vertex 114 is the nose tip.
  basis = np.asarray(m.id_basis).reshape(63, -1)
  np.testing.assert_allclose(basis @ basis.T, np.eye(63), atol=1e-4)
  exp = np.asarray(m.exp_basis).reshape(6, -1)
  np.testing.assert_allclose(exp @ exp.T, np.eye(6), atol=1e-4)
  # The orthonormalised blendshapes span the originals: each blendshape is reproduced exactly.
  import eos
  shapes = np.stack([np.asarray(b.deformation) for b in
                     eos.morphablemodel.load_blendshapes(str(sfm_dir / 'expression_blendshapes_3448.bin'))])
  coeff = shapes @ exp.T
  np.testing.assert_allclose(coeff @ exp, shapes, atol=1e-3 * np.abs(shapes).max())
  # eos's eigenvalues are variances: the std of component 0 is their square root.
  sm = eos.morphablemodel.load_model(str(sfm_dir / 'sfm_shape_3448.bin')).get_shape_model()
  np.testing.assert_allclose(float(m.id_std[0]), np.sqrt(sm.get_eigenvalues()[0]), rtol=1e-5)
  # Round trip through the project's file, and the model fits like the default one.
  morphable.save(m, tmp_path / 'sfm.npz')
  assert morphable.load(tmp_path / 'sfm.npz').num_vertices == 3448


def test_convert_sfm_bad_file(tmp_path):
  pytest.importorskip('eos')
  bad = tmp_path / 'bad.bin'
  bad.write_bytes(b'\0' * 100)
  with pytest.raises(FaceModelError, match='bad.bin'):
    converters.convert_sfm(bad)


def test_convert_lsfm_with_expression(tmp_path):
  import scipy.io
  a = small_arrays()
  n = 30
  scipy.io.savemat(tmp_path / 'lsfm.mat', dict(
      mean=a['mean'].reshape(1, -1), components=a['id_basis'].reshape(5, -1), eigenvalues=a['id_std'] ** 2,
      trilist=a['faces']))
  exp_mean = np.full((n, 3), 0.5, np.float32)
  scipy.io.savemat(tmp_path / 'exp.mat', dict(
      mean=exp_mean.reshape(-1), components=a['exp_basis'].reshape(3, -1).T, eigenvalues=a['exp_std'] ** 2))
  m = converters.convert_lsfm(tmp_path / 'lsfm.mat', tmp_path / 'exp.mat', landmark_indices=a['landmark_indices'],
                              mouth_indices=a['mouth_indices'])
  want = expected(a)
  want['mean'] = a['mean'] + exp_mean
  check_converted(m, want)
  np.testing.assert_array_equal(np.asarray(m.faces), a['faces'])


def test_convert_bfm2009(tmp_path):
  import scipy.io
  a = small_arrays(seed=1)
  scipy.io.savemat(tmp_path / '01_MorphableModel.mat', dict(
      shapeMU=(a['mean'] * 1000).reshape(-1, 1), shapePC=a['id_basis'].reshape(5, -1).T,
      shapeEV=(a['id_std'] * 1000).reshape(-1, 1), tl=a['faces'] + 1, texMU=np.zeros((90, 1))))
  m = converters.convert_bfm2009(tmp_path / '01_MorphableModel.mat', mouth_indices=[4, 5])
  check_converted(m, dict(mean=a['mean'], id_std=a['id_std'], id_basis=a['id_basis']))
  np.testing.assert_array_equal(np.asarray(m.faces), a['faces'])  # 1-based -> 0-based
  assert m.num_exp == 0 and m.num_landmarks == 30
  with pytest.raises(FaceModelError, match='mouth_indices'):
    converters.convert_bfm2009(tmp_path / '01_MorphableModel.mat')
  scipy.io.savemat(tmp_path / 'broken.mat', dict(shapeMU=np.zeros((90, 1))))
  with pytest.raises(FaceModelError, match='broken.mat: missing array "shapePC"'):
    converters.convert_bfm2009(tmp_path / 'broken.mat', mouth_indices=[0])


def test_convert_bfm2017(tmp_path):
  h5py = pytest.importorskip('h5py')
  a = small_arrays(seed=2)
  with h5py.File(tmp_path / 'bfm2017.h5', 'w') as f:
    f['shape/model/mean'] = a['mean'].reshape(-1)
    f['shape/model/pcaBasis'] = a['id_basis'].reshape(5, -1).T
    f['shape/model/pcaVariance'] = a['id_std'] ** 2
    f['shape/representer/cells'] = a['faces'].T
    f['shape/representer/points'] = a['mean'].T
    f['expression/model/mean'] = np.zeros(90, np.float32)
    f['expression/model/pcaBasis'] = a['exp_basis'].reshape(3, -1).T
    f['expression/model/pcaVariance'] = a['exp_std'] ** 2
  m = converters.convert_bfm2017(tmp_path / 'bfm2017.h5')
  check_converted(m, expected(a))
  np.testing.assert_array_equal(np.asarray(m.faces), a['faces'])
  # Mouth by default: the vertices that move most under the expression basis.
  var = np.einsum('k,knc->n', a['exp_std'] ** 2, a['exp_basis'] ** 2)
  assert int(np.argmax(var)) in np.asarray(m.mouth_indices).tolist()


def _write_flame(path, arrays, monkeypatch, with_chumpy):
  n = arrays['mean'].shape[0]
  dirs = np.concatenate([arrays['id_basis'] * arrays['id_std'][:, None, None],
                         arrays['exp_basis'] * arrays['exp_std'][:, None, None]]) / 1000.0
  shapedirs = np.moveaxis(dirs, 0, 2)  # (N, 3, K)
  template = arrays['mean'] / 1000.0
  if with_chumpy:  # Pickle real-looking chumpy objects without chumpy: a stand-in module named like it.
    ch_module = types.ModuleType('chumpy.ch')

    class Ch:
      pass

    Ch.__module__, Ch.__qualname__ = 'chumpy.ch', 'Ch'
    ch_module.Ch = Ch
    monkeypatch.setitem(sys.modules, 'chumpy', types.ModuleType('chumpy'))
    monkeypatch.setitem(sys.modules, 'chumpy.ch', ch_module)

    def wrap(x):
      c = Ch()
      c.__dict__.update(x=x, _dirty_vars=set(), _itr=None)
      return c

    template, shapedirs = wrap(template), wrap(shapedirs)
  data = dict(v_template=template, shapedirs=shapedirs, f=arrays['faces'].astype(np.uint32),
              posedirs=np.zeros((n, 3, 36)), J_regressor=np.zeros((5, n)), kintree_table=np.zeros((2, 5)))
  with open(path, 'wb') as f:
    pickle.dump(data, f, protocol=2)
  if with_chumpy:
    monkeypatch.delitem(sys.modules, 'chumpy.ch')
    monkeypatch.delitem(sys.modules, 'chumpy')


@pytest.mark.parametrize('with_chumpy', [True, False])
def test_convert_flame(tmp_path, monkeypatch, with_chumpy):
  a = small_arrays(seed=3)
  path = tmp_path / 'generic_model.pkl'
  _write_flame(path, a, monkeypatch, with_chumpy)
  assert 'chumpy' not in sys.modules
  m = converters.convert_flame(path, num_shape=5, mouth_indices=[0, 1])
  check_converted(m, expected(a), atol=1e-3)
  np.testing.assert_array_equal(np.asarray(m.faces), a['faces'])
  assert 'chumpy' not in sys.modules


def test_convert_flame_rejects_garbage(tmp_path):
  path = tmp_path / 'x.pkl'
  path.write_bytes(b'garbage')
  with pytest.raises(FaceModelError, match='x.pkl'):
    converters.convert_flame(path)


def test_converter_command_line(tmp_path, capsys):
  import scipy.io
  a = small_arrays(seed=4)
  scipy.io.savemat(tmp_path / 'lsfm.mat', dict(mean=a['mean'].reshape(-1), components=a['id_basis'].reshape(5, -1),
                                               eigenvalues=a['id_std'] ** 2, trilist=a['faces']))
  scipy.io.savemat(tmp_path / 'exp.mat', dict(mean=np.zeros(90), components=a['exp_basis'].reshape(3, -1),
                                              eigenvalues=a['exp_std'] ** 2))
  out = tmp_path / 'out.npz'
  assert convert.main(['lsfm', str(tmp_path / 'lsfm.mat'), '--expression', str(tmp_path / 'exp.mat'),
                          '--out', str(out)]) == 0
  check_converted(morphable.load(out), expected(a))
  assert convert.main(['lsfm', str(tmp_path / 'missing.mat'), '--out', str(out)]) == 1
  assert 'missing.mat' in capsys.readouterr().err
