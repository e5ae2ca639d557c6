"""3DMM fitting: camera c_t, identity p^id and expression p_t^exp from 2-D landmark points (paper Sec. 3.1).

For each frame t the model's landmark vertices  v_l = mean_l + U_id,l (id_std p_id) + U_exp,l (exp_std p_t^exp)
are projected with the scaled orthographic camera of `face3d.camera` and compared with the detected points q_tl.
The energy (a MAP estimate with 1-pixel Gaussian noise and unit-Gaussian priors on the coefficients) is

  E = 1/2 sum_t sum_l |proj(c_t, v_l(p_id, p_t^exp)) - q_tl|^2                         (pixels^2)
    + 1/2 id_prior |p_id|^2 + 1/2 exp_prior sum_t |p_t^exp|^2                          (std units)
    + 1/2 temporal_smoothness sum_t |p_t^exp - p_{t-1}^exp|^2                          (video mode only)

with config.face3d's weights. Minimisation:
1. Initial camera per frame in closed form: the least-squares affine camera from the mean shape's landmarks to the
   points, projected to the nearest scaled rotation (SVD); p = 0. A rigid fit needs no iterations to get close.
2. config.face3d.fit_iterations Levenberg-Marquardt iterations on everything at once (pose increments as an
   axis-angle rotation applied to R, a log-scale and a pixel translation; coefficients additive). The Jacobian is
   analytic (the model is linear in p given the camera; tested against jax.jacfwd), and J^T J is assembled from
   moments of the basis precomputed once (`LandmarkBases`), so J itself is never formed. The normal equations have an
   arrow structure - per-frame blocks (pose + expression) coupled only through the shared identity - solved by a
   Schur complement on the identity, so a 100-frame clip costs 100 small solves plus one K_id x K_id solve.
   Temporal smoothness couples neighbouring frames; each iteration treats the neighbours' current p^exp as fixed
   (a Jacobi step), which keeps the per-frame structure and converges to the same minimum.
   A step is kept only if it lowers E (damping / 3), otherwise it is discarded (damping x 4): E never increases.
3. Bounds: after every step p_id is clipped to +-id_bound and p^exp to +-exp_bound (projected Gauss-Newton: hard
   box constraints as in the authors' bounded least squares, on top of the soft Gaussian prior).

Everything is jit-compiled with a fixed iteration count and vmapped over frames. `fit_video` shares one identity
over all frames (the paper's "one mean identity per video"); `fit_frames` fits every frame independently (the
authors render each training frame's 3D face with such a per-frame fit; tracking/track.py stores both). In video
mode each frame's landmark term may be weighted (0 = a padding or faceless frame that must not pull on the shared
identity: clips are padded to fixed lengths so the fit compiles once per length bucket), and the identity may be held
at a given p_id (the later chunks of a streamed video, or eq. 1's reference identity). Frames
whose RMS re-projection error exceeds config.face3d.max_residual_px are flagged.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

from headgan_jax.errors import LandmarkError
from headgan_jax.face3d import camera as cam_lib
from headgan_jax.face3d.morphable import MorphableModel

_FLIP = jnp.array([1.0, -1.0])  # Model y up -> pixel y down (see face3d.camera).
_POSE = 6  # Pose increment: rotation (3), translation (2), log-scale (1).


@flax.struct.dataclass
class FitResult:
  """Per-frame camera (batched), p_id (B, K_id), p_exp (B, K_exp), RMS residual (B,) pixels, flagged (B,) bool."""
  camera: cam_lib.Camera
  p_id: jax.Array
  p_exp: jax.Array
  residual_px: jax.Array
  flagged: jax.Array


class FitSettings(NamedTuple):
  """The fields of config.face3d the fit uses. Only `iterations` is static; changing a weight does not recompile."""
  iterations: int
  id_prior: float
  exp_prior: float
  id_bound: float
  exp_bound: float
  temporal_smoothness: float
  max_residual_px: float

  @classmethod
  def from_config(cls, config) -> 'FitSettings':
    f = config.face3d
    return cls(int(f.fit_iterations), float(f.id_prior), float(f.exp_prior), float(f.id_bound), float(f.exp_bound),
               float(f.temporal_smoothness), float(f.max_residual_px))


class LandmarkBases(NamedTuple):
  """The model restricted to its L landmark vertices, bases pre-scaled by their stds, and moments of them.

  With B_l (3, K) the stacked [exp, id] basis at landmark l and m_l its mean: gram[i, j] = sum_l B_l[i]^T B_l[j]
  (3, 3, K, K), mean_basis[i, j] = sum_l m_l[i] B_l[j] (3, 3, K) and basis_sum = sum_l B_l (3, K). They turn the
  per-frame Gauss-Newton blocks that involve the K coefficients into small contractions (see
  `frame_normal_equations`).
  """
  mean: jax.Array  # (L, 3)
  id_basis: jax.Array  # (K_id, L, 3)
  exp_basis: jax.Array  # (K_exp, L, 3)
  basis: jax.Array  # (K, L, 3): [exp_basis; id_basis], K = K_exp + K_id
  gram: jax.Array  # (3, 3, K, K)
  mean_basis: jax.Array  # (3, 3, K)
  basis_sum: jax.Array  # (3, K)

  @classmethod
  def from_model(cls, model: MorphableModel) -> 'LandmarkBases':
    idx = model.landmark_indices
    id_b = model.id_basis[:, idx] * model.id_std[:, None, None]
    exp_b = model.exp_basis[:, idx] * model.exp_std[:, None, None]
    return _landmark_bases(model.mean[idx], id_b, exp_b)


@jax.jit
def _landmark_bases(mean, id_basis, exp_basis) -> LandmarkBases:
  both = jnp.concatenate([exp_basis, id_basis], axis=0)
  hi = jax.lax.Precision.HIGHEST
  gram = jnp.einsum('kli,mlj->ijkm', both, both, precision=hi)
  mean_basis = jnp.einsum('li,klj->ijk', mean, both, precision=hi)
  return LandmarkBases(mean, id_basis, exp_basis, both, gram, mean_basis, jnp.sum(both, axis=1).T)


class PoseState(NamedTuple):
  rot: jax.Array  # (T, 3, 3)
  trans: jax.Array  # (T, 2)
  log_scale: jax.Array  # (T,)
  p_exp: jax.Array  # (T, K_exp)
  p_id: jax.Array  # (K_id,)


def validate_landmarks(landmarks, num_landmarks: int, name: str = 'landmarks') -> np.ndarray:
  """(B, L, 2) or (B, L, 3) finite points -> (B, L, 2) float32; LandmarkError naming the field / frame otherwise."""
  a = np.asarray(landmarks)
  if a.ndim != 3 or a.shape[-1] not in (2, 3):
    raise LandmarkError(f'{name}: expected shape (frames, {num_landmarks}, 2 or 3), got {a.shape}.')
  if a.shape[0] == 0:
    raise LandmarkError(f'{name}: no frames.')
  if a.shape[1] != num_landmarks:
    raise LandmarkError(f'{name}: {a.shape[1]} points per frame but the 3DMM has {num_landmarks} landmark '
                        f'vertices (landmark_indices); use a model made for this landmark detector.')
  if not np.issubdtype(a.dtype, np.number):
    raise LandmarkError(f'{name}: dtype {a.dtype} is not numeric.')
  bad = ~np.isfinite(a).all(axis=(1, 2))
  if bad.any():
    frames = np.flatnonzero(bad)
    raise LandmarkError(f'{name}: frame {frames[0]} has NaN or inf coordinates ({len(frames)} frame(s) affected: '
                        f'{frames[:10].tolist()}).')
  return a[..., :2].astype(np.float32)


def initial_camera(mean_l: jax.Array, points: jax.Array):
  """Closed-form scaled-orthographic camera from an affine fit of mean_l (L, 3) to points (L, 2).

  Returns (R (3, 3), translation (2,), log_scale ()).
  """
  m0 = jnp.mean(mean_l, axis=0)
  q0 = jnp.mean(points, axis=0)
  mc, qc = mean_l - m0, points - q0
  affine = jnp.linalg.solve(mc.T @ mc, mc.T @ qc).T  # (2, 3): qc ~ mc @ affine.T
  rows = affine * _FLIP[:, None]  # = s R[:2]
  u, sv, vt = jnp.linalg.svd(rows, full_matrices=False)
  r2 = u @ vt  # Nearest pair of orthonormal rows.
  scale = jnp.mean(sv)
  rot = jnp.concatenate([r2, jnp.cross(r2[0], r2[1])[None]], axis=0)
  trans = q0 - scale * _FLIP * (rot @ m0)[:2]
  return rot, trans, jnp.log(scale)


def frame_residual(bases: LandmarkBases, rot, trans, log_scale, p_exp, p_id, points):
  """proj(c, v(p_id, p_exp)) - points: (L, 2) pixels."""
  v = bases.mean + jnp.einsum('k,klc->lc', jnp.concatenate([p_exp, p_id]), bases.basis)
  w = v @ rot.T
  return jnp.exp(log_scale) * _FLIP * w[:, :2] + trans - points


def frame_jacobian(bases: LandmarkBases, rot, trans, log_scale, p_exp, p_id, points):
  """Residual (2L,) and its Jacobian (2L, 6 + K_exp + K_id) wrt [rotation increment, translation, log-scale,
  p_exp, p_id]; the rotation increment w acts as R <- exp([w]_x) R."""
  num_l = points.shape[0]
  v = bases.mean + jnp.einsum('k,klc->lc', p_id, bases.id_basis) + jnp.einsum('k,klc->lc', p_exp, bases.exp_basis)
  w = v @ rot.T
  s = jnp.exp(log_scale)
  proj = s * _FLIP * w[:, :2]
  res = proj + trans - points
  sfr = s * _FLIP[:, None] * rot[:2]  # (2, 3): d proj / d v
  d_rot = s * _FLIP[None, :, None] * -cam_lib.skew(w)[:, :2, :]  # (L, 2, 3): d(exp(w) R v) = -[Rv]_x dw
  d_trans = jnp.broadcast_to(jnp.eye(2), (num_l, 2, 2))
  d_scale = proj[:, :, None]
  d_exp = jnp.einsum('ij,klj->lik', sfr, bases.exp_basis)
  d_id = jnp.einsum('ij,klj->lik', sfr, bases.id_basis)
  jac = jnp.concatenate([d_rot, d_trans, d_scale, d_exp, d_id], axis=-1)
  return res.reshape(-1), jac.reshape(2 * num_l, -1)


def frame_normal_equations(bases: LandmarkBases, rot, trans, log_scale, p_exp, p_id, points):
  """J^T J (n, n), J^T r (n,) and |r|^2 of `frame_jacobian` without forming J (n = 6 + K_exp + K_id).

  The model is linear in p given the camera, so every block that pairs a coefficient with something bilinear in the
  vertices comes from the precomputed moments: with A = d proj / d v = s F R[:2] (F flips y), M = A^T A and
  V[i, j] = sum_l v_l[i] B_l[j] = mean_basis[i, j] + gram[i, j]^T p,
    J_c^T J_c = sum_ij M_ij gram[i, j],   scale row of J_pose^T J_c = sum_ij M_ij V[i, j],
    rotation row k = -sum_ij (R^T [e_k]_x s S^T F A)_ij V[i, j],   translation rows = A basis_sum.
  Only the vertices, J_pose (6 columns) and J_c^T r touch every landmark: a frame costs O(L K + K^2).
  """
  p = jnp.concatenate([p_exp, p_id])
  v = bases.mean + jnp.einsum('k,klc->lc', p, bases.basis)
  h_p, g_p, h_pc, h_cc, res_a, sq = _frame_blocks(bases, v, rot, trans, log_scale, p, points)
  g_c = jnp.einsum('lc,klc->k', res_a, bases.basis)
  hess = jnp.block([[h_p, h_pc], [h_pc.T, h_cc]])
  return hess, jnp.concatenate([g_p, g_c]), sq


def _frame_blocks(bases: LandmarkBases, v, rot, trans, log_scale, p, points):
  """Per-frame pieces of `frame_normal_equations` given the vertices v (L, 3): J_pose^T J_pose, J_pose^T r,
  J_pose^T J_c, J_c^T J_c, A^T r per landmark (L, 3) (J_c^T r = its contraction with the basis) and |r|^2."""
  w = v @ rot.T
  s = jnp.exp(log_scale)
  proj = s * _FLIP * w[:, :2]
  res = proj + trans - points  # (L, 2)
  sfr = s * _FLIP[:, None] * rot[:2]  # A: (2, 3)
  d_rot = s * _FLIP[None, :, None] * -cam_lib.skew(w)[:, :2, :]  # (L, 2, 3)
  d_trans = jnp.broadcast_to(jnp.eye(2), d_rot.shape[:1] + (2, 2))
  j_pose = jnp.concatenate([d_rot, d_trans, proj[:, :, None]], axis=-1)  # (L, 2, 6)
  h_pp = jnp.einsum('lri,lrj->ij', j_pose, j_pose)
  g_p = jnp.einsum('lri,lr->i', j_pose, res)
  m = sfr.T @ sfr
  vb = bases.mean_basis + jnp.einsum('ijkm,k->ijm', bases.gram, p)  # V (3, 3, K)
  n = s * jnp.concatenate([sfr[:1], -sfr[1:2], jnp.zeros((1, 3))], axis=0)  # s S^T F A
  c = jnp.einsum('ai,kab,bj->kij', rot, cam_lib.skew(jnp.eye(3)), n)  # C_k = R^T [e_k]_x N
  h_rot = -jnp.einsum('kij,ijm->km', c, vb)
  h_trans = sfr @ bases.basis_sum
  h_scale = jnp.einsum('ij,ijm->m', m, vb)
  h_pc = jnp.concatenate([h_rot, h_trans, h_scale[None]], axis=0)  # (6, K)
  h_cc = jnp.einsum('ij,ijkm->km', m, bases.gram)
  return h_pp, g_p, h_pc, h_cc, res @ sfr, jnp.sum(res ** 2)


def _apply_step(state: PoseState, d_pose, d_exp, d_id, settings: FitSettings) -> PoseState:
  rot = cam_lib.axis_angle_to_matrix(d_pose[:, :3]) @ state.rot
  return PoseState(rot=rot, trans=state.trans + d_pose[:, 3:5], log_scale=state.log_scale + d_pose[:, 5],
                   p_exp=jnp.clip(state.p_exp + d_exp, -settings.exp_bound, settings.exp_bound),
                   p_id=jnp.clip(state.p_id + d_id, -settings.id_bound, settings.id_bound))


def _smoothness_terms(p_exp, weight):
  """Gradient of 1/2 w sum |p_t - p_{t-1}|^2 wrt p_t and each frame's number of neighbours (Jacobi diagonal)."""
  t = p_exp.shape[0]
  prev = jnp.concatenate([p_exp[:1], p_exp[:-1]], axis=0)
  nxt = jnp.concatenate([p_exp[1:], p_exp[-1:]], axis=0)
  grad = weight * ((p_exp - prev) + (p_exp - nxt))  # The copied end frames contribute 0.
  neighbours = jnp.full((t,), 2.0).at[0].add(-1.0).at[-1].add(-1.0)
  return grad, weight * jnp.maximum(neighbours, 0.0)


def energy(bases: LandmarkBases, state: PoseState, points, settings: FitSettings, weights=None):
  """E of the module docstring (each frame's landmark term times weights[t], default 1) and the per-frame sum of
  squared residuals (T,)."""
  num_t = points.shape[0]
  p = jnp.concatenate([state.p_exp, jnp.broadcast_to(state.p_id, (num_t,) + state.p_id.shape)], axis=1)
  verts = bases.mean + (p @ bases.basis.reshape(bases.basis.shape[0], -1)).reshape(num_t, -1, 3)
  w = jnp.einsum('tij,tlj->tli', state.rot, verts)
  res = jnp.exp(state.log_scale)[:, None, None] * _FLIP * w[..., :2] + state.trans[:, None] - points
  sq = jnp.sum(res ** 2, axis=(1, 2))
  data = jnp.sum(sq) if weights is None else jnp.sum(weights * sq)
  e = 0.5 * data + 0.5 * settings.id_prior * jnp.sum(state.p_id ** 2)
  e += 0.5 * settings.exp_prior * jnp.sum(state.p_exp ** 2)
  e += 0.5 * settings.temporal_smoothness * jnp.sum((state.p_exp[1:] - state.p_exp[:-1]) ** 2)
  return e, sq


def _lm_step(bases: LandmarkBases, state: PoseState, points, damping, settings: FitSettings, weights,
             fix_identity: bool = False):
  """One damped Gauss-Newton step of the arrow-structured normal equations (Schur complement on p_id; with
  fix_identity p_id stays as it is and only the per-frame blocks are solved). weights (T,) scale each frame's
  landmark term (0 = a padding frame that must not pull on the shared identity)."""
  k_exp = state.p_exp.shape[1]
  num_t = points.shape[0]
  p = jnp.concatenate([state.p_exp, jnp.broadcast_to(state.p_id, (num_t,) + state.p_id.shape)], axis=1)
  flat_basis = bases.basis.reshape(bases.basis.shape[0], -1)  # (K, 3L)
  # Vertices and J_c^T r of all frames as two plain GEMMs over the clip.
  verts = bases.mean + (p @ flat_basis).reshape(num_t, -1, 3)
  h_p, g_p, h_pc, h_cc, res_a, _ = jax.vmap(_frame_blocks, in_axes=(None, 0, 0, 0, 0, 0, 0))(
      bases, verts, state.rot, state.trans, state.log_scale, p, points)
  g_c = res_a.reshape(num_t, -1) @ flat_basis.T  # (T, K)
  scale = lambda a: a * weights.reshape((-1,) + (1,) * (a.ndim - 1))
  h_p, g_p, h_pc, h_cc, g_c = map(scale, (h_p, g_p, h_pc, h_cc, g_c))
  haa = jnp.concatenate([jnp.concatenate([h_p, h_pc[:, :, :k_exp]], axis=2),
                         jnp.concatenate([jnp.swapaxes(h_pc[:, :, :k_exp], 1, 2), h_cc[:, :k_exp, :k_exp]], axis=2)],
                        axis=1)
  hab = jnp.concatenate([h_pc[:, :, k_exp:], h_cc[:, :k_exp, k_exp:]], axis=1)
  hbb = jnp.sum(h_cc[:, k_exp:, k_exp:], axis=0)
  ga = jnp.concatenate([g_p, g_c[:, :k_exp]], axis=1)
  gb = jnp.sum(g_c[:, k_exp:], axis=0)
  smooth_grad, smooth_diag = _smoothness_terms(state.p_exp, settings.temporal_smoothness)
  prior_a = jnp.concatenate([jnp.zeros(_POSE), jnp.full((k_exp,), settings.exp_prior)])
  ga = ga + jnp.concatenate([jnp.zeros((state.p_exp.shape[0], _POSE)),
                             settings.exp_prior * state.p_exp + smooth_grad], axis=1)
  diag_a = jnp.concatenate([jnp.zeros((state.p_exp.shape[0], _POSE)),
                            jnp.broadcast_to(smooth_diag[:, None], state.p_exp.shape)], axis=1) + prior_a
  haa = haa + jax.vmap(jnp.diag)(diag_a)
  hbb = hbb + settings.id_prior * jnp.eye(hbb.shape[0])
  gb = gb + settings.id_prior * state.p_id
  # Marquardt damping, with Jacobi scaling so pixels, radians and std units are solved on an equal footing.
  haa = haa + jax.vmap(jnp.diag)(damping * jnp.diagonal(haa, axis1=1, axis2=2) + 1e-6)
  hbb = hbb + jnp.diag(damping * jnp.diagonal(hbb) + 1e-6)
  sa = jax.lax.rsqrt(jnp.diagonal(haa, axis1=1, axis2=2))  # (T, na)
  sb = jax.lax.rsqrt(jnp.diagonal(hbb))
  haa_n = haa * sa[:, :, None] * sa[:, None, :]
  hab_n = hab * sa[:, :, None] * sb[None, None, :]
  hbb_n = hbb * sb[:, None] * sb[None, :]
  ga_n, gb_n = ga * sa, gb * sb
  chol = jnp.linalg.cholesky(haa_n)
  rhs_a = jnp.concatenate([hab_n, ga_n[:, :, None]], axis=-1)
  # Batched triangular solves (vmapped cho_solve is ~100x slower on CPU).
  half = jax.scipy.linalg.solve_triangular(chol, rhs_a, lower=True)
  sol = jax.scipy.linalg.solve_triangular(chol, half, lower=True, trans='T')
  ainv_hab, ainv_ga = sol[..., :-1], sol[..., -1]  # (T, na, K_id), (T, na)
  schur = hbb_n - jnp.einsum('tai,taj->ij', hab_n, ainv_hab)
  rhs = -(gb_n - jnp.einsum('tai,ta->i', hab_n, ainv_ga))
  db_n = jnp.zeros_like(gb_n) if fix_identity else jnp.linalg.solve(schur, rhs)
  da_n = -(ainv_ga + jnp.einsum('taj,j->ta', ainv_hab, db_n))
  da, db = da_n * sa, db_n * sb
  return _apply_step(state, da[:, :_POSE], da[:, _POSE:], db, settings)


def fit_clip(bases: LandmarkBases, points: jax.Array, settings: FitSettings, weights=None, p_id=None):
  """Fits one clip (T, L, 2) with a shared identity; returns (PoseState, per-frame sum of squared residuals).

  weights (T,): each frame's landmark term is multiplied by it (default 1; 0 for padding frames, which then follow
  their points without pulling on the identity). p_id (K_id,): when given, the identity is held fixed at it (a later
  chunk of a long video, or the reference's identity) and only camera and expression are fitted.
  """
  t = points.shape[0]
  weights = jnp.ones((t,), jnp.float32) if weights is None else jnp.asarray(weights, jnp.float32)
  fix = p_id is not None
  p_id = jnp.zeros((bases.id_basis.shape[0],), jnp.float32) if p_id is None else jnp.asarray(p_id, jnp.float32)
  return _fit_clip(bases, points, settings._replace(iterations=0), settings.iterations, weights, p_id, fix)


@functools.partial(jax.jit, static_argnames=('iterations', 'fix_identity'))
def _fit_clip(bases: LandmarkBases, points: jax.Array, settings: FitSettings, iterations: int, weights=None,
              p_id=None, fix_identity: bool = False):
  t = points.shape[0]
  weights = jnp.ones((t,), jnp.float32) if weights is None else weights
  p_id = jnp.zeros((bases.id_basis.shape[0],), jnp.float32) if p_id is None else p_id
  rot, trans, log_scale = jax.vmap(initial_camera, in_axes=(None, 0))(bases.mean, points)
  state = PoseState(rot, trans, log_scale, jnp.zeros((t, bases.exp_basis.shape[0])), p_id)
  return _refine(bases, points, settings, iterations, weights, state, fix_identity)


def _refine(bases: LandmarkBases, points: jax.Array, settings: FitSettings, iterations: int, weights,
            state: PoseState, fix_identity: bool = False):
  """`iterations` LM steps from `state` (traced inside a jitted caller); E never increases. Returns (PoseState,
  per-frame sum of squared residuals)."""
  e0, _ = energy(bases, state, points, settings, weights)

  def body(carry, _):
    state, e, damping = carry
    cand = _lm_step(bases, state, points, damping, settings, weights, fix_identity)
    e_cand, _ = energy(bases, cand, points, settings, weights)
    better = e_cand < e  # NaN candidates are never better.
    state = jax.tree_util.tree_map(lambda a, b: jnp.where(better, a, b), cand, state)
    return (state, jnp.where(better, e_cand, e), jnp.where(better, damping / 3.0, damping * 4.0)), None

  (state, _, _), _ = jax.lax.scan(body, (state, e0, jnp.float32(1e-3)), None, length=iterations)
  _, sq = energy(bases, state, points, settings)
  return state, sq


def _result(state: PoseState, sq, num_landmarks: int, settings: FitSettings, batch: int) -> FitResult:
  rms = jnp.sqrt(sq / num_landmarks)
  p_id = jnp.broadcast_to(state.p_id, (batch,) + state.p_id.shape[-1:])
  cam = cam_lib.Camera(rotation=cam_lib.matrix_to_rotation_6d(state.rot), translation=state.trans,
                       scale=jnp.exp(state.log_scale))
  return FitResult(camera=cam, p_id=p_id, p_exp=state.p_exp, residual_px=rms,
                   flagged=~(rms <= settings.max_residual_px))


def fit_video(model: MorphableModel, landmarks, config, weights=None, p_id=None) -> FitResult:
  """One identity shared by all T frames (T, L, 2 or 3), per-frame camera and expression (see `fit_clip` for
  weights and a fixed p_id)."""
  points = jnp.asarray(validate_landmarks(landmarks, model.num_landmarks))
  settings = FitSettings.from_config(config)
  state, sq = fit_clip(LandmarkBases.from_model(model), points, settings, weights, p_id)
  return _result(state, sq, points.shape[1], settings, points.shape[0])


@functools.partial(jax.jit, static_argnames=('iterations',))
def _fit_independent(bases: LandmarkBases, points: jax.Array, settings: FitSettings, iterations: int,
                     init: PoseState | None = None):
  if init is None:
    state, sq = jax.vmap(lambda p: _fit_clip(bases, p[None], settings, iterations))(points)
  else:
    one = jnp.ones((1,), jnp.float32)
    start = lambda s: PoseState(s.rot[None], s.trans[None], s.log_scale[None], s.p_exp[None], s.p_id)
    state, sq = jax.vmap(lambda p, s: _refine(bases, p[None], settings, iterations, one, start(s)))(points, init)
  squeeze = lambda a: a[:, 0]
  return PoseState(squeeze(state.rot), squeeze(state.trans), squeeze(state.log_scale), squeeze(state.p_exp),
                   state.p_id), sq[:, 0]


def fit_each_frame(bases: LandmarkBases, points: jax.Array, settings: FitSettings, init: PoseState | None = None
                   ) -> tuple[PoseState, jax.Array]:
  """Every frame of points (B, L, 2) fitted on its own, batched and jitted: PoseState with p_id (B, K_id) and the
  per-frame sum of squared residuals (B,). The authors' per-frame reconstruction (one bounded fit per frame).

  init: a per-frame PoseState (rot (B, 3, 3), trans, log_scale, p_exp, p_id (B, K_id)) to start each frame's LM
  from instead of the closed-form camera and p = 0, e.g. the video fit's solution. Frames stay independent; as E
  never increases, each frame then ends at most at the energy it started with.
  """
  return _fit_independent(bases, points, settings._replace(iterations=0), settings.iterations, init)


def start_state(p_id, p_exp, camera: cam_lib.Camera) -> PoseState:
  """The per-frame PoseState of a fit given as arrays (p_id (K_id,) or (B, K_id), p_exp (B, K_exp), a camera batched
  over B), to start `fit_each_frame` from."""
  p_exp = jnp.asarray(p_exp, jnp.float32)
  p_id = jnp.broadcast_to(jnp.asarray(p_id, jnp.float32), p_exp.shape[:1] + jnp.shape(p_id)[-1:])
  cam = cam_lib.Camera(*(jnp.asarray(a, jnp.float32) for a in (camera.rotation, camera.translation, camera.scale)))
  return PoseState(cam_lib.rotation_matrix(cam), cam.translation, jnp.log(cam.scale), p_exp, p_id)


def fit_frames(model: MorphableModel, landmarks, config, init: FitResult | None = None) -> FitResult:
  """Every frame (B, L, 2 or 3) fitted on its own: own camera, identity and expression (e.g. a reference image).
  init: a FitResult of the same B frames (e.g. `fit_video`'s) to start each frame's fit from (`fit_each_frame`)."""
  points = jnp.asarray(validate_landmarks(landmarks, model.num_landmarks))
  settings = FitSettings.from_config(config)
  start = None if init is None else start_state(init.p_id, init.p_exp, init.camera)
  state, sq = fit_each_frame(LandmarkBases.from_model(model), points, settings, start)
  rms = jnp.sqrt(sq / points.shape[1])
  cam = cam_lib.Camera(rotation=cam_lib.matrix_to_rotation_6d(state.rot), translation=state.trans,
                       scale=jnp.exp(state.log_scale))
  return FitResult(camera=cam, p_id=state.p_id, p_exp=state.p_exp, residual_px=rms,
                   flagged=~(rms <= settings.max_residual_px))
