"""config.runtime.remat (issue 21, item 3): rematerialising the SPADE / AdaIN blocks changes memory, not maths.

- The same parameters (names, shapes) whatever the policy, so checkpoints move between them.
- L_G's value, every loss term, G's gradient and the advanced spectral-norm statistics agree to 1e-5 with
  'blocks' and 'blocks_convs' against 'none' on the train tests' small config (F, R, D, D_m, all losses but VGG),
  with lambda_Temp = 0: at initialisation the flow is ~0, so the warped features of frames t-1 and t differ by
  rounding only (L_F^Temp = 1.6e-7 here) and L_F^Temp's L1 gradient is 30 x sign(rounding noise), which any other
  summation order flips. Measured with lambda_Temp = 30: 'none' compiled at LLVM -O0 (the tests' flags) against
  'none' at -O2 differs by 14 % in F's gradients, 'blocks' against 'none' by 5 % at -O0 and by 3e-5 at -O2, while
  R's gradients agree to 2e-6 every way. Gradients that are identically zero in exact arithmetic (a conv bias that
  only feeds an instance norm, e.g. SPADE blocks' conv_1 before the next block's norm) are float noise: for them
  both sides must be below 1e-6 of G's largest gradient.
- The recomputation survives XLA's compilation (more FLOPs with 'blocks'); the memory figures are
  bench/budgets.py's (docs/accelerators.md).
"""
from __future__ import annotations

import jax
import numpy as np
import pytest

import train_configs
from headgan_jax import errors
from headgan_jax.data import batch as batch_lib
from headgan_jax.nn import blocks
from headgan_jax.train import state as state_lib, step as step_lib

POLICIES = ('blocks', 'blocks_convs')


def _config(remat: str, temp: float = 0.0):
  c = train_configs.small_train_config()
  c.runtime.conv_impl = 'xla'  # The same convolution in every variant (and the one accelerators use).
  c.runtime.remat = remat
  c.loss.temp = temp  # See the module docstring.
  return c


@pytest.fixture(scope='module')
def setup():
  config = _config('none')
  models = state_lib.make_models(config)
  optimizers = state_lib.make_optimizers(config)
  state = state_lib.jit_init_state(config, models, optimizers)(jax.random.key(0))
  batch = batch_lib.synthetic_batch(jax.random.key(1), config)
  return config, state, batch


def _g_value_and_grad(remat: str):
  """L_G and its gradient w.r.t. G's parameters, jitted: the program the remat policy changes."""
  config = _config(remat)
  fns = step_lib.loss_fns(config, state_lib.make_models(config))
  return jax.jit(jax.value_and_grad(fns.generator, has_aux=True))


def _g_loss_and_grads(remat: str, state, batch):
  (total, (terms, g_stats, fake, _)), grads = _g_value_and_grad(remat)(state.g.params, state, batch, None)
  return jax.device_get((total, terms, g_stats, fake, grads))


def test_remat_config_is_checked():
  c = _config('everything')
  with pytest.raises(errors.ConfigError, match='config.runtime.remat'):
    blocks.block_settings(c)


@pytest.mark.parametrize('remat', POLICIES)
def test_same_parameters(remat, setup):
  config, state, _ = setup
  other = jax.eval_shape(lambda k: state_lib.init_state(k, _config(remat)), jax.random.key(0))
  assert jax.tree.structure(other) == jax.tree.structure(state)
  assert jax.tree.map(lambda x: (x.shape, x.dtype), other) == jax.tree.map(lambda x: (x.shape, x.dtype), state)


def test_losses_and_gradients_equal(setup):
  _, state, batch = setup
  ref = _g_loss_and_grads('none', state, batch)
  for remat in POLICIES:
    got = _g_loss_and_grads(remat, state, batch)
    total, terms, stats, fake, grads = got
    np.testing.assert_allclose(total, ref[0], rtol=1e-5, err_msg=remat)
    for k in terms:
      np.testing.assert_allclose(terms[k], ref[1][k], rtol=1e-5, atol=1e-7, err_msg=f'{remat} {k}')
    np.testing.assert_allclose(fake, ref[3], rtol=1e-5, atol=1e-6, err_msg=remat)
    largest = max(float(np.max(np.abs(y))) for y in jax.tree.leaves(ref[4]))
    for name, a, b in ((f'{remat} stats', stats, ref[2]), (f'{remat} grads', grads, ref[4])):
      for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
        where = f'{name} {jax.tree_util.keystr(path)}'
        scale = float(np.max(np.abs(y)))
        if name.endswith('grads') and scale < 1e-6 * largest:  # Zero in exact arithmetic: float noise.
          assert float(np.max(np.abs(x))) < 1e-6 * largest, where
          continue
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5 * (scale or 1.0), err_msg=where)


def _compiled_g_step(remat: str, state, batch):
  """XLA's FLOPs and temporaries of L_G's value and gradient: the same program as test_losses_and_gradients_equal
  compiles (so it comes from the compile cache; the whole train step, D's update off, was compiled here afresh three
  times before 2026-12-03 for the same check: 37 s of the suite)."""
  compiled = _g_value_and_grad(remat).lower(state.g.params, state, batch, None).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost['flops']), int(compiled.memory_analysis().temp_size_in_bytes)


def test_recomputation_survives_compilation(setup):
  """XLA keeps the recomputation in G's backward pass (no CSE back into the forward pass): 'blocks' costs more FLOPs
  than 'none', 'blocks_convs' (elementwise work only) less than 'blocks'. The temporaries are printed, not asserted: XLA:CPU's
  scheduler runs the recomputed blocks early, so on a CPU compile they stay about level (docs/accelerators.md)."""
  _, state, batch = setup
  got = {remat: _compiled_g_step(remat, state, batch) for remat in ('none', *POLICIES)}
  print('L_G value and gradient (XLA:CPU, small config, batch 2): ' + ', '.join(
      f'{k} {f / 1e9:.3f} GFLOP, temp {t / 2**20:.2f} MiB' for k, (f, t) in got.items()))
  assert got['blocks'][0] > 1.02 * got['none'][0]
  assert got['none'][0] <= got['blocks_convs'][0] < got['blocks'][0]
