"""The im2col-gradient convolution (kernels/conv.py) and the oneDNN one (kernels/onednn.py) against XLA's: same
outputs and gradients (1e-5 relative) on every convolution shape G, D and D_m run in a train step of the tiny
config, and on paper-size shapes; the selector and its wiring into the networks."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from configs import paper, tiny
from headgan_jax import errors
from headgan_jax.kernels import conv, onednn
from headgan_jax.nn import probe
from tests.train_configs import small_train_config

RTOL = 1e-5  # max |ours - xla| / max |xla|, per output.


def _rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _inputs(call: conv.ConvCall, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Random x, w and output cotangent g (NumPy: XLA:CPU compiles jax.random slowly)."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(call.input_shape, np.float32)
  w = rng.standard_normal(call.kernel_shape, np.float32) / np.sqrt(np.prod(call.kernel_shape[:3]))
  out_shape = jax.eval_shape(lambda x, w: _conv(lax.conv_general_dilated, call, x, w), x, w).shape
  return x, w, rng.standard_normal(out_shape, np.float32)


def _conv(fn, call: conv.ConvCall, x, w):
  return fn(x, w, call.strides, call.padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _outputs_and_grads(fn, call: conv.ConvCall, x, w, g):
  """(y, dL/dx, dL/dw) of `fn` at x, w for the output cotangent g."""
  y, vjp = jax.vjp(functools.partial(_conv, fn, call), x, w)
  return (y, *vjp(g))


IMPLS = {'im2col': conv.conv_general_dilated, 'onednn': conv.conv_general_dilated_onednn}


def _check_same(calls: list[conv.ConvCall], seed: int = 0, impl: str = 'im2col') -> None:
  """Ours (`impl`) vs XLA on each of `calls`; one jit per implementation (one compile for all shapes)."""
  inputs = [_inputs(call, seed + i) for i, call in enumerate(calls)]

  def all_outputs(fn):
    return jax.jit(lambda inputs: [_outputs_and_grads(fn, call, *a) for call, a in zip(calls, inputs)])(inputs)

  ours, xla = all_outputs(IMPLS[impl]), all_outputs(lax.conv_general_dilated)
  for call, ours_c, xla_c in zip(calls, ours, xla):
    for name, a, b in zip(('output', 'input gradient', 'weight gradient'), ours_c, xla_c):
      assert a.shape == b.shape and a.dtype == b.dtype, (name, call)
      assert _rel_err(a, b) < RTOL, (name, _rel_err(a, b), call)


@pytest.fixture(scope='module')
def tiny_networks():
  """For G, D and D_m in a tiny-config train step (each network sees 2 x batch examples): (every convolution it
  runs, its variables' shapes)."""
  config = tiny.get_config()
  modules = probe.networks_and_inputs(config, 2 * config.train.batch_size)
  return {net: probe.record_network(*modules[net]) for net in modules}


@pytest.fixture(scope='module')
def tiny_calls(tiny_networks):
  return {net: calls for net, (calls, _) in tiny_networks.items()}


def _conv_kernels(variables) -> int:
  """How many conv kernels (4-D 'kernel' parameters) there are in `variables`."""
  return sum(1 for path, x in jax.tree_util.tree_leaves_with_path(variables['params'])
             if path[-1].key == 'kernel' and x.ndim == 4)


def test_recorder_sees_every_conv_of_the_networks(tiny_networks):
  """One recorded call per conv kernel of G, D and D_m (each conv runs once per apply)."""
  counts = {net: (len(calls), _conv_kernels(variables)) for net, (calls, variables) in tiny_networks.items()}
  assert all(n_calls == n_kernels for n_calls, n_kernels in counts.values()), counts
  assert counts['G'][0] > 50 and counts['D'][0] >= 6 and counts['D_m'][0] >= 6, counts


@pytest.mark.parametrize('impl', sorted(IMPLS))
@pytest.mark.parametrize('net', ['G', 'D', 'D_m'])
def test_gradients_equal_xla_on_every_tiny_config_shape(tiny_calls, net, impl):
  _check_same([call for call, _ in conv.distinct_calls(tiny_calls[net])], impl=impl)


@pytest.mark.parametrize('call', [
    conv.ConvCall('input patches, stride 2', (2, 17, 17, 8), (4, 4, 8, 16), (2, 2), ((2, 2), (2, 2))),
    conv.ConvCall('output patches, C_out < C_in', (2, 9, 11, 16), (3, 3, 16, 4), (1, 1), ((1, 1), (1, 1))),
    conv.ConvCall('output patches, 4x4, uneven padding', (1, 8, 8, 16), (4, 4, 16, 4), (1, 1), ((1, 2), (2, 1))),
], ids=lambda c: c.name)
def test_weight_gradient_over_many_uneven_chunks_equals_xla(call):
  """The scan path: a chunk size of ~2 rows of patches, so several steps with the last one padded."""
  x, w, g = _inputs(call, 1)
  row_bytes = 4 * call.input_shape[0] * call.input_shape[2] * np.prod(call.kernel_shape[:2]) * min(call.kernel_shape[2:])
  ours = jax.jit(lambda x, g: conv.weight_grad_im2col(x, g, call.kernel_shape, call.strides, call.padding,
                                                      chunk_bytes=int(2 * row_bytes)))(x, g)
  xla = jax.jit(lambda x, w, g: _outputs_and_grads(lax.conv_general_dilated, call, x, w, g)[2])(x, w, g)
  assert _rel_err(ours, xla) < RTOL


@pytest.mark.slow
@pytest.mark.parametrize('impl', sorted(IMPLS))
def test_gradients_equal_xla_on_a_paper_size_shape(impl):
  """A paper-config shape (one example): R's SPADE gamma conv at 256x256, 256 -> 32 channels, the issue's example
  (the output-patches weight gradient, in 4 chunks of 64 rows)."""
  call = conv.ConvCall('render_net/spade_2/norm_0/gamma', (1, 256, 256, 256), (3, 3, 256, 32), (1, 1),
                       ((1, 1), (1, 1)))
  shapes = probe.network_conv_calls(paper.get_config(), 1, nets=('G',))['G']
  assert call.key in {c.key for c in shapes}, 'not a shape of the paper G'
  _check_same([call], impl=impl)


def test_narrow_output_forward_is_used_for_the_heads_and_matches_xla():
  """G's 7x7 heads (32 -> 1, 2, 3 output channels, stride 1) take the matmul-then-shift forward pass; the output,
  input and weight gradients equal XLA's (smaller images than the paper's 262x262, same kernels, with and without
  padding, batch 2)."""
  shapes = {c.kernel_shape for c in probe.network_conv_calls(paper.get_config(), 1, nets=('G',))['G']}
  heads = [k for k in shapes if conv.narrow_forward_kind(k, (1, 1)) == 'output']
  assert sorted(k[3] for k in heads) == [1, 2, 3] and all(k[:3] == (7, 7, 32) for k in heads), heads
  assert conv.narrow_forward_kind((7, 7, 6, 32), (1, 1)) == 'rows'  # G's first convolutions: few INPUT channels.
  assert conv.narrow_forward_kind((7, 7, 32, 32), (1, 1)) is None  # Wide on both sides: XLA's own.
  assert conv.narrow_forward_kind((3, 3, 32, 3), (1, 1)) is None  # Small window: XLA's own.
  assert conv.narrow_forward_kind((7, 7, 32, 2), (2, 2)) is None  # Strided: XLA's own.
  calls = [conv.ConvCall(f'head_{c}', (2, 21, 19, 32), (7, 7, 32, c), (1, 1), pad)
           for c, pad in ((1, ((0, 0), (0, 0))), (2, ((3, 3), (3, 3))), (3, ((2, 1), (0, 3))))]
  _check_same(calls)


def test_row_shift_forward_is_used_for_the_first_convolutions_and_matches_xla():
  """G's first 7x7 convolutions (6 and 9 -> 32 channels) take the row-shift forward pass; output, input and weight
  gradients equal XLA's (small images, with and without padding)."""
  shapes = {c.kernel_shape for c in probe.network_conv_calls(paper.get_config(), 1, nets=('G',))['G']}
  firsts = sorted(k for k in shapes if conv.narrow_forward_kind(k, (1, 1)) == 'rows')
  assert firsts == [(7, 7, 6, 32), (7, 7, 9, 32)], firsts
  _check_same([conv.ConvCall(f'first_{k[2]}', (2, 19, 23, k[2]), k, (1, 1), pad)
               for k, pad in zip(firsts, (((0, 0), (0, 0)), ((3, 2), (1, 3))))])


@pytest.mark.parametrize('kind', ['output', 'rows'])
def test_forward_narrow_equals_xla_convolution(kind):
  """Both matmul forms of forward_narrow against XLA's."""
  rng = np.random.default_rng(3)
  x = rng.standard_normal((2, 13, 11, 5), np.float32)
  w = rng.standard_normal((5, 5, 5, 3) if kind == 'output' else (5, 5, 5, 8), np.float32)
  pads = ((2, 1), (1, 2))
  ours = conv.forward_narrow(x, w, pads, kind)
  xla = lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  assert ours.shape == xla.shape and ours.dtype == xla.dtype
  assert _rel_err(ours, xla) < RTOL


def test_bfloat16_gradients_keep_dtypes_and_match_xla():
  call = conv.ConvCall('c', (2, 16, 16, 32), (3, 3, 32, 64), (1, 1), ((1, 1), (1, 1)))
  x, w, g = (jnp.asarray(a, jnp.bfloat16) for a in _inputs(call, 2))
  ours = jax.jit(functools.partial(_outputs_and_grads, conv.conv_general_dilated, call))(x, w, g)
  xla = jax.jit(functools.partial(_outputs_and_grads, lax.conv_general_dilated, call))(x, w, g)
  for a, b in zip(ours, xla):
    assert a.dtype == jnp.bfloat16
    assert _rel_err(a, b) < 2e-2  # bf16 rounding of the results.


def test_selector(monkeypatch, caplog):
  assert conv.conv_general_dilated_for('xla') is lax.conv_general_dilated
  assert conv.conv_general_dilated_for('im2col') is conv.conv_general_dilated
  assert conv.conv_general_dilated_for('onednn') is conv.conv_general_dilated_onednn
  assert jax.default_backend() == 'cpu'
  assert onednn.unavailable_reason() is None  # scripts/setup.sh builds the handlers.
  # 'auto': oneDNN's in a one-device process; with several devices (the test processes have 8) the im2col form, as a
  # custom call is not partitioned across devices.
  assert jax.device_count() == 8 and conv.conv_general_dilated_for('auto') is conv.conv_general_dilated_auto
  monkeypatch.setattr(jax, 'device_count', lambda: 1)
  assert conv.conv_general_dilated_for('auto') is conv.conv_general_dilated_onednn
  with pytest.raises(errors.ConfigError, match='conv_impl'):
    conv.conv_general_dilated_for('cudnn')
  # Without the handlers: 'auto' falls back to the im2col weight gradient and says why; 'onednn' is an error.
  monkeypatch.setattr(onednn, 'unavailable_reason', lambda: 'not built (test)')
  monkeypatch.setattr(onednn, 'available', lambda: False)
  with caplog.at_level('WARNING'):
    assert conv.conv_general_dilated_for('auto') is conv.conv_general_dilated_auto
  assert 'not built (test)' in caplog.text
  with pytest.raises(errors.ConfigError, match="'onednn', but not built"):
    conv.conv_general_dilated_for('onednn')


def test_auto_uses_ours_from_the_flop_threshold_on():
  """'auto' on CPU: a paper-size conv (R's 3x3 256 -> 32 at 256x256, 4.8 GFLOP) gets the im2col gradient, a small
  or narrow one XLA's (trace only)."""
  def uses_ours(x_shape, w_shape):
    jaxpr = jax.make_jaxpr(lambda x, w: conv.conv_general_dilated_auto(
        x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC')))(
            jax.ShapeDtypeStruct(x_shape, jnp.float32), jax.ShapeDtypeStruct(w_shape, jnp.float32))
    return 'custom_vjp_call' in str(jaxpr)

  assert conv.forward_flops((1, 256, 256, 256), (3, 3, 256, 32), (1, 1), ((1, 1), (1, 1))) > conv.AUTO_MIN_FLOPS
  assert uses_ours((1, 256, 256, 256), (3, 3, 256, 32))
  assert not uses_ours((1, 16, 16, 32), (3, 3, 32, 256))  # Small: 38 MFLOP.
  assert not uses_ours((1, 256, 256, 32), (3, 3, 32, 32))  # Narrow: 3 x 3 x 32 < 1024.


def test_unsupported_convolutions_fall_back_to_xla():
  """Dilation and feature groups are not ours: passed to lax unchanged (same jaxpr, no custom_vjp)."""
  x, w = jnp.ones((1, 8, 8, 4)), jnp.ones((3, 3, 2, 4))
  f = lambda fn: jax.make_jaxpr(lambda x, w: fn(  # noqa: E731
      x, w, (1, 1), 'SAME', rhs_dilation=(2, 2), dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=2))(x, w)
  assert str(f(conv.conv_general_dilated)) == str(f(lax.conv_general_dilated))


@pytest.mark.parametrize('net, impl', [('G', 'auto'), ('D', 'auto'), ('D_m', 'auto'), ('D', 'xla'), ('G', 'onednn'),
                                       ('D_m', 'onednn')])
def test_config_switch_reaches_every_conv_of_each_network(net, impl, monkeypatch):
  """config.runtime.conv_impl selects the convolution of every conv of G, D and D_m (small train config, one trace of
  init, which runs the forward pass). 'onednn', and 'auto' with its thresholds at 0 (the im2col form in the test
  processes, which have 8 devices), must be ours everywhere: nothing between the config and a conv drops the
  setting."""
  monkeypatch.setattr(conv, 'AUTO_MIN_FLOPS', 0)
  monkeypatch.setattr(conv, 'AUTO_MIN_WIDTH', 0)
  config = small_train_config()
  config.runtime.conv_impl = impl
  module, inputs = probe.networks_and_inputs(config, 2)[net]
  with conv.record_conv_calls() as calls:
    jaxpr, variables = jax.make_jaxpr(lambda: module.init(jax.random.key(0), *inputs), return_shape=True)()
  # Every conv kernel is called (spectral-norm convs twice at init), and every call is ours.
  assert len({call.name for call in calls}) == _conv_kernels(variables) > (50 if net == 'G' else 5)
  assert str(jaxpr).count('custom_vjp_call') == (0 if impl == 'xla' else len(calls))
  assert str(jaxpr).count('ffi_call') == (len(calls) if impl == 'onednn' else 0)


def test_paper_config_default_is_auto():
  """The paper config (and every config derived from it) uses 'auto': ours on CPU, XLA's own on GPU / TPU."""
  assert paper.get_config().runtime.conv_impl == 'auto'
  assert tiny.get_config().runtime.conv_impl == 'auto'
