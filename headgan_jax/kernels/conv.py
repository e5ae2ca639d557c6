"""2-D convolution whose weight gradient is a chunked im2col matmul, for XLA:CPU (issue 12).

On XLA:CPU the weight gradient of `lax.conv_general_dilated` is lowered to a convolution with batch and feature
dimensions swapped (the output gradient acts as a huge kernel), which the CPU runtime executes 3-8x slower than the
forward pass of the same layer. The weight gradient is a plain matrix product, though:

  dW[i, j, c, o] = sum_{b, h, w} x_pad[b, s h + i, s w + j, c] * g[b, h, w, o],   i.e.  dW = P^T g,

with P the im2col patches (one row per output pixel, K K C_in columns) and g the output gradient (one row per
output pixel). `conv_general_dilated` here is a `jax.custom_vjp` with the same forward pass and input gradient as
XLA's and that weight gradient, computed in chunks of output rows (a `lax.scan`) so the patches of at most
`CHUNK_BYTES` exist at once. The maths is unchanged: the same sums, in float32 accumulation.

Use it through `conv_general_dilated_for(impl)`, which `blocks.Conv` calls with config.runtime.conv_impl:
'auto' on the CPU backend runs every float32 convolution on oneDNN (`onednn.py`: all three passes, faster still)
when its handlers are built and the process has one device, else this version for large convolutions; GPUs and
TPUs keep XLA's own convolution (cuDNN / the TPU compiler). 'xla' is always XLA's, 'im2col' always this one and
'onednn' always oneDNN's (for tests and benchmarks).

`record_conv_calls` captures the convolutions a network runs (input and kernel shapes, strides, padding) without
running it, for the gradient tests and `bench/conv_grad.py` (`nn/probe.py` applies it to G, D and D_m).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from headgan_jax import errors
from headgan_jax.kernels import onednn

CONV_IMPLS = ('auto', 'xla', 'im2col', 'onednn')
# Patches per scan step. Time, under tcmalloc (headgan_jax/host_malloc.py), weight gradient alone, median ms of 8 /
# 32 / 64 MiB: 3x3 512 -> 512 at 64x64, 2 frames 393 / 326 / 362, 1 frame 204 / 181 / 184; 256 -> 512 177 / 166 /
# 166; 256 -> 32 at 256x256 154 / 166 / 166; the others within 5 %. Memory: the paper G step's XLA buffers are 2.55 GB
# per frame with 8 MiB, 2.61 with 32 MiB (2.31 with XLA's own weight gradient).
CHUNK_BYTES = 32 << 20
# 'auto' uses ours for convolutions of at least AUTO_MIN_FLOPS forward FLOPs per call and K_h K_w max(C_in, C_out)
# >= AUTO_MIN_WIDTH. Measured per shape (bench/conv_grad.py, docs/performance.md): XLA:CPU's weight gradient is 2-6x slower
# than ours on every such conv of the paper's G and up to 200x on D's stride-1 4x4 256 -> 512 layer; on narrow
# ones (3x3, 32 -> 32) and small ones (the test configs' < 0.05 GFLOP) both are within 2x and XLA's compiles faster.
AUTO_MIN_FLOPS = 1e8
AUTO_MIN_WIDTH = 1024
# Our convolution's forward pass is a matmul on the narrow side for stride-1 convolutions with a window of at least
# NARROW_MIN_WINDOW taps and at most NARROW_MAX_CHANNELS output channels (`narrow_forward_kind`).
NARROW_MIN_WINDOW = 25
NARROW_MAX_CHANNELS = 16
_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))

ConvFn = Callable[..., jax.Array]


def _pairs(padding: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def narrow_forward_kind(kernel_shape: Sequence[int], strides: Sequence[int]) -> str | None:
  """How `forward_narrow` computes a stride-1 convolution with a large window (K_h K_w >= NARROW_MIN_WINDOW) and
  few channels on one side (<= NARROW_MAX_CHANNELS, fewer than the other side's), or None for XLA's own:
  'output' for few output channels (G's 7x7 heads, 32 -> 1, 2, 3 at 262x262: XLA:CPU ran them 8-24x slower),
  'rows' for few input channels (G's first 7x7 convolutions, 6 or 9 -> 32: 1.7x / 2.6x faster than XLA's, docs/performance.md;
  a full im2col form measured before it was not faster than XLA's)."""
  kh, kw, c_in, c_out = kernel_shape
  if tuple(strides) != (1, 1) or kh * kw < NARROW_MIN_WINDOW:
    return None
  if c_out <= NARROW_MAX_CHANNELS and c_out < c_in:
    return 'output'
  if c_in <= NARROW_MAX_CHANNELS and c_in < c_out:
    return 'rows'
  return None


def forward_narrow(x: jax.Array, w: jax.Array, padding: Sequence[tuple[int, int]], kind: str, precision: Any = None,
                   preferred_element_type: Any = None) -> jax.Array:
  """A stride-1 NHWC / HWIO convolution as one matmul on its narrow side (the same sums as XLA's convolution):

  'rows' (few input channels): Z = C W'' with C the K_w column shifts of x side by side (K_w C_in channels) and W''
  = W as (K_w C_in, K_h C_out), then y[h] = sum_i Z[h + i, (i)]: K_h row-shifted adds of C_out-channel slices;
  'output' (few output channels): Z = x_pad W' with W' = W as (C_in, K K C_out), then
  y[h, w] = sum_{i, j} Z[h + i, w + j, (i, j)]: K K shifted adds of C_out-channel images.
  """
  kh, kw, c_in, c_out = w.shape
  b = x.shape[0]
  (pt, pb), (pl, pr) = padding
  x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  out_h, out_w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  out_type = preferred_element_type or jnp.result_type(x.dtype, w.dtype)
  if kind == 'rows':
    cols = jnp.concatenate([x[:, :, j:j + out_w] for j in range(kw)], axis=-1)  # (B, H_pad, W_out, K_w C_in).
    w2 = w.reshape(kh, kw * c_in, c_out).transpose(1, 0, 2).reshape(kw * c_in, kh * c_out)
    z = lax.dot_general(cols, w2, (((3,), (0,)), ((), ())), precision=precision, preferred_element_type=jnp.float32)
    y = sum(z[:, i:i + out_h, :, i * c_out:(i + 1) * c_out] for i in range(kh))
    return y.astype(out_type)
  w2 = w.transpose(2, 0, 1, 3).reshape(c_in, kh * kw * c_out)
  z = lax.dot_general(x, w2, (((3,), (0,)), ((), ())), precision=precision, preferred_element_type=jnp.float32)
  z = z.reshape(b, x.shape[1], x.shape[2], kh * kw, c_out)
  y = sum(z[:, i:i + out_h, j:j + out_w, i * kw + j] for i in range(kh) for j in range(kw))
  return y.astype(out_type)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv_nhwc(x: jax.Array, w: jax.Array, strides: tuple[int, int], padding: tuple[tuple[int, int], ...],
               precision: Any, preferred_element_type: Any) -> jax.Array:
  kind = narrow_forward_kind(w.shape, strides)
  if kind is not None:
    with jax.named_scope(f'narrow_{kind}_forward'):  # Named for profiles (bench/profile_step.py).
      return forward_narrow(x, w, padding, kind, precision, preferred_element_type)
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC, precision=precision,
                                  preferred_element_type=preferred_element_type)


def _conv_nhwc_fwd(x, w, strides, padding, precision, preferred_element_type):
  return _conv_nhwc(x, w, strides, padding, precision, preferred_element_type), (x, w)


def _conv_nhwc_bwd(strides, padding, precision, preferred_element_type, residuals, g):
  x, w = residuals
  # Input gradient: XLA's own transposed convolution (as fast as the forward pass on CPU).
  _, vjp_x = jax.vjp(lambda x_: lax.conv_general_dilated(
      x_, w, strides, padding, dimension_numbers=_NHWC, precision=precision,
      preferred_element_type=preferred_element_type), x)
  (dx,) = vjp_x(g)
  with jax.named_scope('im2col_weight_grad'):  # Named for profiles (bench/profile_step.py).
    dw = weight_grad_im2col(x, g, w.shape, strides, padding, precision)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd)


def _chunk_rows(out_h: int, row_bytes: int, chunk_bytes: int) -> int:
  """Rows per scan step: as many as fit `chunk_bytes` of patches, spread evenly over the steps."""
  rows = max(1, min(out_h, chunk_bytes // max(row_bytes, 1)))
  steps = -(-out_h // rows)
  return -(-out_h // steps)


def _scan_rows(chunk_grad: Callable, arrays: Sequence[tuple[jax.Array, int, int]], steps: int, acc_shape):
  """sum over s < steps of chunk_grad(*[a[:, s * stride : s * stride + size] for a, stride, size in arrays])."""
  if steps == 1:
    return chunk_grad(*[a[:, :size] for a, _, size in arrays])

  def body(acc, step):
    rows = [lax.dynamic_slice_in_dim(a, step * stride, size, axis=1) for a, stride, size in arrays]
    return acc + chunk_grad(*rows), None

  acc, _ = lax.scan(body, jnp.zeros(acc_shape, jnp.float32), jnp.arange(steps))
  return acc


def weight_grad_im2col(x: jax.Array, g: jax.Array, kernel_shape: Sequence[int], strides: Sequence[int],
                       padding: Sequence[tuple[int, int]], precision: Any = None,
                       chunk_bytes: int = CHUNK_BYTES) -> jax.Array:
  """dL/dW of an NHWC / HWIO convolution as a matmul of im2col patches, over chunks of rows; float32 (K, K, C_in,
  C_out). The patches are taken of the side with fewer channels: of x (P_x^T g) in general, of g (P_g^T x_pad)
  for a stride-1 convolution with C_out < C_in, so the patch matrix is K K min(C_in, C_out) wide.

  x: (B, H, W, C_in) input; g: (B, H_out, W_out, C_out) output gradient; padding: ((lo, hi), (lo, hi)) >= 0.
  """
  if tuple(strides) == (1, 1) and kernel_shape[3] < kernel_shape[2]:
    return _weight_grad_output_patches(x, g, kernel_shape, padding, precision, chunk_bytes)
  return _weight_grad_input_patches(x, g, kernel_shape, strides, padding, precision, chunk_bytes)


def _weight_grad_input_patches(x, g, kernel_shape, strides, padding, precision, chunk_bytes) -> jax.Array:
  """dW = P_x^T g: row r of P_x holds the K x K x C_in input window of output pixel r."""
  kh, kw, c_in, c_out = kernel_shape
  sh, sw = strides
  (pt, _), (pl, pr) = padding
  b, out_h, out_w, _ = g.shape
  itemsize = jnp.dtype(x.dtype).itemsize
  rows = _chunk_rows(out_h, b * out_w * kh * kw * c_in * itemsize, chunk_bytes)
  steps = -(-out_h // rows)
  # Pad the output gradient with zero rows to a whole number of chunks (they add nothing), and the input so that
  # every chunk's window is in range (zeros beyond the bottom padding add nothing either).
  g = jnp.pad(g, ((0, 0), (0, steps * rows - out_h), (0, 0), (0, 0)))
  need_h = (steps * rows - 1) * sh + kh
  x = jnp.pad(x, ((0, 0), (pt, 0), (pl, pr), (0, 0)))
  x = jnp.pad(x, ((0, 0), (0, max(0, need_h - x.shape[1])), (0, 0), (0, 0)))[:, :need_h]

  def chunk_grad(x_rows: jax.Array, g_rows: jax.Array) -> jax.Array:
    cols = [lax.slice(x_rows, (0, i, j, 0), (b, i + (rows - 1) * sh + 1, j + (out_w - 1) * sw + 1, c_in),
                      (1, sh, sw, 1)) for i in range(kh) for j in range(kw)]
    patches = jnp.concatenate(cols, axis=-1).reshape(-1, kh * kw * c_in)
    return lax.dot_general(g_rows.reshape(-1, c_out), patches, (((0,), (0,)), ((), ())), precision=precision,
                           preferred_element_type=jnp.float32)  # (C_out, K K C_in).

  dw_t = _scan_rows(chunk_grad, [(x, rows * sh, (rows - 1) * sh + kh), (g, rows, rows)], steps,
                    (c_out, kh * kw * c_in))
  return dw_t.T.reshape(kh, kw, c_in, c_out)


def _divisor_rows(n: int, max_rows: int) -> int:
  """The largest divisor of n that is at most max_rows (so chunks tile n exactly, without padding copies)."""
  return max(d for d in range(1, min(n, max(max_rows, 1)) + 1) if n % d == 0)


def _weight_grad_output_patches(x, g, kernel_shape, padding, precision, chunk_bytes) -> jax.Array:
  """Stride 1: dW[i, j] = sum_p x[p] g[p + (pt, pl) - (i, j)] over the input's pixels p (the zero padding of x adds
  nothing), i.e. P_g^T x where row p of P_g holds g[p + (pt, pl) - (i, j)] for every (i, j), zero outside g. Only
  g, the side with fewer channels, is padded and copied into patches; x is read in place, in chunks of rows."""
  kh, kw, c_in, c_out = kernel_shape
  (pt, _), (pl, _) = padding
  b, h, w, _ = x.shape
  out_h, out_w = g.shape[1:3]
  itemsize = jnp.dtype(g.dtype).itemsize
  rows = _divisor_rows(h, chunk_bytes // max(b * w * kh * kw * c_out * itemsize, 1))
  # g2[q] = g[q - (kh - 1 - pt, kw - 1 - pl)] (zero outside g), so row p of P_g reads g2[p + (kh - 1 - i, kw - 1 - j)];
  # lax.pad crops where a padding is negative.
  top, left = kh - 1 - pt, kw - 1 - pl
  g2 = lax.pad(g, jnp.zeros((), g.dtype), ((0, 0, 0), (top, h + kh - 1 - top - out_h, 0),
                                           (left, w + kw - 1 - left - out_w, 0), (0, 0, 0)))

  def chunk_grad(x_rows: jax.Array, g_rows: jax.Array) -> jax.Array:
    cols = [lax.slice(g_rows, (0, kh - 1 - i, kw - 1 - j, 0), (b, kh - 1 - i + rows, kw - 1 - j + w, c_out))
            for i in range(kh) for j in range(kw)]
    patches = jnp.concatenate(cols, axis=-1).reshape(-1, kh * kw * c_out)
    return lax.dot_general(patches, x_rows.reshape(-1, c_in), (((0,), (0,)), ((), ())), precision=precision,
                           preferred_element_type=jnp.float32)  # (K K C_out, C_in).

  dw = _scan_rows(chunk_grad, [(x, rows, rows), (g2, rows, rows + kh - 1)], h // rows, (kh * kw * c_out, c_in))
  return dw.reshape(kh, kw, c_out, c_in).transpose(0, 1, 3, 2)


def _canonical_padding(padding, x_shape, w_shape, strides) -> tuple[tuple[int, int], ...]:
  if isinstance(padding, str):
    return _pairs(lax.padtype_to_pads(x_shape[1:3], w_shape[0:2], strides, padding))
  return _pairs(padding)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]], lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None, dimension_numbers: Any = None,
                         feature_group_count: int = 1, batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None) -> jax.Array:
  """`lax.conv_general_dilated` with the im2col weight gradient for 2-D NHWC / HWIO convolutions without dilation
  or groups (every convolution of HeadGAN); any other case is passed to `lax.conv_general_dilated` unchanged."""
  nhwc = _nhwc_operands(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                        feature_group_count, batch_group_count)
  if nhwc is None:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, batch_group_count, precision,
                                    preferred_element_type)
  strides, pads = nhwc
  return _conv_nhwc(lhs, rhs, strides, pads, precision, preferred_element_type)


def forward_flops(lhs_shape: Sequence[int], rhs_shape: Sequence[int], strides: Sequence[int],
                  padding: Sequence[tuple[int, int]]) -> float:
  """2 x multiply-adds of an NHWC / HWIO convolution's forward pass (each gradient costs as much)."""
  b, h, w, _ = lhs_shape
  kh, kw, c_in, c_out = rhs_shape
  (pt, pb), (pl, pr) = padding
  out_h = (h + pt + pb - kh) // strides[0] + 1
  out_w = (w + pl + pr - kw) // strides[1] + 1
  return 2.0 * b * out_h * out_w * kh * kw * c_in * c_out


def conv_general_dilated_auto(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                              padding: str | Sequence[tuple[int, int]], lhs_dilation: Sequence[int] | None = None,
                              rhs_dilation: Sequence[int] | None = None, dimension_numbers: Any = None,
                              feature_group_count: int = 1, batch_group_count: int = 1, precision: Any = None,
                              preferred_element_type: Any = None) -> jax.Array:
  """`conv_general_dilated` for large, wide convolutions (AUTO_MIN_FLOPS, AUTO_MIN_WIDTH), XLA's for the others."""
  args = (lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
          batch_group_count, precision, preferred_element_type)
  if lhs.ndim == 4 and rhs.ndim == 4 and dimension_numbers is not None and (
      lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == _NHWC):
    strides = tuple(int(s) for s in window_strides)
    pads = _canonical_padding(padding, lhs.shape, rhs.shape, strides)
    kh, kw, c_in, c_out = rhs.shape
    if (forward_flops(lhs.shape, rhs.shape, strides, pads) >= AUTO_MIN_FLOPS
        and kh * kw * max(c_in, c_out) >= AUTO_MIN_WIDTH):
      return conv_general_dilated(*args)
  return lax.conv_general_dilated(*args)


def _nhwc_operands(lhs: jax.Array, rhs: jax.Array, window_strides, padding, lhs_dilation, rhs_dilation,
                   dimension_numbers, feature_group_count, batch_group_count):
  """(strides, explicit padding) for a 2-D NHWC / HWIO convolution without dilation or groups and with padding >= 0
  (every convolution of HeadGAN), else None."""
  ours = (lhs.ndim == 4 and rhs.ndim == 4 and feature_group_count == 1 and batch_group_count == 1
          and all(d == 1 for d in (lhs_dilation or (1, 1))) and all(d == 1 for d in (rhs_dilation or (1, 1)))
          and dimension_numbers is not None
          and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == _NHWC)
  if not ours:
    return None
  strides = tuple(int(s) for s in window_strides)
  pads = _canonical_padding(padding, lhs.shape, rhs.shape, strides)
  return (strides, pads) if all(p >= 0 for pair in pads for p in pair) else None


def conv_general_dilated_onednn(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                                padding: str | Sequence[tuple[int, int]], lhs_dilation: Sequence[int] | None = None,
                                rhs_dilation: Sequence[int] | None = None, dimension_numbers: Any = None,
                                feature_group_count: int = 1, batch_group_count: int = 1, precision: Any = None,
                                preferred_element_type: Any = None) -> jax.Array:
  """`lax.conv_general_dilated` on oneDNN (`onednn.conv`) for float32 2-D NHWC / HWIO convolutions without dilation
  or groups; any other (e.g. bfloat16) is `conv_general_dilated_auto`'s, as 'auto' did before oneDNN."""
  args = (lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
          batch_group_count, precision, preferred_element_type)
  nhwc = _nhwc_operands(*args[:-2])
  if nhwc is None or not onednn.supports(lhs, rhs, preferred_element_type):
    return conv_general_dilated_auto(*args)
  return onednn.conv(lhs, rhs, *nhwc)


def conv_general_dilated_for(impl: str) -> ConvFn:
  """The convolution for config.runtime.conv_impl: 'auto' (on the CPU backend: oneDNN's when `onednn.available()`
  and the process has a single device (a custom call is not partitioned across devices), else
  `conv_general_dilated_auto`; XLA's on every other backend), 'xla' or 'im2col' (that one on every backend), or
  'onednn' (CPU only: a ConfigError saying why where its handlers cannot be loaded)."""
  if impl not in CONV_IMPLS:
    raise errors.ConfigError(f'config.runtime.conv_impl = {impl!r}; expected one of {CONV_IMPLS}')
  if impl == 'im2col':
    return conv_general_dilated
  if impl == 'onednn':
    reason = onednn.unavailable_reason()
    if reason is not None:
      raise errors.ConfigError(f"config.runtime.conv_impl = 'onednn', but {reason}")
    return conv_general_dilated_onednn
  if impl == 'auto' and jax.default_backend() == 'cpu':
    if jax.device_count() == 1:
      if onednn.available():
        return conv_general_dilated_onednn
      _warn_once(f'conv_impl auto: oneDNN convolutions unavailable ({onednn.unavailable_reason()}); '
                 'using the im2col weight gradient (slower on CPU)')
    return conv_general_dilated_auto
  return lax.conv_general_dilated


@functools.cache
def _warn_once(message: str) -> None:
  logging.getLogger(__name__).warning(message)


@dataclasses.dataclass(frozen=True)
class ConvCall:
  """One convolution a network runs: NHWC input shape, HWIO kernel shape, strides and explicit padding."""
  name: str  # Flax path of the nn.Conv, e.g. 'flow_net/encoder/conv_0/conv/conv'.
  input_shape: tuple[int, ...]
  kernel_shape: tuple[int, ...]
  strides: tuple[int, int]
  padding: tuple[tuple[int, int], ...]

  @property
  def key(self) -> tuple:
    """What determines the cost: shapes, strides, padding (not the name)."""
    return self.input_shape, self.kernel_shape, self.strides, self.padding


@contextlib.contextmanager
def record_conv_calls() -> Iterator[list[ConvCall]]:
  """Within the block, every flax `nn.Conv` call is appended to the yielded list (use under `jax.eval_shape`:
  nothing is computed). Only 2-D convolutions with integer-pair padding are recorded."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  calls: list[ConvCall] = []

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if isinstance(module, nn.Conv) and context.method_name == '__call__':
      x = args[0]
      k = module.kernel_size if not isinstance(module.kernel_size, int) else (module.kernel_size,) * 2
      strides = module.strides if not isinstance(module.strides, int) else (module.strides,) * 2
      kernel_shape = tuple(k) + (x.shape[-1], module.features)
      calls.append(ConvCall('/'.join(module.scope.path), tuple(x.shape), kernel_shape, tuple(strides),
                            _canonical_padding(module.padding, x.shape, kernel_shape, tuple(strides))))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    yield calls


def distinct_calls(calls: Sequence[ConvCall]) -> list[tuple[ConvCall, int]]:
  """Unique convolutions by shape, with how many times each occurs, in first-seen order."""
  counts: dict[tuple, list] = {}
  for call in calls:
    counts.setdefault(call.key, [call, 0])[1] += 1
  return [(call, n) for call, n in counts.values()]
