"""The generator G = F + R (paper eq. 2, Fig. 3): y~_t = G(x_{t-k:t}, y_ref, x_ref, h_t^(a)).

Usage:
  G = make_generator(config)
  variables = G.init(rng, x_drive, y_ref, x_ref, audio)           # {'params', 'batch_stats'}
  out, new_state = G.apply(variables, x_drive, y_ref, x_ref, audio, update_stats=True,
                           mutable=['batch_stats'])                # training: power iterations advance
  out = G.apply(variables, x_drive, y_ref, x_ref, audio)          # inference: 'batch_stats' read only

Ablations (Table 1):
- use_flow=False ("w/o F"): the paper motivates F by saying that features extracted from y_ref by an encoder,
  without alignment to the driving pose, serve R less well. So "w/o F" keeps F's encoder of (y_ref, x_ref) but drops
  its flow decoder: R's SPADE blocks get the UNWARPED h^(1..3) and the unwarped y_ref. The output then has
  warped_ref = y_ref, warped_features = (h^(1), h^(2), h^(3)), flow = 0 and mask = 1; F's losses (L_F^L1,
  L_F^VGG, L_F^Temp) have nothing to train and should be skipped by the trainer.
- use_audio=False ("w/o audio"): the AdaIN blocks see a zero vector, so only their Dense biases act (the Dense
  kernels get zero gradient).
- conditioning='landmarks': no model change; the caller passes drawn landmark images instead of x_t / x_ref.
Compute dtype: config.model.compute_dtype ('float32' or 'bfloat16'); parameters are always float32, and every
output is float32.
"""
from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from headgan_jax import errors
from headgan_jax.nn import blocks
from headgan_jax.nn.flow import DenseFlowNetwork, Encoder, warp_reference
from headgan_jax.nn.render import RenderingNetwork


@flax.struct.dataclass
class GeneratorOutput:
  """G's outputs, all float32. image = y~_t in [-1, 1]; warped_ref = y-bar_t^ref; warped_features =
  (h-bar^(1), h-bar^(2), h-bar^(3)) lowest resolution (H/4) first; flow (B, H, W, 2) pixels (x, y);
  mask (B, H, W, 1)."""
  image: jax.Array
  warped_ref: jax.Array
  warped_features: tuple[jax.Array, ...]
  flow: jax.Array
  mask: jax.Array


class Generator(nn.Module):
  """G: the dense flow network F warps the reference image and its features to the driving pose; the rendering
  network R turns x_{t-k:t} into y~_t, conditioned on them (SPADE) and on the audio (AdaIN)."""
  ngf: int = 32
  num_down: int = 2
  num_past_frames: int = 2
  flow_low_blocks: int = 3
  spade_hidden: int = 256
  spade_resize: str = 'nearest'
  block_shortcut: bool = True
  block_spectral_norm: bool = True
  audio_dim: int = 300
  lrelu_slope: float = 0.2
  init_gain: float = 0.02
  use_flow: bool = True
  use_audio: bool = True
  dtype: blocks.Dtype = jnp.float32
  conv_impl: str = 'xla'

  def _check_inputs(self, x_drive, y_ref, x_ref, audio) -> None:
    b, h, w, _ = y_ref.shape
    need_c = 3 * (self.num_past_frames + 1)
    if x_drive.shape != (b, h, w, need_c):
      raise errors.ConfigError(
          f'Generator: x_drive has shape {x_drive.shape}; with config.model.num_past_frames = '
          f'{self.num_past_frames} it must be {(b, h, w, need_c)} (y_ref is {y_ref.shape})')
    if x_ref.shape != (b, h, w, 3) or y_ref.shape[-1] != 3:
      raise errors.ConfigError(f'Generator: y_ref {y_ref.shape} and x_ref {x_ref.shape} must both be (B, H, W, 3)')
    if audio.shape != (b, self.audio_dim):
      raise errors.ConfigError(
          f'Generator: audio has shape {audio.shape}; config.model.audio_dim = {self.audio_dim} needs '
          f'{(b, self.audio_dim)}')
    if h % 2**self.num_down or w % 2**self.num_down:
      raise errors.ConfigError(
          f'Generator: image size {h}x{w} is not divisible by 2^config.model.num_down = {2**self.num_down}')

  @nn.compact
  def __call__(self, x_drive: jax.Array, y_ref: jax.Array, x_ref: jax.Array, audio: jax.Array,
               update_stats: bool = False) -> GeneratorOutput:
    self._check_inputs(x_drive, y_ref, x_ref, audio)
    common = dict(ngf=self.ngf, num_down=self.num_down, spade_hidden=self.spade_hidden,
                  spade_resize=self.spade_resize, block_shortcut=self.block_shortcut,
                  block_spectral_norm=self.block_spectral_norm, lrelu_slope=self.lrelu_slope,
                  init_gain=self.init_gain, dtype=self.dtype, conv_impl=self.conv_impl)
    b, h, w, _ = y_ref.shape
    if self.use_flow:
      f = DenseFlowNetwork(low_blocks=self.flow_low_blocks, name='flow_net', **common)(
          y_ref, x_ref, x_drive, update_stats)
      warped_ref, warped_features = warp_reference(f.flow, y_ref, f.features)
      flow, mask = f.flow, f.mask
    else:
      warped_features = Encoder(self.ngf, self.num_down, self.init_gain, self.dtype, self.conv_impl,
                                name='reference_encoder')(
          jnp.concatenate([y_ref, x_ref], axis=-1))
      warped_ref = y_ref
      flow, mask = jnp.zeros((b, h, w, 2), jnp.float32), jnp.ones((b, h, w, 1), jnp.float32)
    if not self.use_audio:
      audio = jnp.zeros_like(audio)
    image = RenderingNetwork(name='render_net', **common)(x_drive, warped_features, warped_ref, audio, update_stats)
    f32 = lambda x: x.astype(jnp.float32)
    return GeneratorOutput(image=image, warped_ref=f32(warped_ref),
                           warped_features=tuple(f32(x) for x in warped_features), flow=flow, mask=mask)


def validate_model_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for config.model / config.image_size values the networks cannot be built with."""
  m = config.model
  blocks.compute_dtype(m)
  if m.spade_resize not in blocks.RESIZE_METHODS:
    raise errors.ConfigError(f'config.model.spade_resize = {m.spade_resize!r}; expected one of {blocks.RESIZE_METHODS}')
  for field in ('ngf', 'num_down', 'spade_hidden', 'audio_dim'):
    if int(m[field]) < 1:
      raise errors.ConfigError(f'config.model.{field} = {m[field]!r}; must be a positive integer')
  for field in ('num_past_frames', 'flow_low_blocks'):
    if int(m[field]) < 0:
      raise errors.ConfigError(f'config.model.{field} = {m[field]!r}; must be >= 0')
  if config.image_size % 2**m.num_down:
    raise errors.ConfigError(
        f'config.image_size = {config.image_size} is not divisible by 2^config.model.num_down = {2**m.num_down}')
  if m.conditioning not in ('face3d', 'landmarks'):
    raise errors.ConfigError(f"config.model.conditioning = {m.conditioning!r}; expected 'face3d' or 'landmarks'")


def make_generator(config: ml_collections.ConfigDict) -> Generator:
  """Builds G from the full config (config.model and config.image_size)."""
  validate_model_config(config)
  m = config.model
  return Generator(
      ngf=m.ngf, num_down=m.num_down, num_past_frames=m.num_past_frames, flow_low_blocks=m.flow_low_blocks,
      spade_hidden=m.spade_hidden, spade_resize=m.spade_resize, block_shortcut=m.block_shortcut,
      block_spectral_norm=m.block_spectral_norm, audio_dim=m.audio_dim, lrelu_slope=m.lrelu_slope,
      init_gain=m.init_gain, use_flow=m.use_flow, use_audio=m.use_audio, dtype=blocks.compute_dtype(m),
      conv_impl=m.conv_impl)


def example_inputs(config: ml_collections.ConfigDict, batch_size: int = 1):
  """Shape-correct zero inputs (x_drive, y_ref, x_ref, audio) for init / eval_shape."""
  s, m = config.image_size, config.model
  return (jnp.zeros((batch_size, s, s, 3 * (m.num_past_frames + 1)), jnp.float32),
          jnp.zeros((batch_size, s, s, 3), jnp.float32), jnp.zeros((batch_size, s, s, 3), jnp.float32),
          jnp.zeros((batch_size, m.audio_dim), jnp.float32))
