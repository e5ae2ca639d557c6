"""config.model.blocks.upsample_init (issue 20.4, docs/grid_artefacts.md): ICNR before G's pixel shuffles, and
bench/grid_spectrum.py's measure of a grid."""
import importlib.util
import pathlib

import jax
import numpy as np
import pytest

from headgan_jax import errors
from headgan_jax.nn import blocks
from headgan_jax.nn import generator as gen_lib
from train_configs import small_train_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def _bench():
  spec = importlib.util.spec_from_file_location('bench_grid_spectrum', REPO / 'bench' / 'grid_spectrum.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _phase_spread(x: np.ndarray) -> float:
  """Largest difference between the 4 sub-pixel phases of a 2x-shuffled map, relative to its largest value."""
  x = np.asarray(x)
  phases = [x[:, i::2, j::2] for i in range(2) for j in range(2)]
  return max(float(np.abs(p - phases[0]).max()) for p in phases) / float(np.abs(x).max())


def test_icnr_conv_then_pixel_shuffle_is_a_nearest_upsampling():
  x = jax.random.normal(jax.random.key(1), (2, 5, 5, 6))
  for spectral_norm in (False, True):
    conv = blocks.Conv(12, 3, spectral_norm=spectral_norm, init_gain=1.0, icnr_factor=2)
    variables = conv.init(jax.random.key(0), x)
    y = blocks.pixel_shuffle(conv.apply(variables, x, mutable=['batch_stats'])[0], 2)
    assert _phase_spread(y) < 1e-6
    kernel = next(np.asarray(k) for k in jax.tree.leaves(variables['params']) if k.ndim == 4)
    if not spectral_norm:  # Xavier's scale for the whole kernel (fan-avg 81: std 1/9), not another init's.
      assert 0.07 < kernel.std() < 0.16
  plain = blocks.Conv(12, 3, init_gain=1.0)
  y = blocks.pixel_shuffle(plain.apply(plain.init(jax.random.key(0), x), x), 2)
  assert _phase_spread(y) > 0.1


@pytest.mark.parametrize('init', ['default', 'icnr'])
def test_untrained_generator_sub_pixel_phases(init):
  """With ICNR, R's pixel shuffles start as nearest upsamplings (no period-2 pattern) and G's untrained frame has a
  far weaker period-2 line in its spectrum; with the default (authors') init both carry the pattern."""
  c = small_train_config()
  c.model.blocks.upsample_init = init
  g = gen_lib.make_generator(c)
  key = jax.random.key(0)
  inputs = [jax.random.uniform(jax.random.fold_in(key, i), x.shape, minval=-1, maxval=1)
            for i, x in enumerate(gen_lib.example_inputs(c, 4))]
  variables = g.init(key, *inputs)
  out, state = g.apply(variables, *inputs, capture_intermediates=lambda m, _: (m.name or '').startswith('shuffle'),
                       mutable=['intermediates'])
  shuffles = state['intermediates']['render_net']
  spreads = [_phase_spread(shuffles[f'shuffle_{i}']['__call__'][0]) for i in range(c.model.num_down)]
  bench = _bench()
  spectrum = np.asarray(bench.power_spectra(out.image)).mean(0)
  pnr = bench.analyse(spectrum, spectrum, [2])['period_2']['all']['pnr_gen']
  if init == 'icnr':
    assert max(spreads) < 1e-6 and pnr < 10
  else:
    assert min(spreads) > 0.1 and pnr > 30


def test_unknown_upsample_init_is_one_config_error():
  c = small_train_config()
  c.model.blocks.upsample_init = 'bogus'
  with pytest.raises(errors.ConfigError, match='config.model.blocks.upsample_init'):
    blocks.block_settings(c)


def test_grid_spectrum_finds_a_checkerboard_and_not_noise():
  """The bench's peak-to-neighbourhood ratio: large at period 2 for noise plus a 2 px checkerboard, ~1 for noise."""
  bench = _bench()
  rng = np.random.default_rng(0)
  noise = rng.normal(0, 0.2, (8, 32, 32, 3)).astype(np.float32)
  board = 0.1 * (-1.0) ** np.add.outer(np.arange(32), np.arange(32))[None, :, :, None]
  clean = np.asarray(bench.power_spectra(noise)).mean(0)
  grid = np.asarray(bench.power_spectra(noise + board.astype(np.float32))).mean(0)
  result = bench.analyse(grid, clean, [2, 4])
  assert result['period_2']['xy']['pnr_gen'] > 20 and result['period_2']['xy']['gen_over_real'] > 20
  assert 0.5 < result['period_2']['xy']['pnr_real'] < 2
  assert 0.5 < result['period_4']['all']['gen_over_real'] < 2
