"""The generator G = F + R (paper eq. 2, Fig. 3): y~_t = G(x_{t-k:t}, y_ref, x_ref, h_t^(a)).

Usage:
  G = make_generator(config)
  variables = G.init(rng, x_drive, y_ref, x_ref, audio)           # {'params', 'batch_stats'}
  out, new_state = G.apply(variables, x_drive, y_ref, x_ref, audio, update_stats=True,
                           mutable=['batch_stats'])                # training: power iterations advance
  out = G.apply(variables, x_drive, y_ref, x_ref, audio)          # inference: 'batch_stats' read only
  w = G.apply(variables, x_drive, y_ref, x_ref, method='warp')    # F alone: warped y_ref and features
  image = G.apply(variables, x_drive, w, audio, method='render')  # R alone, on F's output

`G(...)` is exactly `render(warp(...))`; the train step calls the two halves itself so that frame t-1 (needed only
for L_F^Temp, which compares warped features) goes through F but not R.

Ablations (Table 1):
- use_flow=False ("w/o F"): the paper motivates F by saying that features extracted from y_ref by an encoder,
  without alignment to the driving pose, serve R less well. So "w/o F" keeps an encoder of (y_ref, x_ref) (the
  authors' FramesEncoder) but drops the flow decoder: R's SPADE blocks get the UNWARPED h^(1..3) and the unwarped
  y_ref. The output then has warped_ref = y_ref, warped_features = (h^(1), h^(2), h^(3)), flow = 0 and mask = 1;
  F's losses (L_F^L1, L_F^VGG, L_F^Temp, the flow-mask L1) have nothing to train and are skipped by the trainer.
- use_audio=False ("w/o audio", as the authors build it): R has no AdaIN blocks at all; the audio argument is
  ignored (it may be None). The mouth discriminator stays, on the mouth crop alone (nn/discriminator.py).
- data.conditioning='landmarks': no model change; the caller passes drawn landmark images instead of x_t / x_ref.
Compute dtype: config.runtime.compute_dtype ('float32' or 'bfloat16'); parameters are always float32, and every
output is float32. In bf16 the warp (sampling grid, gathered pixels, output), the instance-norm statistics and the
spectral-norm power iteration stay float32, each because bf16 measured wrong there (docs/accelerators.md, "4.
bfloat16"; bench/bf16_precision.py). How the blocks are built (norms, padding, spectral norm, conv implementation) is one
`blocks.BlockSettings`, made from the config by `blocks.block_settings`.
"""
from __future__ import annotations

import dataclasses

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
class WarpOutput:
  """What F hands to R, all float32: warped_ref = y-bar_t^ref; warped_features = (h-bar^(1), h-bar^(2), h-bar^(3))
  lowest resolution (H/4) first; flow (B, H, W, 2) pixels (x, y); mask m (B, H, W, 1) in [0, 1]."""
  warped_ref: jax.Array
  warped_features: tuple[jax.Array, ...]
  flow: jax.Array
  mask: jax.Array


@flax.struct.dataclass
class GeneratorOutput:
  """G's outputs, all float32: image = y~_t in [-1, 1], and F's outputs (see WarpOutput)."""
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
  audio_dim: int = 300
  use_flow: bool = True
  use_audio: bool = True
  settings: blocks.BlockSettings = blocks.BlockSettings()

  def setup(self):
    s = self.settings
    if self.use_flow:
      self.flow_net = DenseFlowNetwork(self.ngf, self.num_down, self.flow_low_blocks, s)
    else:
      self.reference_encoder = Encoder(self.ngf, self.num_down, s)
    self.render_net = RenderingNetwork(self.ngf, self.num_down, self.use_audio, s)

  def _check_images(self, x_drive, y_ref, x_ref) -> None:
    b, h, w, _ = y_ref.shape
    need_c = 3 * (self.num_past_frames + 1)
    if x_drive.shape != (b, h, w, need_c):
      raise errors.DataError(
          f'Generator: x_drive has shape {x_drive.shape}; with config.model.num_past_frames = '
          f'{self.num_past_frames} it must be {(b, h, w, need_c)} (y_ref is {y_ref.shape})')
    if x_ref.shape != (b, h, w, 3) or y_ref.shape[-1] != 3:
      raise errors.DataError(f'Generator: y_ref {y_ref.shape} and x_ref {x_ref.shape} must both be (B, H, W, 3)')
    if h % 2**self.num_down or w % 2**self.num_down:
      raise errors.DataError(
          f'Generator: image size {h}x{w} is not divisible by 2^config.model.num_down = {2**self.num_down}')

  def warp(self, x_drive: jax.Array, y_ref: jax.Array, x_ref: jax.Array, update_stats: bool = False) -> WarpOutput:
    """F: y-bar_t^ref and h-bar^(l) (or, "w/o F", the unwarped reference and its features)."""
    self._check_images(x_drive, y_ref, x_ref)
    b, h, w, _ = y_ref.shape
    if self.use_flow:
      f = self.flow_net(y_ref, x_ref, x_drive, update_stats)
      warped_ref, warped_features = warp_reference(f.flow, y_ref, f.features)
      flow, mask = f.flow, f.mask
    else:
      warped_features = self.reference_encoder(jnp.concatenate([y_ref, x_ref], axis=-1), update_stats)
      warped_ref = y_ref
      flow, mask = jnp.zeros((b, h, w, 2), jnp.float32), jnp.ones((b, h, w, 1), jnp.float32)
    f32 = lambda x: x.astype(jnp.float32)  # noqa: E731 (lossless: R casts back to its compute dtype)
    return WarpOutput(warped_ref=f32(warped_ref), warped_features=tuple(f32(x) for x in warped_features),
                      flow=f32(flow), mask=f32(mask))

  def render(self, x_drive: jax.Array, warped: WarpOutput, audio: jax.Array | None,
             update_stats: bool = False) -> jax.Array:
    """R: y~_t from x_{t-k:t}, F's output and h_t^(a) (ignored without audio)."""
    if self.use_audio:
      b = x_drive.shape[0]
      if audio is None or audio.shape != (b, self.audio_dim):
        raise errors.DataError(
            f'Generator: audio has shape {None if audio is None else audio.shape}; config.model.audio_dim = '
            f'{self.audio_dim} needs {(b, self.audio_dim)}')
    return self.render_net(x_drive, warped.warped_features, warped.warped_ref, audio if self.use_audio else None,
                           update_stats)

  def __call__(self, x_drive: jax.Array, y_ref: jax.Array, x_ref: jax.Array, audio: jax.Array | None,
               update_stats: bool = False) -> GeneratorOutput:
    warped = self.warp(x_drive, y_ref, x_ref, update_stats)
    image = self.render(x_drive, warped, audio, update_stats)
    return GeneratorOutput(image=image, warped_ref=warped.warped_ref, warped_features=warped.warped_features,
                           flow=warped.flow, mask=warped.mask)


def generator_fields(config: ml_collections.ConfigDict) -> dict:
  """Generator's own fields from config.model, by name (config.model.blocks is its BlockSettings)."""
  own = {f.name for f in dataclasses.fields(Generator)} - {'settings', 'parent', 'name'}
  fields = {}
  for name in config.model:
    if name == 'blocks':
      continue
    if name not in own:
      raise errors.ConfigError(f'config.model.{name}: not a field of Generator (one of {sorted(own)}) nor blocks')
    fields[name] = config.model[name]
  return fields


def validate_model_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for config.model / config.runtime / config.image_size values the networks cannot be built
  with."""
  m = config.model
  blocks.block_settings(config)  # Unknown fields, compute_dtype, spade_resize, padding_7x7, conv_impl, remat.
  generator_fields(config)  # Unknown fields.
  for field in ('ngf', 'num_down', 'audio_dim'):
    if int(m[field]) < 1:
      raise errors.ConfigError(f'config.model.{field} = {m[field]!r}; must be a positive integer')
  if int(m.blocks.spade_hidden) < 1:
    raise errors.ConfigError(f'config.model.blocks.spade_hidden = {m.blocks.spade_hidden!r}; must be a positive '
                             'integer')
  for field in ('num_past_frames', 'flow_low_blocks'):
    if int(m[field]) < 0:
      raise errors.ConfigError(f'config.model.{field} = {m[field]!r}; must be >= 0')
  if config.image_size % 2**m.num_down:
    raise errors.ConfigError(
        f'config.image_size = {config.image_size} is not divisible by 2^config.model.num_down = {2**m.num_down}')


def make_generator(config: ml_collections.ConfigDict) -> Generator:
  """Builds G from the full config: Generator(**config.model without blocks, settings=block_settings(config))."""
  validate_model_config(config)
  return Generator(**generator_fields(config), settings=blocks.block_settings(config))


def example_inputs(config: ml_collections.ConfigDict, batch_size: int = 1):
  """Shape-correct zero inputs (x_drive, y_ref, x_ref, audio) for init / eval_shape."""
  s, m = config.image_size, config.model
  return (jnp.zeros((batch_size, s, s, 3 * (m.num_past_frames + 1)), jnp.float32),
          jnp.zeros((batch_size, s, s, 3), jnp.float32), jnp.zeros((batch_size, s, s, 3), jnp.float32),
          jnp.zeros((batch_size, m.audio_dim), jnp.float32))
