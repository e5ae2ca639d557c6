"""Building blocks of HeadGAN's networks (paper Fig. 7, Appendix B; SPADE [24], AdaIN [16], PixelShuffle [26]).

Conventions: NHWC arrays; parameters float32, compute in `dtype` (float32 or bfloat16). Every conv / dense kernel
is Xavier-normal with gain `init_gain` (config.model.init_gain), biases zero. Spectral-norm power-iteration state
lives in the 'batch_stats' collection (flax.linen.SpectralNorm) and is written only when `update_stats=True`.

Spectral norm: at init flax.linen.SpectralNorm stores the normalised kernel W / sigma, so a spectral-normalised
conv starts with unit spectral norm whatever `init_gain` says (its output is W / sigma either way). The authors'
PyTorch code lands in a similar place: its Xavier init writes to the derived `weight`, leaving `weight_orig` at
PyTorch's default init.

Convs that feed an instance norm directly carry no bias: the norm subtracts any per-channel constant, so such a
bias would only ever receive an identically zero gradient (SPADE's code deletes it for the same reason).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from headgan_jax import errors
from headgan_jax.nn import conv as conv_lib

Dtype = Any

RESIZE_METHODS = ('nearest', 'bilinear')
IN_EPSILON = 1e-5  # PyTorch's InstanceNorm2d default, as in the authors' code.


def xavier_normal(gain: float) -> nn.initializers.Initializer:
  """Xavier/Glorot normal with PyTorch's `gain`: std = gain * sqrt(2 / (fan_in + fan_out)) (untruncated)."""
  return nn.initializers.variance_scaling(gain * gain, 'fan_avg', 'normal')


def pixel_shuffle(x: jax.Array, factor: int = 2) -> jax.Array:
  """Depth-to-space (B, H, W, C r^2) -> (B, H r, W r, C), the NHWC twin of PyTorch's `nn.PixelShuffle(r)`.

  Channel ordering as in PyTorch: output pixel (h r + i, w r + j), channel c reads input channel c r^2 + i r + j of
  pixel (h, w).
  """
  b, h, w, c = x.shape
  if c % (factor * factor):
    raise ValueError(f'pixel_shuffle: {c} channels are not divisible by factor^2 = {factor * factor}')
  oc = c // (factor * factor)
  x = x.reshape(b, h, w, oc, factor, factor)
  x = x.transpose(0, 1, 4, 2, 5, 3)  # (b, h, i, w, j, c)
  return x.reshape(b, h * factor, w * factor, oc)


def resize_to(x: jax.Array, height: int, width: int, method: str) -> jax.Array:
  """Resizes (B, h, w, C) to (B, height, width, C); identity when the size already matches.

  Both follow jax.image.resize with half-pixel centres. 'bilinear' equals PyTorch's `F.interpolate(mode='bilinear',
  align_corners=False)` (no antialiasing: a /2 resize is the 2x2 average). 'nearest' equals PyTorch's
  'nearest-exact'; PyTorch's legacy 'nearest' (SPADE's) reads source pixel floor(i * in / out), the same when
  up-sampling by an integer factor, but when down-sampling by f it reads pixel f i where we read f i + f // 2.
  """
  if method not in RESIZE_METHODS:
    raise errors.ConfigError(f'config.model.spade_resize = {method!r}; expected one of {RESIZE_METHODS}')
  if x.shape[1:3] == (height, width):
    return x
  shape = (x.shape[0], height, width, x.shape[3])
  jax_method = 'nearest' if method == 'nearest' else 'linear'
  return jax.image.resize(x, shape, jax_method, antialias=False).astype(x.dtype)


def instance_norm(dtype: Dtype, name: str | None = None) -> nn.InstanceNorm:
  """Parameter-free instance norm (statistics in float32)."""
  return nn.InstanceNorm(epsilon=IN_EPSILON, use_bias=False, use_scale=False, dtype=dtype, name=name)


class PixelShuffle(nn.Module):
  """`pixel_shuffle` as a module, so it shows up in summaries and captured intermediates."""
  factor: int = 2

  def __call__(self, x: jax.Array) -> jax.Array:
    return pixel_shuffle(x, self.factor)


class Conv(nn.Module):
  """A k x k convolution with symmetric zero padding (PyTorch's `padding=k//2` or `padding`), optionally
  spectral-normalised (SN-GAN [22]; state in 'batch_stats')."""
  features: int
  kernel_size: int = 3
  strides: int = 1
  padding: int | None = None  # None: kernel_size // 2.
  use_bias: bool = True
  spectral_norm: bool = False
  init_gain: float = 0.02
  dtype: Dtype = jnp.float32
  conv_impl: str = 'xla'  # config.model.conv_impl: 'auto', 'xla' or 'im2col' (see nn/conv.py).

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool = False) -> jax.Array:
    pad = self.kernel_size // 2 if self.padding is None else self.padding
    conv = nn.Conv(
        self.features, (self.kernel_size, self.kernel_size), strides=(self.strides, self.strides),
        padding=((pad, pad), (pad, pad)), use_bias=self.use_bias, dtype=self.dtype,
        kernel_init=xavier_normal(self.init_gain), name='conv',
        conv_general_dilated=conv_lib.conv_general_dilated_for(self.conv_impl))
    if self.spectral_norm:
      # dtype float32: flax's SpectralNorm stores its (normalised) output as the kernel at init, and parameters
      # must stay float32; the conv casts to the compute dtype itself.
      return nn.SpectralNorm(conv, dtype=jnp.float32, name='sn')(x, update_stats=update_stats)
    return conv(x)


class ConvNormReLU(nn.Module):
  """Encoder layer of F and R (Tables 2, 3): k x k conv (stride s), parameter-free instance norm, ReLU."""
  features: int
  kernel_size: int
  strides: int = 1
  init_gain: float = 0.02
  dtype: Dtype = jnp.float32
  conv_impl: str = 'xla'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = Conv(self.features, self.kernel_size, self.strides, use_bias=False, init_gain=self.init_gain,
             dtype=self.dtype, conv_impl=self.conv_impl, name='conv')(x)
    return nn.relu(instance_norm(self.dtype, name='norm')(x))


class SpadeNorm(nn.Module):
  """SPADE normalisation [24]: out = IN(x) * (1 + gamma(c)) + beta(c).

  The modulation input c is resized to x's spatial size (`resize`: 'nearest' or 'bilinear'), then a shared
  3x3 conv (width `hidden`) + ReLU, and two 3x3 convs give gamma and beta (C channels each).
  """
  hidden: int = 256
  resize: str = 'nearest'
  init_gain: float = 0.02
  dtype: Dtype = jnp.float32
  conv_impl: str = 'xla'

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
    c = x.shape[-1]
    normed = instance_norm(self.dtype, name='norm')(x)
    cond = resize_to(cond.astype(self.dtype), x.shape[1], x.shape[2], self.resize)
    kw = dict(init_gain=self.init_gain, dtype=self.dtype, conv_impl=self.conv_impl)
    actv = nn.relu(Conv(self.hidden, 3, name='shared', **kw)(cond))
    gamma = Conv(c, 3, name='gamma', **kw)(actv)
    beta = Conv(c, 3, name='beta', **kw)(actv)
    return normed * (1 + gamma) + beta


class AdaIN(nn.Module):
  """Adaptive instance norm [16] driven by a vector a (the 300-d audio feature h_t^(a)):
  Dense(a) -> (gamma, beta) with C channels each; out = IN(x) * (1 + gamma) + beta."""
  init_gain: float = 0.02
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, a: jax.Array) -> jax.Array:
    c = x.shape[-1]
    normed = instance_norm(self.dtype, name='norm')(x)
    style = nn.Dense(2 * c, dtype=self.dtype, kernel_init=xavier_normal(self.init_gain), name='style')(
        a.astype(self.dtype))
    gamma, beta = jnp.split(style[:, None, None, :], 2, axis=-1)
    return normed * (1 + gamma) + beta


class SpadeBlock(nn.Module):
  """SPADE block (Fig. 7): two stages of (SPADE norm, LeakyReLU, 3x3 conv), C channels kept, plus the identity
  shortcut when `shortcut` (authors' code; the paper's Fig. 7 draws none)."""
  hidden: int = 256
  resize: str = 'nearest'
  shortcut: bool = True
  spectral_norm: bool = True
  lrelu_slope: float = 0.2
  init_gain: float = 0.02
  dtype: Dtype = jnp.float32
  conv_impl: str = 'xla'

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array, update_stats: bool = False) -> jax.Array:
    c = x.shape[-1]
    kw = dict(init_gain=self.init_gain, dtype=self.dtype, conv_impl=self.conv_impl)
    dx = SpadeNorm(self.hidden, self.resize, name='norm_0', **kw)(x, cond)
    # conv_0 feeds norm_1's instance norm: no bias (see the module docstring).
    dx = Conv(c, 3, use_bias=False, spectral_norm=self.spectral_norm, name='conv_0', **kw)(
        nn.leaky_relu(dx, self.lrelu_slope), update_stats)
    dx = SpadeNorm(self.hidden, self.resize, name='norm_1', **kw)(dx, cond)
    dx = Conv(c, 3, spectral_norm=self.spectral_norm, name='conv_1', **kw)(
        nn.leaky_relu(dx, self.lrelu_slope), update_stats)
    return x + dx if self.shortcut else dx


class AdainBlock(nn.Module):
  """AdaIN block (Fig. 7): two stages of (AdaIN, LeakyReLU, 3x3 conv), C channels kept; identity shortcut only
  when `shortcut` (the authors' code has none here)."""
  shortcut: bool = False
  spectral_norm: bool = True
  lrelu_slope: float = 0.2
  init_gain: float = 0.02
  dtype: Dtype = jnp.float32
  conv_impl: str = 'xla'

  @nn.compact
  def __call__(self, x: jax.Array, a: jax.Array, update_stats: bool = False) -> jax.Array:
    c = x.shape[-1]
    kw = dict(init_gain=self.init_gain, dtype=self.dtype)
    dx = AdaIN(name='norm_0', **kw)(x, a)
    dx = Conv(c, 3, use_bias=False, spectral_norm=self.spectral_norm, conv_impl=self.conv_impl, name='conv_0',
              **kw)(nn.leaky_relu(dx, self.lrelu_slope), update_stats)
    dx = AdaIN(name='norm_1', **kw)(dx, a)
    dx = Conv(c, 3, spectral_norm=self.spectral_norm, conv_impl=self.conv_impl, name='conv_1', **kw)(
        nn.leaky_relu(dx, self.lrelu_slope), update_stats)
    return x + dx if self.shortcut else dx


def compute_dtype(config_model) -> Dtype:
  """config.model.compute_dtype -> jnp dtype ('float32' or 'bfloat16')."""
  name = config_model.compute_dtype
  if name not in ('float32', 'bfloat16'):
    raise errors.ConfigError(f"config.model.compute_dtype = {name!r}; expected 'float32' or 'bfloat16'")
  return jnp.dtype(name)
