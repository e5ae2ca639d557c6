"""Blocks of the networks: pixel shuffle, resizing, SPADE, AdaIN, spectral norm, warping (tiny arrays, CPU)."""
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from headgan_jax import errors
from headgan_jax.nn import blocks
from headgan_jax.nn import flow as flow_lib

# Cheap XLA CPU compiles: these tests run small arrays, where compiling dominates.
FAST = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def _jit(fn, **kw):
  return jax.jit(fn, compiler_options=FAST, **kw)


def _instance_norm_np(x, eps=blocks.IN_EPSILON):
  mean = x.mean(axis=(1, 2), keepdims=True)
  var = x.var(axis=(1, 2), keepdims=True)
  return (x - mean) / np.sqrt(var + eps)


def _pixel_shuffle_reference(x_nchw, r):
  """PyTorch's PixelShuffle definition, written out: out[b, c, h r + i, w r + j] = in[b, c r^2 + i r + j, h, w]."""
  b, c, h, w = x_nchw.shape
  oc = c // (r * r)
  out = np.zeros((b, oc, h * r, w * r), x_nchw.dtype)
  for ci in range(oc):
    for i in range(r):
      for j in range(r):
        out[:, ci, i::r, j::r] = x_nchw[:, ci * r * r + i * r + j]
  return out


@pytest.mark.parametrize('r', [2, 3])
def test_pixel_shuffle_matches_pytorch_definition(r):
  x = np.random.default_rng(0).normal(size=(2, 4 * r * r, 3, 5)).astype(np.float32)  # NCHW
  want = _pixel_shuffle_reference(x, r).transpose(0, 2, 3, 1)
  got = np.asarray(blocks.pixel_shuffle(jnp.asarray(x.transpose(0, 2, 3, 1)), r))
  np.testing.assert_array_equal(got, want)
  torch = pytest.importorskip('torch')
  t = torch.nn.PixelShuffle(r)(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_array_equal(got, t)


def test_pixel_shuffle_rejects_bad_channels():
  with pytest.raises(ValueError, match='not divisible'):
    blocks.pixel_shuffle(jnp.zeros((1, 2, 2, 6)))


def test_resize_modes():
  x = jnp.arange(64, dtype=jnp.float32).reshape(1, 8, 8, 1)
  near = np.asarray(blocks.resize_to(x, 4, 4, 'nearest'))[0, ..., 0]
  # Half-pixel centres: output i reads input floor((i + 0.5) * 2) = 2 i + 1.
  np.testing.assert_array_equal(near, np.asarray(x)[0, 1::2, 1::2, 0])
  bil = np.asarray(blocks.resize_to(x, 4, 4, 'bilinear'))[0, ..., 0]
  xa = np.asarray(x)[0, ..., 0]
  np.testing.assert_allclose(bil, xa.reshape(4, 2, 4, 2).mean(axis=(1, 3)), rtol=1e-6)
  floor = np.asarray(blocks.resize_to(x, 4, 4, 'nearest_floor'))[0, ..., 0]
  np.testing.assert_array_equal(floor, np.asarray(x)[0, ::2, ::2, 0])  # PyTorch's legacy 'nearest': pixel 2 i.
  assert blocks.resize_to(x, 8, 8, 'bilinear') is x
  with pytest.raises(errors.ConfigError, match='spade_resize'):
    blocks.resize_to(x, 4, 4, 'bicubic')


def test_resize_matches_pytorch_interpolate():
  torch = pytest.importorskip('torch')
  x = np.random.default_rng(1).normal(size=(1, 6, 6, 2)).astype(np.float32)
  tx = torch.from_numpy(x.transpose(0, 3, 1, 2))
  cases = (('bilinear', 12), ('bilinear', 3), ('nearest', 12), ('nearest_floor', 12), ('nearest_floor', 3),
           ('nearest_floor', 4), ('nearest_floor', 9))
  for mode, size in cases:
    torch_mode = 'nearest' if mode == 'nearest_floor' else mode
    want = torch.nn.functional.interpolate(
        tx, size=(size, size), mode=torch_mode, **({'align_corners': False} if mode == 'bilinear' else {}))
    got = blocks.resize_to(jnp.asarray(x), size, size, mode)
    np.testing.assert_allclose(np.asarray(got), want.numpy().transpose(0, 2, 3, 1), atol=1e-5, err_msg=mode)


@pytest.mark.parametrize('mode', ['nearest_floor', 'nearest', 'bilinear'])
def test_spade_norm_resizes_condition(mode):
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(2, 4, 4, 5)).astype(np.float32))
  cond = jnp.asarray(rng.normal(size=(2, 16, 16, 3)).astype(np.float32))
  norm = blocks.SpadeNorm(blocks.BlockSettings(spade_hidden=8, spade_resize=mode, init_gain=1.0))
  v = _jit(norm.init)(jax.random.key(0), x, cond)
  got = _jit(norm.apply)(v, x, cond)
  # Same result as feeding the condition already resized: the module resizes with `mode`.
  small = blocks.resize_to(cond, 4, 4, mode)
  np.testing.assert_allclose(np.asarray(got), np.asarray(_jit(norm.apply)(v, x, small)), rtol=1e-5, atol=1e-5)

  # out = IN(x) * (1 + gamma) + beta with gamma, beta from the convs.
  @_jit
  def gamma_beta(p, c):
    actv = jax.nn.relu(blocks.Conv(8, 3).apply({'params': p['shared']}, c))
    return blocks.Conv(5, 3).apply({'params': p['gamma']}, actv), blocks.Conv(5, 3).apply({'params': p['beta']}, actv)

  gamma, beta = gamma_beta(v['params'], small)
  want = _instance_norm_np(np.asarray(x)) * (1 + np.asarray(gamma)) + np.asarray(beta)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


def test_spade_nearest_and_bilinear_differ():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(1, 4, 4, 2)).astype(np.float32))
  cond = jnp.asarray(rng.normal(size=(1, 8, 8, 3)).astype(np.float32))
  settings = lambda mode: blocks.BlockSettings(spade_hidden=4, spade_resize=mode, init_gain=1.0)  # noqa: E731
  v = _jit(blocks.SpadeNorm(settings('nearest')).init)(jax.random.key(0), x, cond)
  a = _jit(blocks.SpadeNorm(settings('nearest')).apply)(v, x, cond)
  b = _jit(blocks.SpadeNorm(settings('bilinear')).apply)(v, x, cond)
  assert float(jnp.abs(a - b).max()) > 1e-3


def test_adain_with_known_style():
  rng = np.random.default_rng(4)
  c, a_dim = 3, 300
  x = rng.normal(size=(2, 5, 5, c)).astype(np.float32) * 3 + 1
  a = rng.normal(size=(2, a_dim)).astype(np.float32)
  kernel = rng.normal(size=(a_dim, 2 * c)).astype(np.float32) * 0.1
  bias = np.array([0.5, -0.2, 1.0, 2.0, -1.0, 0.3], np.float32)
  params = {'params': {'style': {'kernel': jnp.asarray(kernel), 'bias': jnp.asarray(bias)}}}
  got = np.asarray(blocks.AdaIN().apply(params, jnp.asarray(x), jnp.asarray(a)))
  style = a @ kernel + bias
  gamma, beta = style[:, None, None, :c], style[:, None, None, c:]
  np.testing.assert_allclose(got, _instance_norm_np(x) * (1 + gamma) + beta, rtol=1e-4, atol=1e-4)
  # Zero kernel: the style is the bias alone, the same for every sample.
  params['params']['style']['kernel'] = jnp.zeros_like(params['params']['style']['kernel'])
  got0 = np.asarray(blocks.AdaIN().apply(params, jnp.asarray(x), jnp.asarray(a)))
  np.testing.assert_allclose(got0, _instance_norm_np(x) * (1 + bias[:c]) + bias[c:], rtol=1e-4, atol=1e-4)


def test_blocks_keep_channels_and_shortcut():
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(1, 4, 4, 6)).astype(np.float32))
  cond = jnp.asarray(rng.normal(size=(1, 8, 8, 3)).astype(np.float32))
  v = _jit(blocks.SpadeBlock(blocks.BlockSettings(spade_hidden=4)).init)(jax.random.key(0), x, cond)
  # With every conv kernel zeroed the residual branch is 0 + bias (0): out = x with the shortcut, 0 without.
  v0 = {'params': jax.tree.map(jnp.zeros_like, v['params']), 'batch_stats': v['batch_stats']}
  for shortcut in (True, False):
    blk = blocks.SpadeBlock(blocks.BlockSettings(spade_hidden=4, shortcut=shortcut))
    assert _jit(blk.apply)(v, x, cond).shape == x.shape
    y0 = np.asarray(_jit(blk.apply)(v0, x, cond))
    np.testing.assert_array_equal(y0, np.asarray(x) if shortcut else np.zeros_like(y0))
  a = jnp.asarray(rng.normal(size=(1, 300)).astype(np.float32))
  va = _jit(blocks.AdainBlock().init)(jax.random.key(1), x, a)
  assert _jit(blocks.AdainBlock().apply)(va, x, a).shape == x.shape


def test_xavier_normal_std():
  k = blocks.xavier_normal(0.5)(jax.random.key(0), (3, 3, 40, 60))
  want = 0.5 * np.sqrt(2.0 / (40 * 9 + 60 * 9))
  assert abs(float(jnp.std(k)) / want - 1) < 0.05
  assert abs(float(jnp.mean(k))) < 0.05 * want


def test_spectral_norm_conv_state():
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.normal(size=(1, 6, 6, 4)).astype(np.float32))
  conv = blocks.Conv(5, 3, spectral_norm=True, init_gain=1.0)
  v = _jit(conv.init)(jax.random.key(0), x)
  assert set(v) == {'params', 'batch_stats'}
  step = _jit(lambda v, upd: conv.apply(v, x, update_stats=upd, mutable=['batch_stats']), static_argnums=1)
  y, st = step(v, False)
  chex_equal = jax.tree.map(lambda a, b: bool((a == b).all()), st['batch_stats'], v['batch_stats'])
  assert all(jax.tree.leaves(chex_equal)), 'batch_stats changed with update_stats=False'
  for _ in range(30):
    _, st = step(v | st, True)
  kernel = np.asarray(v['params']['conv']['kernel'])
  sigma_true = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
  sigma = float(st['batch_stats']['sn']['conv/kernel/sigma'])
  assert abs(sigma / sigma_true - 1) < 1e-3
  # The layer computes the conv with kernel / sigma.
  y, _ = step(v | st, False)
  ref = blocks.Conv(5, 3).apply({'params': {'conv': {'kernel': kernel / sigma_true,
                                                     'bias': v['params']['conv']['bias']}}}, x)
  np.testing.assert_allclose(np.asarray(y), np.asarray(ref), rtol=2e-3, atol=2e-3)


def test_zero_flow_warp_is_identity():
  rng = np.random.default_rng(7)
  img = jnp.asarray(rng.normal(size=(2, 16, 12, 5)).astype(np.float32))
  out = _jit(flow_lib.warp)(img, jnp.zeros((2, 16, 12, 2)))
  np.testing.assert_array_equal(np.asarray(out), np.asarray(img))
  feats = (jnp.asarray(rng.normal(size=(2, 4, 3, 7)).astype(np.float32)),
           jnp.asarray(rng.normal(size=(2, 8, 6, 3)).astype(np.float32)), img)
  wimg, wfeats = _jit(flow_lib.warp_reference)(jnp.zeros((2, 16, 12, 2)), img[..., :3], feats)
  np.testing.assert_array_equal(np.asarray(wimg), np.asarray(img[..., :3]))
  for a, b in zip(wfeats, feats):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_integer_shift_moves_image():
  rng = np.random.default_rng(8)
  img = rng.normal(size=(1, 10, 9, 2)).astype(np.float32)
  dx, dy = 2, -3
  flow = jnp.broadcast_to(jnp.array([dx, dy], jnp.float32), (1, 10, 9, 2))
  out = np.asarray(flow_lib.warp(jnp.asarray(img), flow))
  # out[i, j] = img[i + dy, j + dx]; positions outside clamp to the border.
  ii = np.clip(np.arange(10) + dy, 0, 9)
  jj = np.clip(np.arange(9) + dx, 0, 8)
  np.testing.assert_array_equal(out, img[:, ii][:, :, jj])
  np.testing.assert_array_equal(out[0, 3:, :7], img[0, :7, 2:])


def test_fractional_shift_interpolates():
  img = jnp.arange(20, dtype=jnp.float32).reshape(1, 4, 5, 1)
  flow = jnp.broadcast_to(jnp.array([0.25, 0.5], jnp.float32), (1, 4, 5, 2))
  out = np.asarray(_jit(flow_lib.warp)(img, flow))[0, :3, :4, 0]
  # The image is linear in x and y (value = 5 y + x), so bilinear sampling is exact: 5 (i + .5) + j + .25.
  want = 5 * (np.arange(3)[:, None] + 0.5) + np.arange(4)[None, :] + 0.25
  np.testing.assert_allclose(out, want, rtol=1e-6)
  g = _jit(jax.grad(lambda f: flow_lib.warp(img, f).sum()))(flow)
  assert np.isfinite(np.asarray(g)).all() and float(jnp.abs(g).sum()) > 0


def test_downsample_flow_halves():
  rng = np.random.default_rng(9)
  f = rng.normal(size=(1, 8, 6, 2)).astype(np.float32)
  got = np.asarray(flow_lib.downsample_flow(jnp.asarray(f)))
  np.testing.assert_allclose(got, f.reshape(1, 4, 2, 3, 2, 2).mean(axis=(2, 4)) / 2, rtol=1e-6)
  # A constant translation of (4, 2) px at full size is (2, 1) px at half size: the same physical motion.
  const = jnp.broadcast_to(jnp.array([4.0, 2.0]), (1, 8, 8, 2))
  np.testing.assert_allclose(np.asarray(flow_lib.downsample_flow(const)), np.broadcast_to([2.0, 1.0], (1, 4, 4, 2)))


def test_warp_matches_pytorch_grid_sample_border():
  torch = pytest.importorskip('torch')
  rng = np.random.default_rng(10)
  img = rng.normal(size=(2, 7, 9, 3)).astype(np.float32)
  flow = (rng.normal(size=(2, 7, 9, 2)) * 3).astype(np.float32)  # Some samples fall outside: border clamp.
  got = np.asarray(flow_lib.warp(jnp.asarray(img), jnp.asarray(flow)))
  ys, xs = np.meshgrid(np.arange(7), np.arange(9), indexing='ij')
  gx = (xs + flow[..., 0]) / (9 - 1) * 2 - 1
  gy = (ys + flow[..., 1]) / (7 - 1) * 2 - 1
  grid = torch.from_numpy(np.stack([gx, gy], -1).astype(np.float32))
  want = torch.nn.functional.grid_sample(torch.from_numpy(img.transpose(0, 3, 1, 2)), grid, mode='bilinear',
                                         padding_mode='border', align_corners=True)
  np.testing.assert_allclose(got, want.numpy().transpose(0, 2, 3, 1), atol=1e-5)


@pytest.mark.parametrize('kernel,stride,padding', [(3, 2, None), (7, 1, None), (4, 2, 2), (4, 1, 2)])
def test_conv_matches_pytorch_padding(kernel, stride, padding):
  torch = pytest.importorskip('torch')
  rng = np.random.default_rng(11)
  x = rng.normal(size=(1, 8, 8, 3)).astype(np.float32)
  conv = blocks.Conv(4, kernel, stride, padding=padding)
  v = conv.init(jax.random.key(0), jnp.asarray(x))
  got = np.asarray(conv.apply(v, jnp.asarray(x)))
  k = np.array(v['params']['conv']['kernel']).transpose(3, 2, 0, 1).copy()  # HWIO -> OIHW
  want = torch.nn.functional.conv2d(torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(k),
                                    torch.from_numpy(np.array(v['params']['conv']['bias'])), stride=stride,
                                    padding=kernel // 2 if padding is None else padding)
  np.testing.assert_allclose(got, want.numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-6)


def test_affine_instance_norm_learns_scale_and_shift():
  """The authors' encoder / D norm: PyTorch's InstanceNorm2d(affine=True), scale 1 and shift 0 at init."""
  rng = np.random.default_rng(12)
  x = rng.normal(size=(2, 5, 5, 3)).astype(np.float32) * 2 + 1
  norm = blocks.instance_norm(jnp.float32, affine=True)
  v = norm.init(jax.random.key(0), jnp.asarray(x))
  np.testing.assert_array_equal(v['params']['scale'], np.ones(3))
  np.testing.assert_array_equal(v['params']['bias'], np.zeros(3))
  scale, shift = np.array([2.0, 0.5, -1.0], np.float32), np.array([0.1, -0.3, 2.0], np.float32)
  got = norm.apply({'params': {'scale': scale, 'bias': shift}}, jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(got), _instance_norm_np(x) * scale + shift, rtol=1e-4, atol=1e-4)
  assert 'params' not in blocks.instance_norm(jnp.float32).init(jax.random.key(0), jnp.asarray(x))


def test_reflection_padding_matches_pytorch():
  """7x7 convs of the authors: ReflectionPad2d(3) then an unpadded conv."""
  torch = pytest.importorskip('torch')
  rng = np.random.default_rng(13)
  x = rng.normal(size=(1, 9, 8, 2)).astype(np.float32)
  conv = blocks.Conv(3, 7, padding_mode='reflect', init_gain=1.0)
  v = conv.init(jax.random.key(0), jnp.asarray(x))
  got = np.asarray(conv.apply(v, jnp.asarray(x)))
  k = np.array(v['params']['conv']['kernel']).transpose(3, 2, 0, 1).copy()
  padded = torch.nn.functional.pad(torch.from_numpy(x.transpose(0, 3, 1, 2)), (3, 3, 3, 3), mode='reflect')
  want = torch.nn.functional.conv2d(padded, torch.from_numpy(k), torch.from_numpy(np.array(v['params']['conv']['bias'])))
  np.testing.assert_allclose(got, want.numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-5)
  zeros = np.asarray(blocks.Conv(3, 7, init_gain=1.0).apply(v, jnp.asarray(x)))
  assert np.abs(zeros[:, 0] - got[:, 0]).max() > 1e-3  # The border differs from zero padding.
  np.testing.assert_allclose(zeros[:, 3:-3, 3:-3], got[:, 3:-3, 3:-3], rtol=1e-4, atol=1e-5)  # The inside does not.


def test_block_settings_from_config():
  """One BlockSettings carries conv_impl, padding and norms to the blocks; bad values are config errors."""
  from configs import tiny  # pylint: disable=import-outside-toplevel
  cfg = tiny.get_config()
  s = blocks.block_settings(cfg)
  assert (s.conv_impl, s.padding_7x7, s.affine_norm, s.encoder_spectral_norm) == ('auto', 'reflect', True, True)
  assert hash(s) == hash(blocks.block_settings(cfg))  # Frozen and hashable: a module field.
  for path, value in (('runtime.conv_impl', 'cudnn_custom'), ('model.blocks.padding_7x7', 'circular'),
                      ('model.blocks.encoder_norm', 'affine')):  # The last: a field BlockSettings does not have.
    bad = tiny.get_config()
    section, field = path.rsplit('.', 1)
    bad[section][field] = value
    with pytest.raises(errors.ConfigError, match=field):
      blocks.block_settings(bad)
