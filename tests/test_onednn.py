"""The oneDNN convolution handlers (kernels/onednn.py, kernels/csrc/onednn_conv.cc): build, registration, errors, and
the three passes against XLA's convolution (the network shapes are checked in tests/test_conv_grad.py)."""
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from headgan_jax import errors
from headgan_jax.commands import kernels as kernels_command
from headgan_jax.kernels import conv, onednn

NHWC = ('NHWC', 'HWIO', 'NHWC')


def _rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_handlers_are_built_and_registered():
  """scripts/setup.sh builds them; the file name carries the source's and jaxlib's hash."""
  assert onednn.unavailable_reason() is None
  path = onednn.library_path()
  assert path.exists() and path.parent == onednn.library_dir()
  assert path.name.startswith('onednn_conv-') and path.suffix == '.so'


@pytest.mark.parametrize('strides, padding', [((1, 1), ((1, 1), (1, 1))), ((2, 2), ((1, 2), (0, 1))),
                                              ((1, 2), ((0, 0), (3, 3)))])
def test_three_passes_equal_xla(strides, padding):
  """Forward, input gradient and weight gradient of `onednn.conv` vs lax's, uneven sizes and paddings, batch 3."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal((3, 13, 10, 5), np.float32)
  w = rng.standard_normal((4, 3, 5, 7), np.float32)
  f_ours = lambda x, w: onednn.conv(x, w, strides, padding)  # noqa: E731
  f_xla = lambda x, w: lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)  # noqa: E731
  y_xla, vjp_xla = jax.vjp(f_xla, x, w)
  g = rng.standard_normal(y_xla.shape, np.float32)
  y, vjp = jax.jit(lambda x, w: jax.vjp(f_ours, x, w))(x, w)
  assert y.shape == y_xla.shape and y.dtype == jnp.float32
  assert _rel_err(y, y_xla) < 1e-5
  for ours, xla in zip(vjp(g), vjp_xla(g)):
    assert ours.shape == xla.shape and _rel_err(ours, xla) < 1e-5


def test_vmap_runs_per_example():
  """Under vmap the call runs per example (vmap_method 'sequential'); results equal XLA's."""
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 1, 6, 6, 3), np.float32)
  w = rng.standard_normal((3, 3, 3, 4), np.float32)
  pads = ((1, 1), (1, 1))
  ours = jax.vmap(lambda x: onednn.conv(x, w, (1, 1), pads))(x)
  xla = jax.vmap(lambda x: lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=NHWC))(x)
  assert _rel_err(ours, xla) < 1e-5


def test_inconsistent_shapes_are_a_clear_error():
  """The handler checks shapes against strides / padding and says which; nothing is computed."""
  x = jnp.ones((1, 8, 8, 4))
  g = jnp.ones((1, 8, 8, 6))
  with pytest.raises(Exception, match='shapes disagree with the strides / padding'):
    jax.block_until_ready(onednn.weight_grad(x, g, (3, 3, 4, 6), (2, 2), ((1, 1), (1, 1))))


def test_other_dtypes_and_layouts_are_not_sent_to_onednn():
  """bfloat16, dilation and groups get what 'auto' gave them before oneDNN (`conv_general_dilated_auto`: the im2col
  weight gradient for large convolutions, XLA's for the others): the same program, no custom call."""
  def program(fn, dtype, x_shape=(1, 8, 8, 4), **kw):
    groups = kw.get('feature_group_count', 1)
    return str(jax.make_jaxpr(lambda x, w: fn(x, w, (1, 1), 'SAME', dimension_numbers=NHWC, **kw))(
        jax.ShapeDtypeStruct(x_shape, dtype), jax.ShapeDtypeStruct((3, 3, x_shape[-1] // groups, 4), dtype)))

  assert 'ffi_call' in program(conv.conv_general_dilated_onednn, jnp.float32)
  for dtype, x_shape, kw in ((jnp.bfloat16, (1, 8, 8, 4), {}), (jnp.bfloat16, (1, 256, 256, 256), {}),
                             (jnp.float32, (1, 8, 8, 4), {'rhs_dilation': (2, 2)}),
                             (jnp.float32, (1, 8, 8, 4), {'feature_group_count': 2})):
    ours = program(conv.conv_general_dilated_onednn, dtype, x_shape, **kw)
    assert 'ffi_call' not in ours
    assert ours == program(conv.conv_general_dilated_auto, dtype, x_shape, **kw)
  assert 'custom_vjp_call' in program(conv.conv_general_dilated_onednn, jnp.bfloat16, (1, 256, 256, 256))


def test_build_writes_the_library_whole_and_reports_a_missing_compiler(tmp_path, monkeypatch):
  """A build into a fresh directory makes a loadable file and no temp file; a missing or failing compiler is a
  BuildError naming the cause, with nothing left behind."""
  monkeypatch.setenv(onednn.DIR_ENV, str(tmp_path))
  monkeypatch.setenv('CXX', 'no-such-compiler-xyz')
  with pytest.raises(onednn.BuildError, match="compiler 'no-such-compiler-xyz' not found"):
    onednn.build()
  monkeypatch.setenv('CXX', 'false')
  with pytest.raises(onednn.BuildError, match='failed'):
    onednn.build()
  assert list(tmp_path.iterdir()) == []
  monkeypatch.delenv('CXX')
  path = onednn.build()
  assert path.parent == tmp_path and [p.name for p in tmp_path.iterdir()] == [path.name]
  import ctypes  # pylint: disable=import-outside-toplevel
  assert ctypes.cdll.LoadLibrary(os.fspath(path)).HeadganOnednnVersion() >= 20000
  mtime = path.stat().st_mtime_ns
  assert onednn.build() == path and path.stat().st_mtime_ns == mtime  # Built already: nothing to do.


def test_command_line(tmp_path, monkeypatch, capsys):
  assert kernels_command.main(['status']) == 0 and capsys.readouterr().out.strip() == 'available'
  assert kernels_command.main(['frobnicate']) == 2
  monkeypatch.setenv(onednn.DIR_ENV, str(tmp_path))
  monkeypatch.setenv('CXX', 'no-such-compiler-xyz')
  assert kernels_command.main(['build']) == 1
  assert 'not found' in capsys.readouterr().err
  assert isinstance(onednn.BuildError('x'), errors.HeadGANError)
  assert pathlib.Path(onednn.SOURCE).exists()


def test_concurrent_calls_from_two_threads_stay_correct():
  """XLA:CPU runs independent convolutions at once; each call has its own scratchpad (Debian's oneDNN shares one
  between primitives otherwise: the demo's train step hung). Two threads run different weight gradients 15 times
  each; every result must equal XLA's, and both threads must finish."""
  import threading  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(4)
  cases = []
  for x_shape, w_shape, strides in (((4, 32, 32, 32), (3, 3, 32, 64), (1, 1)), ((8, 17, 17, 16), (4, 4, 16, 32), (2, 2))):
    x = rng.standard_normal(x_shape, np.float32)
    w = rng.standard_normal(w_shape, np.float32)
    pads = ((1, 1), (1, 1))
    y, vjp = jax.vjp(lambda w, x=x, s=strides: lax.conv_general_dilated(x, w, s, pads, dimension_numbers=NHWC), w)
    g = rng.standard_normal(y.shape, np.float32)
    fn = jax.jit(lambda x, g, s=strides, ws=w_shape: onednn.weight_grad(x, g, ws, s, pads))
    cases.append((fn, x, g, np.asarray(vjp(g)[0])))
  errs: list[list[float]] = [[], []]

  def work(i):
    fn, x, g, ref = cases[i]
    for _ in range(15):
      errs[i].append(_rel_err(fn(x, g), ref))

  threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=120)
  assert not any(t.is_alive() for t in threads), 'a thread did not finish'
  assert [len(e) for e in errs] == [15, 15] and max(max(e) for e in errs) < 1e-5
