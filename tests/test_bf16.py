"""bfloat16 compute (config.runtime.compute_dtype = 'bfloat16', issue 21 item 4): training stays right.

50 train steps of HeadGAN (F with the warp, R, D, D_m, every loss but VGG; D and D_m updated every 4th step) at
16x16 with one down level, from one initial state on the same 50 batches, in float32 and in bfloat16 compute
(parameters and Adam state float32 in both):
- no NaN / inf in any metric (every loss term, both gradient norms) at any step, nor in any parameter, spectral-norm
  vector or Adam moment after the last step;
- on the first step (same parameters, same batch: nothing but rounding differs) every compared term is within 2^-8
  (bf16's relative resolution) of float32; measured at most 1.7e-3 (D_m's feature matching);
- the bf16 loss curves follow the float32 ones. The tolerance is the float32 run's own sensitivity: a third run, in
  float32, starts from G's parameters multiplied by (1 + 2^-9 noise), i.e. perturbed by bf16's relative rounding
  once. A GAN amplifies any difference, so after 50 steps float32 is "the truth" only up to that run's distance;
  bf16 rounds every activation on every step, a larger perturbation, so it may be further, but not by much. Per
  compared term, mean over steps |bf16 - f32| / mean |f32| must stay within TOLERANCE_FACTOR = 3 x that of the
  perturbed run. Measured: bf16 at most 1.65x (D_m's feature matching). With a float32 island removed the test
  fails (docs/accelerators.md, "4. bfloat16"): instance-norm statistics in bf16 give the flow-mask L1 4.05x and a
  first-step error of 4.3e-3; the warp's sampling grid in bf16 gives F's L1 5.75x and a first-step |grad G| error
  of 5.3e-3.
Time: 36 s on the 2-core machine with an empty compile cache (two compiles, 150 steps of 2 examples at 16 px).
"""
from __future__ import annotations

import jax
import numpy as np
import pytest

import train_configs
from headgan_jax.data import batch as batch_lib
from headgan_jax.train import state as state_lib, step as step_lib

NUM_STEPS = 50
# The terms whose curves are compared: every term with signal at initialisation. L_F^Temp (float noise at
# initialisation: the flow is ~0, see tests/test_remat.py) and the hinge terms of G (-mean D(fake), ~1e-2 and
# sign-changing) are checked for finiteness only.
COMPARED = ('g_total', 'g_l1', 'f_l1', 'f_mask', 'g_fm', 'gm_fm', 'd_total', 'g_grad_norm')
TOLERANCE_FACTOR = 3.0  # x the float32 run's own sensitivity (module docstring).
PERTURBATION = 2.0**-9  # bf16's relative rounding (8 significant bits).
FIRST_STEP_TOLERANCE = 2.0**-8  # Relative, on the first step's terms: bf16's relative resolution.


def bf16_test_config(dtype: str):
  """The train tests' small config at 16x16, one down level (F's warp at 16 and 8 px), one-scale two-layer
  discriminators; XLA's own convolution in both dtypes, so that only the dtype differs."""
  c = train_configs.small_train_config()
  c.image_size = 16
  c.model.num_down = 1
  c.model.blocks.spade_hidden = 8
  c.disc.num_scales = 1
  c.disc.num_layers = 2
  c.disc.mouth_size = 8
  c.runtime.conv_impl = 'xla'
  c.runtime.compute_dtype = dtype
  return c


def perturbed(state: state_lib.TrainState, rel: float, seed: int = 0) -> state_lib.TrainState:
  """`state` with G's parameters multiplied by (1 + rel * standard normal noise)."""
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda x: (x * (1 + rel * rng.standard_normal(x.shape))).astype(x.dtype), state.g.params)
  return state.replace(g=state.g.replace(params=params))


def all_finite(tree) -> bool:
  return all(bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree.leaves(tree))


def train_curves(dtype: str, state, batches) -> tuple[dict[str, np.ndarray], bool]:
  """(metric name -> its value at each step, whether every metric and the final state are finite)."""
  config = bf16_test_config(dtype)
  models = state_lib.make_models(config)
  step = jax.jit(step_lib.train_step_fn(config, models, state_lib.make_optimizers(config)))
  history = []
  for batch in batches:
    state, metrics = step(state, batch)
    history.append(metrics)
  history, state = jax.device_get((history, state))
  curves = {k: np.asarray([m[k] for m in history]) for k in step_lib.METRIC_NAMES}
  return curves, all_finite(curves) and all_finite(state)


def initial_state_and_batches():
  config = bf16_test_config('float32')
  models = state_lib.make_models(config)
  optimizers = state_lib.make_optimizers(config)
  state = jax.device_get(state_lib.jit_init_state(config, models, optimizers)(jax.random.key(0)))
  stacked = jax.device_get(jax.jit(jax.vmap(lambda k: batch_lib.synthetic_batch(k, config)))(
      jax.random.split(jax.random.key(1), NUM_STEPS)))
  return state, [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(NUM_STEPS)]


def curve_distance(a: np.ndarray, b: np.ndarray) -> float:
  """mean over steps |a - b|, relative to mean |a|."""
  return float(np.mean(np.abs(a - b)) / max(float(np.mean(np.abs(a))), 1e-12))


def excess(ref: dict, perturbed_run: dict, candidate: dict) -> dict[str, tuple[float, float]]:
  """Per compared term whose curve left the tolerance: (its distance to ref, the allowed distance)."""
  out = {}
  for k in COMPARED:
    allowed = TOLERANCE_FACTOR * curve_distance(ref[k], perturbed_run[k])
    got = curve_distance(ref[k], candidate[k])
    if got > allowed:
      out[k] = (got, allowed)
  return out


def first_step_excess(ref: dict, candidate: dict) -> dict[str, float]:
  """Per compared term whose first-step value (same parameters, same batch) is further than FIRST_STEP_TOLERANCE
  from ref, relatively: that relative error."""
  rel = {k: abs(float(candidate[k][0] - ref[k][0])) / abs(float(ref[k][0])) for k in COMPARED}
  return {k: v for k, v in rel.items() if v > FIRST_STEP_TOLERANCE}


@pytest.fixture(scope='module')
def runs():
  state, batches = initial_state_and_batches()
  return {'f32': train_curves('float32', state, batches),
          'f32_perturbed': train_curves('float32', perturbed(state, PERTURBATION), batches),
          'bf16': train_curves('bfloat16', state, batches)}


def test_bf16_training_has_no_nan_or_inf(runs):
  for name, (curves, finite) in runs.items():
    assert finite, f'{name}: a NaN / inf in a metric or in the final state'
  assert float(runs['bf16'][0]['d_updated'].sum()) == NUM_STEPS // 4  # D and D_m did train.


def test_bf16_loss_curves_follow_float32(runs):
  ref, pert, bf16 = runs['f32'][0], runs['f32_perturbed'][0], runs['bf16'][0]
  report = ', '.join(f'{k} {curve_distance(ref[k], bf16[k]):.2e} (f32 perturbed {curve_distance(ref[k], pert[k]):.2e})'
                     for k in COMPARED)
  print(f'bf16 vs f32 over {NUM_STEPS} steps: {report}')
  assert not first_step_excess(ref, bf16), f'first step, relative error: {first_step_excess(ref, bf16)}'
  assert not excess(ref, pert, bf16), f'bf16 curves left the tolerance: {excess(ref, pert, bf16)}; {report}'
  # The runs did move: the comparison is not between two copies of the initial losses.
  assert curve_distance(ref['g_total'][:1], ref['g_total'][-10:]) > 0.05
