"""3DMM fitting on synthetic clips of the default model: accuracy, Jacobians, flags and bad input."""
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import paper
from headgan_jax.errors import LandmarkError
from headgan_jax.face3d import camera, fitting, morphable

IMAGE_SIZE = 256


@pytest.fixture(scope='module')
def model():
  return morphable.load_default()


def make_clip(model, num_frames, seed, noise_px=0.5, shared_id=True):
  """Random identity, expressions within the bounds, realistic poses (yaw up to +-45 deg), 256x256 pixels."""
  rng = np.random.default_rng(seed)
  cfg = paper.get_config().face3d
  p_id = rng.uniform(-cfg.id_bound, cfg.id_bound, (1 if shared_id else num_frames, model.num_id))
  p_exp = np.clip(rng.normal(0.0, 0.6, (num_frames, model.num_exp)), -cfg.exp_bound, cfg.exp_bound)
  angles = np.deg2rad(np.stack([rng.uniform(-45, 45, num_frames), rng.uniform(-20, 20, num_frames),
                                rng.uniform(-15, 15, num_frames)], 1))
  rot = camera.euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
  # The face is ~200 model units (mm) tall: 0.8-1.1 px/mm keeps it inside the 256 x 256 image.
  cam = camera.make_camera(rot, IMAGE_SIZE / 2 + rng.uniform(-15, 15, (num_frames, 2)),
                           rng.uniform(0.8, 1.1, num_frames))
  verts = morphable.shape(model, jnp.asarray(p_id, jnp.float32), jnp.asarray(p_exp, jnp.float32))
  clean = np.asarray(camera.project(verts[:, model.landmark_indices], cam))[..., :2]
  noisy = clean + rng.normal(0.0, noise_px, clean.shape)
  return dict(p_id=p_id.astype(np.float32), p_exp=p_exp.astype(np.float32), rot=np.asarray(rot), clean=clean,
              points=noisy.astype(np.float32))


def fitted_landmarks(model, result):
  verts = morphable.shape(model, result.p_id, result.p_exp)
  return np.asarray(camera.project(verts[:, model.landmark_indices], result.camera))[..., :2]


@pytest.fixture(scope='module')
def video_fit(model):
  clip = make_clip(model, 100, seed=0)
  config = paper.get_config()
  jax.block_until_ready(fitting.fit_video(model, clip['points'][::-1].copy(), config).p_exp)  # Compile.
  start = time.perf_counter()
  result = fitting.fit_video(model, clip['points'], config)
  jax.block_until_ready(result.p_exp)
  seconds = time.perf_counter() - start
  print(f'\nfit_video: 100 frames, {model.num_landmarks} landmarks, {config.face3d.fit_iterations} iterations: '
        f'{seconds:.2f} s = {100 / seconds:.1f} frames/s (CPU, after compilation)')
  return clip, result


def test_video_fit_reprojection_below_one_pixel(model, video_fit):
  clip, result = video_fit
  assert result.residual_px.shape == (100,)
  assert float(jnp.mean(result.residual_px)) < 1.0  # Against the noisy points (noise floor 0.5 * sqrt(2)).
  err_clean = np.linalg.norm(fitted_landmarks(model, result) - clip['clean'], axis=-1)
  assert err_clean.mean() < 0.3, err_clean.mean()  # Against the noise-free projection: the noise is averaged out.
  assert not bool(jnp.any(result.flagged))


def test_video_fit_recovers_expression_rotation_identity(video_fit):
  clip, result = video_fit
  rel = np.linalg.norm(np.asarray(result.p_exp) - clip['p_exp'], axis=1) / np.linalg.norm(clip['p_exp'], axis=1)
  assert rel.mean() < 0.15, rel.mean()
  angle = np.rad2deg(np.asarray(camera.rotation_angle_between(camera.rotation_matrix(result.camera), clip['rot'])))
  assert angle.max() < 2.0, angle.max()
  p_id = np.asarray(result.p_id)
  assert np.all(p_id == p_id[:1])  # One identity for the whole video.
  assert np.linalg.norm(p_id[0] - clip['p_id'][0]) / np.linalg.norm(clip['p_id'][0]) < 0.15
  # Expressions are recovered frame by frame: correlation with the truth is near 1 for every frame.
  corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(np.asarray(result.p_exp), clip['p_exp'])]
  assert min(corr) > 0.9


def test_fit_respects_bounds(model, video_fit):
  _, result = video_fit
  cfg = paper.get_config().face3d
  assert float(jnp.max(jnp.abs(result.p_exp))) <= cfg.exp_bound + 1e-6
  assert float(jnp.max(jnp.abs(result.p_id))) <= cfg.id_bound + 1e-6


def test_fit_frames_independent_identities_and_flags(model):
  clip = make_clip(model, 4, seed=1, shared_id=False)
  points = clip['points'].copy()
  points[3] = np.random.default_rng(3).uniform(0, IMAGE_SIZE, points[3].shape)  # A frame of garbage.
  result = fitting.fit_frames(model, points, paper.get_config())
  assert result.p_id.shape == (4, model.num_id) and result.p_exp.shape == (4, model.num_exp)
  assert float(jnp.max(result.residual_px[:3])) < 1.0
  np.testing.assert_array_equal(np.asarray(result.flagged), [False, False, False, True])
  assert float(result.residual_px[3]) > paper.get_config().face3d.max_residual_px
  angle = np.rad2deg(np.asarray(camera.rotation_angle_between(camera.rotation_matrix(result.camera), clip['rot'])))
  assert angle[:3].max() < 2.0
  err = np.linalg.norm(fitted_landmarks(model, result) - clip['clean'], axis=-1)[:3]
  assert err.mean() < 0.5
  # Each frame gets its own identity, close to its own truth.
  p_id = np.asarray(result.p_id)[:3]
  own = np.linalg.norm(p_id - clip['p_id'][:3], axis=1)
  other = np.linalg.norm(p_id - np.roll(clip['p_id'][:3], 1, axis=0), axis=1)
  assert np.all(own < 0.5 * other)


def test_temporal_smoothness_reduces_noise(model, video_fit):
  # Same clip length as `video_fit`, so the compiled fit is reused.
  rng = np.random.default_rng(4)
  num_frames = 100
  t = np.arange(num_frames)[:, None]
  p_exp = (0.8 * np.sin(2 * np.pi * t / 25 + rng.uniform(0, 2 * np.pi, model.num_exp))).astype(np.float32)
  p_id = rng.uniform(-0.8, 0.8, (1, model.num_id)).astype(np.float32)
  rot = camera.euler_to_matrix(jnp.deg2rad(30 * np.sin(t[:, 0] / 7)), jnp.deg2rad(10 * np.cos(t[:, 0] / 5)), 0.0)
  cams = camera.make_camera(rot, jnp.full((num_frames, 2), 128.0), jnp.full((num_frames,), 1.0))
  verts = morphable.shape(model, jnp.asarray(p_id), jnp.asarray(p_exp))
  clean = np.asarray(camera.project(verts[:, model.landmark_indices], cams))[..., :2]
  points = (clean + rng.normal(0, 4.0, clean.shape)).astype(np.float32)
  config = paper.get_config()
  errors = []
  for weight in (0.0, 20.0):
    config.face3d.temporal_smoothness = weight
    result = fitting.fit_video(model, points, config)
    errors.append(np.sqrt(np.mean((np.asarray(result.p_exp) - p_exp) ** 2)))
  assert errors[1] < 0.8 * errors[0], errors


def test_analytic_jacobian_matches_jacfwd(model):
  model = model.replace(landmark_indices=model.landmark_indices[::8])
  bases = fitting.LandmarkBases.from_model(model)
  rng = np.random.default_rng(6)
  rot = camera.euler_to_matrix(0.4, -0.2, 0.1)
  trans, log_scale = jnp.array([120.0, 130.0]), jnp.log(0.9)
  p_exp = jnp.asarray(rng.normal(0, 0.5, model.num_exp), jnp.float32)
  p_id = jnp.asarray(rng.normal(0, 0.5, model.num_id), jnp.float32)
  points = jnp.asarray(rng.uniform(0, 256, (model.num_landmarks, 2)), jnp.float32)
  n_exp = model.num_exp

  def residual(delta):
    r = camera.axis_angle_to_matrix(delta[:3]) @ rot
    return fitting.frame_residual(bases, r, trans + delta[3:5], log_scale + delta[5], p_exp + delta[6:6 + n_exp],
                                  p_id + delta[6 + n_exp:], points).reshape(-1)

  n = 6 + n_exp + model.num_id
  auto = np.asarray(jax.jit(jax.jacfwd(residual))(jnp.zeros(n)))
  res, jac = fitting.frame_jacobian(bases, rot, trans, log_scale, p_exp, p_id, points)
  np.testing.assert_allclose(np.asarray(jac), auto, rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(np.asarray(res), np.asarray(residual(jnp.zeros(n))), atol=1e-3)
  hess, grad, sq = fitting.frame_normal_equations(bases, rot, trans, log_scale, p_exp, p_id, points)
  j64, r64 = auto.astype(np.float64), np.asarray(res, np.float64)
  np.testing.assert_allclose(np.asarray(hess), j64.T @ j64, rtol=1e-3, atol=1e-2 * np.abs(j64.T @ j64).max() * 1e-3)
  np.testing.assert_allclose(np.asarray(grad), j64.T @ r64, rtol=1e-3, atol=1e-3 * np.abs(j64.T @ r64).max())
  np.testing.assert_allclose(float(sq), float(r64 @ r64), rtol=1e-4)


def test_initial_camera_exact_for_rigid_mean_shape(model):
  bases = fitting.LandmarkBases.from_model(model)
  rot = camera.euler_to_matrix(-0.6, 0.25, -0.2)
  cam = camera.make_camera(rot, jnp.array([100.0, 140.0]), 1.2)
  points = camera.project(bases.mean, cam)[:, :2]
  r, t, log_s = jax.jit(fitting.initial_camera)(bases.mean, points)
  np.testing.assert_allclose(np.asarray(r), np.asarray(rot), atol=1e-4)
  np.testing.assert_allclose(np.asarray(t), [100.0, 140.0], atol=1e-2)
  np.testing.assert_allclose(float(jnp.exp(log_s)), 1.2, rtol=1e-4)


def test_three_column_landmarks_use_x_and_y(model):
  pts = np.random.default_rng(7).uniform(0, 256, (2, model.num_landmarks, 3))
  np.testing.assert_array_equal(fitting.validate_landmarks(pts, model.num_landmarks),
                                pts[..., :2].astype(np.float32))


def test_bad_landmarks_raise(model):
  config = paper.get_config()
  num_l = model.num_landmarks
  with pytest.raises(LandmarkError, match='frame 3'):
    pts = np.zeros((5, num_l, 2), np.float32)
    pts[3, 10, 1] = np.nan
    fitting.fit_video(model, pts, config)
  with pytest.raises(LandmarkError, match='landmark vertices'):
    fitting.fit_frames(model, np.zeros((2, 68, 2)), config)
  with pytest.raises(LandmarkError, match='expected shape'):
    fitting.fit_video(model, np.zeros((num_l, 2)), config)
  with pytest.raises(LandmarkError, match='expected shape'):
    fitting.fit_video(model, np.zeros((1, num_l, 4)), config)
  with pytest.raises(LandmarkError, match='no frames'):
    fitting.fit_video(model, np.zeros((0, num_l, 2)), config)


def test_fit_with_converted_surrey_face_model(sfm_dir):
  """The real SFM, through the converter, plugs into the same fit (pose and its 6 expression blendshapes)."""
  pytest.importorskip('eos')
  from headgan_jax.face3d import converters
  sfm = converters.convert_sfm(sfm_dir / 'sfm_shape_3448.bin', sfm_dir / 'expression_blendshapes_3448.bin',
                               sfm_dir / 'ibug_to_sfm.txt')
  clip = make_clip(sfm, 20, seed=8)
  result = fitting.fit_video(sfm, clip['points'], paper.get_config())
  assert float(jnp.mean(result.residual_px)) < 1.0
  angle = np.rad2deg(np.asarray(camera.rotation_angle_between(camera.rotation_matrix(result.camera), clip['rot'])))
  assert angle.max() < 2.0
  rel = np.linalg.norm(np.asarray(result.p_exp) - clip['p_exp'], axis=1) / np.linalg.norm(clip['p_exp'], axis=1)
  assert rel.mean() < 0.15


def test_fit_video_weights_and_fixed_identity(model):
  """Weight-0 frames do not pull on the shared identity; a given p_id is held exactly."""
  clip = make_clip(model, num_frames=6, seed=3)
  config = paper.get_config()
  base = fitting.fit_video(model, np.delete(clip['points'], 2, axis=0), config)  # Without frame 2.
  bad = np.array(clip['points'])
  bad[2] += 40.0 * np.random.default_rng(0).normal(size=bad[2].shape)  # A garbage frame ...
  weights = np.ones(6, np.float32)
  weights[2] = 0.0  # ... that weighs nothing.
  weighted = fitting.fit_video(model, bad, config, weights=weights)
  unweighted = fitting.fit_video(model, bad, config)
  err = lambda r: np.abs(np.asarray(r.p_id[0]) - np.asarray(base.p_id[0])).max()
  assert err(weighted) < 0.01 and err(unweighted) > 5 * err(weighted)
  fixed = np.asarray(clip["p_id"][0]) * 0.5
  held = fitting.fit_video(model, clip['points'], config, p_id=fixed)
  np.testing.assert_array_equal(np.asarray(held.p_id[0]), fixed)
  free = fitting.fit_video(model, clip['points'], config)
  assert np.median(np.asarray(held.residual_px)) > np.median(np.asarray(free.residual_px))


def _frame_energies(model, result, points, config):
  """Each frame's own E (its landmark term + both priors) at the parameters of `result` (per-frame p_id)."""
  bases = fitting.LandmarkBases.from_model(model)
  settings = fitting.FitSettings.from_config(config)
  start = fitting.start_state(result.p_id, result.p_exp, result.camera)
  one = lambda r, t, s, e, i, p: fitting.energy(bases, fitting.PoseState(r[None], t[None], s[None], e[None], i),
                                                p[None], settings)[0]
  return np.asarray(jax.vmap(one)(*start, jnp.asarray(points)))


def test_fit_frames_started_from_the_video_fit(model):
  """Per-frame fits started from the clip's shared fit (what tracking/track.py stores for training frames): each frame
  ends no worse than it started (energy and RMS), with an identity of its own nearer its truth than the shared one;
  with 0 iterations the start comes back unchanged."""
  clip = make_clip(model, 6, seed=4, shared_id=False)  # Six people: the shared identity is a compromise.
  config = paper.get_config()
  shared = fitting.fit_video(model, clip['points'], config)
  frames = fitting.fit_frames(model, clip['points'], config, init=shared)
  assert frames.p_id.shape == (6, model.num_id) and frames.p_exp.shape == (6, model.num_exp)
  assert np.all(np.asarray(frames.residual_px) <= np.asarray(shared.residual_px) + 1e-4)
  e_frames, e_shared = (_frame_energies(model, r, clip['points'], config) for r in (frames, shared))
  assert np.all(e_frames <= e_shared * (1 + 1e-5))
  own = lambda r: np.linalg.norm(np.asarray(r.p_id) - clip['p_id'], axis=1).mean()  # noqa: E731
  assert own(frames) < 0.8 * own(shared)
  assert float(jnp.max(jnp.abs(frames.p_id))) <= config.face3d.id_bound + 1e-6
  config.face3d.fit_iterations = 0
  same = fitting.fit_frames(model, clip['points'], config, init=shared)
  np.testing.assert_allclose(np.asarray(same.p_id), np.broadcast_to(np.asarray(shared.p_id), (6, model.num_id)))
  np.testing.assert_allclose(np.asarray(same.camera.rotation), np.asarray(shared.camera.rotation), atol=1e-6)
  np.testing.assert_allclose(np.asarray(same.residual_px), np.asarray(shared.residual_px), rtol=1e-4, atol=1e-4)
