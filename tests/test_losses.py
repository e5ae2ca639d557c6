"""Appendix A losses against values worked out by hand on small tensors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import paper
from headgan_jax.errors import ConfigError
from headgan_jax.nn.vgg import VGG19
from headgan_jax.train import losses


def _nhwc(values, shape):
  return jnp.asarray(values, jnp.float32).reshape(shape)


# Two discriminator scales: (1, 2, 2, 1) and (1, 1, 2, 1) patch logits.
REAL = [_nhwc([2.0, 0.5, -1.0, 1.0], (1, 2, 2, 1)), _nhwc([0.0, 3.0], (1, 1, 2, 1))]
FAKE = [_nhwc([-2.0, 0.0, 0.5, -0.5], (1, 2, 2, 1)), _nhwc([-1.5, 1.0], (1, 1, 2, 1))]


def test_hinge_d_by_hand():
  # real: relu(1 - r) = [0, .5, 2, 0] -> .625 and [1, 0] -> .5; averaged over scales .5625.
  # fake: relu(1 + f) = [0, 1, 1.5, .5] -> .75 and [0, 2] -> 1; averaged .875.  Total 1.4375.
  assert float(jax.jit(losses.hinge_d)(REAL, FAKE)) == pytest.approx(1.4375)
  # D's full output (per-scale feature lists, logits last) gives the same: only the logits count.
  nested = lambda logits: [[jnp.full((1, 4, 4, 8), 7.0), l] for l in logits]
  assert float(losses.hinge_d(nested(REAL), nested(FAKE))) == pytest.approx(1.4375)
  # One scale, one array: relu(1 - r) mean .625 + relu(1 + f) mean .75.
  assert float(losses.hinge_d(REAL[0], FAKE[0])) == pytest.approx(1.375)
  # Confident, correct logits cost nothing.
  assert float(losses.hinge_d([jnp.full((1, 2, 2, 1), 1.5)], [jnp.full((1, 2, 2, 1), -1.0)])) == 0.0


def test_hinge_g_by_hand():
  # -mean: scale 1 mean -.5, scale 2 mean -.25; averaged -.375.
  assert float(jax.jit(losses.hinge_g)(FAKE)) == pytest.approx(0.375)
  grads = jax.grad(losses.hinge_g)(FAKE)
  np.testing.assert_allclose(grads[0], np.full((1, 2, 2, 1), -1 / 4 / 2))
  np.testing.assert_allclose(grads[1], np.full((1, 1, 2, 1), -1 / 2 / 2))


def _fm_structure():
  """Two scales, each: 2 intermediate features, then logits (which FM must ignore)."""
  real = [
      [jnp.zeros((1, 2, 2, 1)), _nhwc([1, 2, 3, 4], (1, 2, 2, 1)), jnp.zeros((1, 2, 2, 1))],
      [_nhwc([1, -1], (1, 1, 1, 2)), _nhwc([5], (1, 1, 1, 1)), jnp.zeros((1, 1, 1, 1))],
  ]
  fake = [
      [jnp.ones((1, 2, 2, 1)), _nhwc([1, 2, 3, 6], (1, 2, 2, 1)), jnp.full((1, 2, 2, 1), 100.0)],
      [_nhwc([0, 0], (1, 1, 1, 2)), _nhwc([2], (1, 1, 1, 1)), jnp.full((1, 1, 1, 1), -100.0)],
  ]
  return real, fake


def test_feature_matching_weighting():
  real, fake = _fm_structure()
  # Per-layer L1 means: scale 1: 1, 0.5; scale 2: 1, 3 -> sum 5.5.
  # n_layers read off the structure = 2 -> weight 4 / 3 / num_D(2) = 2/3 -> 11/3.
  assert float(jax.jit(losses.feature_matching)(real, fake)) == pytest.approx(11 / 3)
  # The authors' D has n_layers = 4 (config.disc.num_layers): 4 / 5 / 2 = 0.4 -> 2.2.
  assert float(losses.feature_matching(real, fake, num_layers=4)) == pytest.approx(2.2)
  # Real features are a fixed target: no gradient reaches them.
  g_real, g_fake = jax.grad(losses.feature_matching, argnums=(0, 1))(real, fake)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(g_real))
  assert float(jnp.abs(g_fake[0][0]).max()) > 0
  assert float(jnp.abs(g_fake[0][2]).max()) == 0.0  # Logits do not enter.
  with pytest.raises(ValueError, match='scale 1'):
    losses.feature_matching(real, [fake[0], fake[1][:2]])


def test_face_mask_and_masked_l1_ignore_background():
  x_t = np.zeros((1, 2, 2, 3), np.float32)
  x_t[0, 0, 0] = [-0.5, -0.2, 0.1]  # Face pixel with negative coordinates: |.| sums to 0.8.
  x_t[0, 1, 1] = [0.3, 0.2, 0.1]
  x_t[0, 0, 1] = [0.004, 0.003, 0.0]  # 0.007, under the 0.01 threshold: background.
  mask = losses.face_mask(jnp.asarray(x_t), paper.get_config().loss.face_mask_threshold)
  np.testing.assert_array_equal(mask[0, :, :, 0], [[1, 0], [0, 1]])
  assert mask.shape == (1, 2, 2, 1) and mask.dtype == jnp.float32

  b = jnp.zeros((1, 2, 2, 3))
  a = np.full((1, 2, 2, 3), 100.0, np.float32)  # Background differences are huge ...
  a[0, 0, 0] = a[0, 1, 1] = 1.0  # ... face differences are 1: 2 pixels x 3 channels / 12 elements = 0.5.
  assert float(jax.jit(losses.masked_l1)(jnp.asarray(a), b, mask)) == pytest.approx(0.5)
  a[0, 0, 1] = -7.0
  a[0, 1, 0] = 3.0
  assert float(losses.masked_l1(jnp.asarray(a), b, mask)) == pytest.approx(0.5)
  g = jax.grad(losses.masked_l1)(jnp.asarray(a), b, mask)
  assert float(jnp.abs(g[0, 0, 1]).max()) == 0.0 and float(jnp.abs(g[0, 0, 0]).min()) > 0
  with pytest.raises(ValueError, match='does not broadcast'):
    losses.masked_l1(jnp.asarray(a), b, jnp.ones((1, 3, 3, 1)))


def test_temporal_l1():
  rng = np.random.default_rng(0)
  now = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in [(2, 4, 4, 8), (2, 8, 8, 4), (2, 16, 16, 3)]]
  assert float(jax.jit(losses.temporal_l1)(now, now)) == 0.0
  prev = [jnp.zeros((1, 1, 1, 4)), jnp.ones((1, 2, 2, 1)), jnp.full((1, 2, 1, 2), 2.0)]
  cur = [_nhwc([1, 2, 3, 4], (1, 1, 1, 4)), jnp.zeros((1, 2, 2, 1)), jnp.full((1, 2, 1, 2), 1.5)]
  # Means of |diff|: 2.5 + 1 + 0.5 = 4.
  assert float(losses.temporal_l1(prev, cur)) == pytest.approx(4.0)


def test_bf16_inputs_give_float32_scalars():
  bf = lambda t: jax.tree.map(lambda x: x.astype(jnp.bfloat16), t)
  real, fake = _fm_structure()
  outs = [
      losses.hinge_d(bf(REAL), bf(FAKE)),
      losses.hinge_g(bf(FAKE)),
      losses.feature_matching(bf(real), bf(fake)),
      losses.masked_l1(bf(FAKE[0]), bf(REAL[0]), jnp.ones((1, 2, 2, 1), jnp.bfloat16)),
      losses.temporal_l1(bf(REAL), bf(FAKE)),
  ]
  for out in outs:
    assert out.shape == () and out.dtype == jnp.float32
  assert float(outs[0]) == pytest.approx(1.4375)  # These values are exact in bf16.
  assert float(outs[2]) == pytest.approx(11 / 3)


@pytest.fixture(scope='module')
def random_vgg():
  model = VGG19()
  # He-normal weights drawn with numpy: jax's threefry init of 12.7M weights takes ~20 s on a busy 2-core CPU.
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))['params']
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda s: jnp.asarray(rng.standard_normal(s.shape, np.float32) * (np.sqrt(2 / np.prod(s.shape[:3]))
                                                                        if len(s.shape) == 4 else 0.1)), shapes)
  return jax.jit(lambda x: model.apply({'params': params}, x))


def test_vgg_l1(random_vgg):
  weights = paper.get_config().loss.vgg_layer_weights
  rng = np.random.default_rng(1)
  a = jnp.asarray(rng.uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)
  b = jnp.asarray(rng.uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)

  @jax.jit
  def everything(x, y):  # One compilation for all the checks: the VGG convs compile slowly on CPU.
    value, grads = jax.value_and_grad(lambda x, y: losses.vgg_l1(random_vgg, x, y, weights), argnums=(0, 1))(x, y)
    return value, losses.vgg_l1(random_vgg, x, y, (0, 0, 0, 0, 1)), grads

  same, _, _ = everything(a, a)
  assert float(same) == 0.0
  value, only_relu5, (g_a, g_b) = everything(a, b)
  assert float(value) > 0 and np.isfinite(float(value))

  # Against the definition, computed separately: sum_l w_l mean|VGG_l(a) - VGG_l(b)|.
  feats = random_vgg(jnp.concatenate([a, b]))
  diffs = [float(jnp.mean(jnp.abs(f[:2] - f[2:]))) for f in feats]
  assert all(d > 0 for d in diffs)
  assert float(value) == pytest.approx(sum(w * d for w, d in zip(weights, diffs)), rel=1e-5)
  assert float(only_relu5) == pytest.approx(diffs[4], rel=1e-5)
  # The target image is fixed: gradient only reaches the generated one.
  assert float(jnp.abs(g_a).max()) > 0 and float(jnp.abs(g_b).max()) == 0.0


def test_vgg_l1_dtype_and_weights_length():
  # A stand-in feature extractor keeps this check free of VGG compilations.
  pyramid = lambda x: [x, x[:, ::2, ::2]]
  a = jnp.ones((1, 4, 4, 3), jnp.bfloat16)
  b = jnp.zeros((1, 4, 4, 3), jnp.bfloat16)
  out = losses.vgg_l1(pyramid, a, b, (0.5, 2.0))
  assert out.dtype == jnp.float32 and out.shape == () and float(out) == pytest.approx(2.5)
  with pytest.raises(ConfigError, match='vgg_layer_weights'):
    losses.vgg_l1(pyramid, a, b, (1.0, 1.0, 1.0))


def test_vgg_l1_many_is_one_pass_with_the_same_values():
  """[fake, warped, real] through the network once gives each pair's vgg_l1; the stand-in counts its calls."""
  calls = []

  def pyramid(x):
    calls.append(x.shape[0])
    return [x * 2, x[:, ::2, ::2]]

  rng = np.random.default_rng(2)
  fake, warped, real = (jnp.asarray(rng.uniform(-1, 1, (2, 4, 4, 3)), jnp.float32) for _ in range(3))
  many = losses.vgg_l1_many(pyramid, [fake, warped], real, (0.5, 2.0))
  assert calls == [6]
  for got, pred in zip(many, (fake, warped)):
    assert float(got) == pytest.approx(float(losses.vgg_l1(pyramid, pred, real, (0.5, 2.0))), rel=1e-6)
  with pytest.raises(ValueError, match='shapes'):
    losses.vgg_l1_many(pyramid, [fake, warped[:, :2]], real, (0.5, 2.0))


def test_flow_mask_l1():
  """The authors' lambda_mask term: 0 when F's mask equals the foreground, mean |m - fg| otherwise."""
  fg = _nhwc([1, 1, 0, 0], (1, 2, 2, 1))
  assert float(losses.flow_mask_l1(fg, fg)) == 0.0
  m = _nhwc([0.5, 1, 0.25, 0], (1, 2, 2, 1))
  assert float(losses.flow_mask_l1(m, fg)) == pytest.approx((0.5 + 0.25) / 4)
  grad = jax.grad(lambda m: losses.flow_mask_l1(m, fg))(m)
  np.testing.assert_allclose(np.asarray(grad).ravel()[[0, 2]], [-0.25, 0.25])  # sign(m - fg) / n where m != fg.
  assert float(jnp.abs(jax.grad(lambda f: losses.flow_mask_l1(m, f))(fg)).max()) == 0  # No gradient to the target.
  with pytest.raises(ValueError, match='foreground'):
    losses.flow_mask_l1(m, fg[..., 0])
