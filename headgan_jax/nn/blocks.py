"""Building blocks of HeadGAN's networks (paper Fig. 7, Appendix B; SPADE [24], AdaIN [16], PixelShuffle [26]).

Conventions: NHWC arrays; parameters float32, compute in `settings.dtype` (float32 or bfloat16). Every conv / dense
kernel is Xavier-normal with gain `init_gain` (config.model.blocks.init_gain), biases zero. Spectral-norm
power-iteration state lives in the 'batch_stats' collection (flax.linen.SpectralNorm) and is written only when
`update_stats=True`.

How every block of G, D and D_m is built is ONE frozen `BlockSettings` (made from the config by
`block_settings(config)`: BlockSettings(**config.model.blocks) with config.runtime's conv_impl, dtype and remat);
the networks pass it down instead of redeclaring its fields. Its defaults are the authors' code: spectral-norm
encoder convs followed by an affine instance norm (learnable scale and shift, initialised to 1 and 0), reflection
padding before every 7x7 conv, spectral norm on the convs of SPADE / AdaIN blocks.

Upsampling init (config.model.blocks.upsample_init, `BlockSettings.upsample_init`): G goes up with pixel shuffles, whose
r^2 sub-pixel outputs come from r^2 independently initialised output channels of the conv before it, so an untrained
G paints a period-r pattern (docs/grid_artefacts.md has the spectra). 'default' (the authors': Xavier like every
conv) keeps that; 'icnr' initialises the last conv of the block before each pixel shuffle with ICNR (Aitken et al.
2017, "Checkerboard artifact free sub-pixel convolution"): one Xavier kernel per output channel, copied to its r^2
sub-pixel channels, so the shuffle starts as a nearest-neighbour upsampling. A SPADE block's identity shortcut (F,
and R without audio) adds its input unchanged, so there only the conv's part starts free of the pattern.

Spectral norm: at init flax.linen.SpectralNorm stores the normalised kernel W / sigma, so a spectral-normalised
conv starts with unit spectral norm whatever `init_gain` says (its output is W / sigma either way). The authors'
PyTorch code lands in a similar place: its Xavier init writes to the derived `weight`, leaving `weight_orig` at
PyTorch's default init.

Convs that feed an instance norm directly carry no bias by default: the norm subtracts any per-channel constant, so
such a bias only ever receives an identically zero gradient. The authors' code drops it before its encoder and
discriminator norms but keeps it on the first conv of SPADE and AdaIN blocks; `BlockSettings.dead_conv_biases`
adds those back (the parameter count then equals theirs exactly; training is unchanged).

Rematerialisation (config.runtime.remat, `BlockSettings.remat`; docs/accelerators.md has the measured memory): 'none'
keeps every activation the backward pass needs (default). 'blocks' wraps every SPADE and AdaIN block of F and R in
flax's `nn.remat` (`jax.checkpoint`): the forward pass keeps only each block's inputs (the previous block's output,
the condition / audio vector) and the backward pass recomputes the block's inside: instance norms, SPADE's
`spade_hidden`-wide modulation maps (256 channels, 8x R's 32 at full resolution), LeakyReLUs and convolutions, i.e.
one more forward pass of the blocks. 'blocks_convs' wraps the same blocks but keeps the output of every convolution
(tagged 'conv' by `Conv`; a policy `save_only_these_names`), so the backward pass recomputes only the elementwise
work (norms, modulation, LeakyReLU): less memory saved, almost no FLOPs added. Parameters, their names, the
spectral-norm statistics and every value are the same whichever is chosen (tests/test_remat.py).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from headgan_jax import errors
from headgan_jax.kernels import conv as conv_lib

Dtype = Any

RESIZE_METHODS = ('nearest_floor', 'nearest', 'bilinear')
PADDING_MODES = ('zeros', 'reflect')
CONV_IMPLS = conv_lib.CONV_IMPLS
IN_EPSILON = 1e-5  # PyTorch's InstanceNorm2d default, as in the authors' code.
UPSAMPLE_INITS = ('default', 'icnr')  # config.model.blocks.upsample_init; see the module docstring.
REMAT_POLICIES = ('none', 'blocks', 'blocks_convs')  # config.runtime.remat; see the module docstring.
CONV_OUTPUT_NAME = 'conv'  # checkpoint_name of every Conv's output (kept by the 'blocks_convs' policy).


def xavier_normal(gain: float) -> nn.initializers.Initializer:
  """Xavier/Glorot normal with PyTorch's `gain`: std = gain * sqrt(2 / (fan_in + fan_out)) (untruncated)."""
  return nn.initializers.variance_scaling(gain * gain, 'fan_avg', 'normal')


def icnr(base: nn.initializers.Initializer, factor: int = 2) -> nn.initializers.Initializer:
  """ICNR (Aitken et al. 2017) for a conv whose output a `pixel_shuffle(., factor)` follows: `base` drawn for the
  whole kernel (so its fan-in / fan-out scale is unchanged), then output channel c r^2 + s (sub-pixel s of shuffled
  channel c) takes channel c r^2's kernel for every s: the shuffle's r^2 sub-pixel outputs start identical."""
  groups = factor * factor

  def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
    if shape[-1] % groups:
      raise ValueError(f'icnr: {shape[-1]} output channels are not divisible by factor^2 = {groups}')
    kernel = base(key, shape, dtype).reshape(shape[:-1] + (shape[-1] // groups, groups))
    return jnp.broadcast_to(kernel[..., :1], kernel.shape).reshape(shape)

  return init


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

  'nearest_floor' is PyTorch's (legacy) `F.interpolate(mode='nearest')`, which SPADE's and the authors' code use:
  output pixel i reads input pixel floor(i * in / out), so a /f down-sampling reads pixel f i. 'nearest' and
  'bilinear' follow jax.image.resize with half-pixel centres: 'nearest' equals PyTorch's 'nearest-exact' (reads
  f i + f // 2 when down-sampling; the same as 'nearest_floor' when up-sampling by an integer factor), 'bilinear'
  equals `F.interpolate(mode='bilinear', align_corners=False)` (no antialiasing: a /2 resize is the 2x2 average).
  """
  if method not in RESIZE_METHODS:
    raise errors.ConfigError(f'config.model.blocks.spade_resize = {method!r}; expected one of {RESIZE_METHODS}')
  if x.shape[1:3] == (height, width):
    return x
  if method == 'nearest_floor':
    rows = np.minimum(np.floor(np.arange(height) * (x.shape[1] / height)).astype(np.int32), x.shape[1] - 1)
    cols = np.minimum(np.floor(np.arange(width) * (x.shape[2] / width)).astype(np.int32), x.shape[2] - 1)
    return jnp.take(jnp.take(x, rows, axis=1), cols, axis=2)
  shape = (x.shape[0], height, width, x.shape[3])
  jax_method = 'nearest' if method == 'nearest' else 'linear'
  return jax.image.resize(x, shape, jax_method, antialias=False).astype(x.dtype)


def instance_norm(dtype: Dtype, affine: bool = False, name: str | None = None) -> nn.InstanceNorm:
  """Instance norm (statistics in float32): parameter-free, or with a learnable per-channel scale (init 1) and
  shift (init 0) when `affine` (PyTorch's InstanceNorm2d(affine=True), as the authors' encoders and D use)."""
  return nn.InstanceNorm(epsilon=IN_EPSILON, use_bias=affine, use_scale=affine, dtype=dtype, name=name)


class PixelShuffle(nn.Module):
  """`pixel_shuffle` as a module, so it shows up in summaries and captured intermediates."""
  factor: int = 2

  def __call__(self, x: jax.Array) -> jax.Array:
    return pixel_shuffle(x, self.factor)


def conv_function(impl: str) -> Callable[..., jax.Array]:
  """The convolution primitive behind every `Conv` of G, D and D_m (config.runtime.conv_impl), with the signature
  of `jax.lax.conv_general_dilated`."""
  return conv_lib.conv_general_dilated_for(impl)  # ConfigError for an unknown one.


@dataclasses.dataclass(frozen=True)
class BlockSettings:
  """How the blocks of G, D and D_m are built; hashable, so modules can carry it as a field.

  Attributes:
    spade_hidden: hidden width of SPADE's modulation convs.
    spade_resize: how SPADE resizes its condition to the layer (`resize_to`: 'nearest_floor', the authors',
      'nearest' or 'bilinear').
    shortcut: identity shortcut of SPADE blocks (authors' code; False = Fig. 7 as drawn). AdaIN blocks have none.
    spectral_norm: spectral norm on the convs of SPADE and AdaIN blocks.
    encoder_spectral_norm: spectral norm on the encoder convs of F and R (authors' code).
    affine_norm: the instance norms after encoder convs (and, in D / D_m, after the middle convs) learn a scale
      and a shift (authors' code); False: parameter-free.
    padding_7x7: 'reflect' (authors' ReflectionPad2d(3)) or 'zeros' before every 7x7 conv.
    dead_conv_biases: give the first conv of SPADE / AdaIN blocks a bias, as the authors' code does; it feeds an
      instance norm, so its gradient is identically zero (False: no such parameter).
    lrelu_slope: LeakyReLU slope.
    init_gain: Xavier-normal gain of every conv / dense kernel.
    conv_impl: the convolution primitive (`conv_function`), e.g. 'xla'.
    dtype: compute dtype (parameters stay float32).
    remat: rematerialisation of the SPADE / AdaIN blocks, one of REMAT_POLICIES (module docstring).
    upsample_init: init of the last conv before each pixel shuffle, one of UPSAMPLE_INITS (module docstring).
  """
  spade_hidden: int = 256
  spade_resize: str = 'nearest_floor'
  shortcut: bool = True
  spectral_norm: bool = True
  encoder_spectral_norm: bool = True
  affine_norm: bool = True
  padding_7x7: str = 'reflect'
  dead_conv_biases: bool = False
  lrelu_slope: float = 0.2
  init_gain: float = 0.02
  conv_impl: str = 'xla'
  dtype: Dtype = jnp.float32
  remat: str = 'none'
  upsample_init: str = 'default'

  def conv(self, features: int, kernel_size: int = 3, strides: int = 1, *, padding: int | None = None,
           use_bias: bool = True, spectral_norm: bool = False, shuffle_after: int = 0,
           name: str | None = None) -> 'Conv':
    """A `Conv` with these settings' init, dtype and conv_impl; 7x7 convs get `padding_7x7`. `shuffle_after`: the
    factor of the pixel shuffle that reads this conv's output (0: none), for `upsample_init`. Call it inside a
    module's compact method (the conv becomes that module's child)."""
    mode = self.padding_7x7 if kernel_size == 7 else 'zeros'
    return Conv(features, kernel_size, strides, padding=padding, use_bias=use_bias, spectral_norm=spectral_norm,
                init_gain=self.init_gain, dtype=self.dtype, padding_mode=mode, conv_impl=self.conv_impl,
                name_output=self.remat == 'blocks_convs',
                icnr_factor=shuffle_after if self.upsample_init == 'icnr' else 0, name=name)

  def instance_norm(self, affine: bool = False, name: str | None = None) -> nn.InstanceNorm:
    return instance_norm(self.dtype, affine=affine, name=name)


def block_settings(config, affine_norm: bool | None = None) -> BlockSettings:
  """BlockSettings(**config.model.blocks) with config.runtime's conv_impl, remat and compute dtype (`affine_norm`
  overrides config.model.blocks.affine_norm, e.g. for D). ConfigError for a field BlockSettings does not have."""
  b, r = config.model.blocks, config.runtime
  fields = {f.name for f in dataclasses.fields(BlockSettings)} - {'conv_impl', 'remat', 'dtype'}
  for name in b:
    if name not in fields:
      raise errors.ConfigError(f'config.model.blocks.{name}: not a field of BlockSettings (one of {sorted(fields)})')
  if b.padding_7x7 not in PADDING_MODES:
    raise errors.ConfigError(f'config.model.blocks.padding_7x7 = {b.padding_7x7!r}; expected one of {PADDING_MODES}')
  if b.spade_resize not in RESIZE_METHODS:
    raise errors.ConfigError(
        f'config.model.blocks.spade_resize = {b.spade_resize!r}; expected one of {RESIZE_METHODS}')
  conv_function(r.conv_impl)  # ConfigError for an unknown implementation.
  if r.remat not in REMAT_POLICIES:
    raise errors.ConfigError(f'config.runtime.remat = {r.remat!r}; expected one of {REMAT_POLICIES}')
  if b.get('upsample_init', 'default') not in UPSAMPLE_INITS:
    raise errors.ConfigError(
        f'config.model.blocks.upsample_init = {b.upsample_init!r}; expected one of {UPSAMPLE_INITS}')
  settings = BlockSettings(**b, conv_impl=r.conv_impl, dtype=compute_dtype(r), remat=r.remat)
  return settings if affine_norm is None else dataclasses.replace(settings, affine_norm=affine_norm)


class Conv(nn.Module):
  """A k x k convolution with symmetric padding (PyTorch's `padding=k//2` or `padding`): zeros, or reflection
  (PyTorch's ReflectionPad2d before an unpadded conv); optionally spectral-normalised (SN-GAN [22]; state in
  'batch_stats'). `conv_impl` picks the convolution primitive (`conv_function`)."""
  features: int
  kernel_size: int = 3
  strides: int = 1
  padding: int | None = None  # None: kernel_size // 2.
  use_bias: bool = True
  spectral_norm: bool = False
  init_gain: float = 0.02
  dtype: Dtype = jnp.float32
  padding_mode: str = 'zeros'
  conv_impl: str = 'xla'
  name_output: bool = False  # Tag the output CONV_OUTPUT_NAME (kept by the 'blocks_convs' remat policy).
  icnr_factor: int = 0  # > 0: ICNR init (`icnr`) for a pixel shuffle of this factor after the conv.

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool = False) -> jax.Array:
    pad = self.kernel_size // 2 if self.padding is None else self.padding
    if self.padding_mode not in PADDING_MODES:
      raise errors.ConfigError(f'Conv padding mode {self.padding_mode!r}; expected one of {PADDING_MODES}')
    if self.padding_mode == 'reflect' and pad:
      x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='reflect')
      pad = 0
    conv = nn.Conv(
        self.features, (self.kernel_size, self.kernel_size), strides=(self.strides, self.strides),
        padding=((pad, pad), (pad, pad)), use_bias=self.use_bias, dtype=self.dtype,
        kernel_init=icnr(xavier_normal(self.init_gain), self.icnr_factor) if self.icnr_factor
        else xavier_normal(self.init_gain), conv_general_dilated=conv_function(self.conv_impl), name='conv')
    if self.spectral_norm:
      # dtype float32: flax's SpectralNorm stores its (normalised) output as the kernel at init, and parameters
      # must stay float32; the conv casts to the compute dtype itself.
      y = nn.SpectralNorm(conv, dtype=jnp.float32, name='sn')(x, update_stats=update_stats)
    else:
      y = conv(x)
    return checkpoint_name(y, CONV_OUTPUT_NAME) if self.name_output else y


class ConvNormReLU(nn.Module):
  """Encoder layer of F and R (Tables 2, 3): k x k conv (stride s, spectral norm, no bias), instance norm (affine
  per `settings.affine_norm`), ReLU."""
  features: int
  kernel_size: int
  strides: int = 1
  settings: BlockSettings = BlockSettings()

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool = False) -> jax.Array:
    s = self.settings
    x = s.conv(self.features, self.kernel_size, self.strides, use_bias=False,
               spectral_norm=s.encoder_spectral_norm, name='conv')(x, update_stats)
    return nn.relu(s.instance_norm(s.affine_norm, name='norm')(x))


class SpadeNorm(nn.Module):
  """SPADE normalisation [24]: out = IN(x) * (1 + gamma(c)) + beta(c).

  The modulation input c is resized to x's spatial size (`settings.spade_resize`: 'nearest' or 'bilinear'), then a
  shared 3x3 conv (width `settings.spade_hidden`) + ReLU, and two 3x3 convs give gamma and beta (C channels each).
  """
  settings: BlockSettings = BlockSettings()

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
    s = self.settings
    c = x.shape[-1]
    normed = s.instance_norm(name='norm')(x)
    cond = resize_to(cond.astype(s.dtype), x.shape[1], x.shape[2], s.spade_resize)
    actv = nn.relu(s.conv(s.spade_hidden, 3, name='shared')(cond))
    gamma = s.conv(c, 3, name='gamma')(actv)
    beta = s.conv(c, 3, name='beta')(actv)
    return normed * (1 + gamma) + beta


class AdaIN(nn.Module):
  """Adaptive instance norm [16] driven by a vector a (the 300-d audio feature h_t^(a)):
  Dense(a) -> (gamma, beta) with C channels each; out = IN(x) * (1 + gamma) + beta."""
  settings: BlockSettings = BlockSettings()

  @nn.compact
  def __call__(self, x: jax.Array, a: jax.Array) -> jax.Array:
    s = self.settings
    c = x.shape[-1]
    normed = s.instance_norm(name='norm')(x)
    style = nn.Dense(2 * c, dtype=s.dtype, kernel_init=xavier_normal(s.init_gain), name='style')(a.astype(s.dtype))
    gamma, beta = jnp.split(style[:, None, None, :], 2, axis=-1)
    return normed * (1 + gamma) + beta


class SpadeBlock(nn.Module):
  """SPADE block (Fig. 7): two stages of (SPADE norm, LeakyReLU, 3x3 conv), C channels kept, plus the identity
  shortcut when `settings.shortcut` (authors' code; the paper's Fig. 7 draws none). `shuffle_after`: the factor of
  a pixel shuffle that reads the output (0: none; see `BlockSettings.upsample_init`)."""
  settings: BlockSettings = BlockSettings()
  shuffle_after: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array, update_stats: bool = False) -> jax.Array:
    s = self.settings
    c = x.shape[-1]
    dx = SpadeNorm(s, name='norm_0')(x, cond)
    # conv_0 feeds norm_1's instance norm: its bias is dead (see the module docstring).
    dx = s.conv(c, 3, use_bias=s.dead_conv_biases, spectral_norm=s.spectral_norm, name='conv_0')(
        nn.leaky_relu(dx, s.lrelu_slope), update_stats)
    dx = SpadeNorm(s, name='norm_1')(dx, cond)
    dx = s.conv(c, 3, spectral_norm=s.spectral_norm, shuffle_after=self.shuffle_after, name='conv_1')(
        nn.leaky_relu(dx, s.lrelu_slope), update_stats)
    return x + dx if s.shortcut else dx


class AdainBlock(nn.Module):
  """AdaIN block (Fig. 7): two stages of (AdaIN, LeakyReLU, 3x3 conv), C channels kept, no shortcut (neither
  Fig. 7 nor the authors' code has one). `shuffle_after`: as SpadeBlock's."""
  settings: BlockSettings = BlockSettings()
  shuffle_after: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, a: jax.Array, update_stats: bool = False) -> jax.Array:
    s = self.settings
    c = x.shape[-1]
    dx = AdaIN(s, name='norm_0')(x, a)
    dx = s.conv(c, 3, use_bias=s.dead_conv_biases, spectral_norm=s.spectral_norm, name='conv_0')(
        nn.leaky_relu(dx, s.lrelu_slope), update_stats)
    dx = AdaIN(s, name='norm_1')(dx, a)
    return s.conv(c, 3, spectral_norm=s.spectral_norm, shuffle_after=self.shuffle_after, name='conv_1')(
        nn.leaky_relu(dx, s.lrelu_slope), update_stats)


def _remat(cls: type[nn.Module], settings: BlockSettings) -> type[nn.Module]:
  """`cls` (a block whose __call__ is (self, x, condition, update_stats)) under settings.remat."""
  if settings.remat == 'none':
    return cls
  if settings.remat not in REMAT_POLICIES:
    raise errors.ConfigError(f'config.runtime.remat = {settings.remat!r}; expected one of {REMAT_POLICIES}')
  policy = (jax.checkpoint_policies.save_only_these_names(CONV_OUTPUT_NAME) if settings.remat == 'blocks_convs'
            else None)  # None: nothing inside the block is kept.
  return nn.remat(cls, static_argnums=(3,), policy=policy)  # argnum 3 = update_stats (flax counts self as 0).


def spade_block(settings: BlockSettings, name: str, shuffle_after: int = 0) -> nn.Module:
  """A `SpadeBlock`, rematerialised per settings.remat; call inside a compact method, with update_stats
  positional: `spade_block(s, 'spade_0')(x, cond, update_stats)`. `shuffle_after`: see SpadeBlock."""
  return _remat(SpadeBlock, settings)(settings, shuffle_after, name=name)


def adain_block(settings: BlockSettings, name: str, shuffle_after: int = 0) -> nn.Module:
  """An `AdainBlock`, rematerialised per settings.remat (see `spade_block`)."""
  return _remat(AdainBlock, settings)(settings, shuffle_after, name=name)


def compute_dtype(config_runtime) -> Dtype:
  """config.runtime.compute_dtype -> jnp dtype ('float32' or 'bfloat16')."""
  name = config_runtime.compute_dtype
  if name not in ('float32', 'bfloat16'):
    raise errors.ConfigError(f"config.runtime.compute_dtype = {name!r}; expected 'float32' or 'bfloat16'")
  return jnp.dtype(name)
