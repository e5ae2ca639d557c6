"""The discriminators D and D_m (paper Sec. 3.3, Appendix B.2): SPADE's multi-scale PatchGAN [24].

One scale (SPADE's NLayerDiscriminator), with n = num_layers:
  4x4 conv stride 2 -> ndf, LeakyReLU 0.2                                  (no norm)
  n - 1 layers: 4x4 conv (spectral norm, no bias) -> instance norm (affine, as the authors' 'spectralinstance';
                config.disc.affine_norm = False for a parameter-free one) -> LeakyReLU 0.2, widths doubling from ndf,
                capped at max_channels; stride 2 except the last of them, stride 1
  4x4 conv stride 1 -> 1 (patch logits)
all with zero padding 2 (PyTorch's ceil((4 - 1) / 2)); at 256 input the logits are 35x35 on scale 0.
Between scales the input is average-pooled 3x3, stride 2, padding 1, padding not counted (count_include_pad=False).
Each scale returns the outputs of all its n + 1 layers (after the activation), the last being the logits: the
features for feature matching.

D sees concat(x_t, y) (6 channels); D_m sees concat(mouth crop, audio tiled over the crop) (3 + 300 channels), or
the mouth crop alone (3 channels) in the "w/o audio" ablation, as the authors build it: use `image_disc_input` and
`mouth_disc_input`. Every conv is a `blocks.Conv` built from the model's `blocks.BlockSettings` (init, dtype,
conv_impl), with the affine norm set by config.disc.affine_norm.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from headgan_jax import errors
from headgan_jax.nn import blocks


class PatchDiscriminator(nn.Module):
  """One scale of the PatchGAN (SPADE's NLayerDiscriminator); returns every layer's output, logits last."""
  ndf: int = 64
  num_layers: int = 4
  max_channels: int = 512
  settings: blocks.BlockSettings = blocks.BlockSettings()

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool = False) -> list[jax.Array]:
    s = self.settings
    x = s.conv(self.ndf, 4, 2, padding=2, name='conv_0')(x.astype(s.dtype))
    x = nn.leaky_relu(x, s.lrelu_slope)
    feats = [x]
    nf = self.ndf
    for n in range(1, self.num_layers):
      nf = min(nf * 2, self.max_channels)
      stride = 1 if n == self.num_layers - 1 else 2
      x = s.conv(nf, 4, stride, padding=2, use_bias=False, spectral_norm=True, name=f'conv_{n}')(x, update_stats)
      x = nn.leaky_relu(s.instance_norm(s.affine_norm, name=f'norm_{n}')(x), s.lrelu_slope)
      feats.append(x)
    feats.append(s.conv(1, 4, 1, padding=2, name=f'conv_{self.num_layers}')(x))
    return [f.astype(jnp.float32) for f in feats]


def downsample_input(x: jax.Array) -> jax.Array:
  """3x3 stride-2 average pool, padding 1 not counted (PyTorch's avg_pool2d(count_include_pad=False))."""
  return nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), count_include_pad=False)


class MultiScaleDiscriminator(nn.Module):
  """SPADE's MultiscaleDiscriminator: `num_scales` PatchDiscriminators on the input average-pooled 0, 1, ... times.

  Returns one list per scale (full resolution first), each the features of every layer with the logits last.
  """
  num_scales: int = 2
  ndf: int = 64
  num_layers: int = 4
  max_channels: int = 512
  settings: blocks.BlockSettings = blocks.BlockSettings()

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool = False) -> list[list[jax.Array]]:
    outs = []
    for s in range(self.num_scales):
      if s:
        x = downsample_input(x)
      outs.append(PatchDiscriminator(self.ndf, self.num_layers, self.max_channels, self.settings,
                                     name=f'scale_{s}')(x, update_stats))
    return outs


def image_disc_input(x_t: jax.Array, y: jax.Array) -> jax.Array:
  """D's input: the 3D face x_t and a real or generated frame, concatenated (B, H, W, 6)."""
  return jnp.concatenate([x_t, y.astype(x_t.dtype)], axis=-1)


def mouth_disc_input(mouth: jax.Array, audio: jax.Array | None) -> jax.Array:
  """D_m's input: the mouth crop (B, m, m, 3) and the audio vector (B, A) tiled to (B, m, m, A), concatenated;
  the crop alone when `audio` is None ("w/o audio")."""
  if audio is None:
    return mouth
  b, hh, ww, _ = mouth.shape
  tiled = jnp.broadcast_to(audio[:, None, None, :].astype(mouth.dtype), (b, hh, ww, audio.shape[-1]))
  return jnp.concatenate([mouth, tiled], axis=-1)


def mouth_disc_channels(config: ml_collections.ConfigDict) -> int:
  """Input channels of D_m: 3 + audio_dim, or 3 without audio."""
  return 3 + (config.model.audio_dim if config.model.use_audio else 0)


def make_discriminators(config: ml_collections.ConfigDict) -> tuple[MultiScaleDiscriminator, MultiScaleDiscriminator]:
  """Builds (D, D_m) from config.disc (MultiScaleDiscriminator's fields, by name) and the blocks' settings
  (config.model.blocks, config.runtime), with config.disc.affine_norm for their instance norms."""
  d = config.disc
  for field in ('num_scales', 'num_layers', 'ndf', 'max_channels', 'mouth_size'):
    if int(d[field]) < 1:
      raise errors.ConfigError(f'config.disc.{field} = {d[field]!r}; must be a positive integer')
  settings = blocks.block_settings(config, affine_norm=bool(d.affine_norm))
  kw = dict(num_scales=d.num_scales, ndf=d.ndf, num_layers=d.num_layers, max_channels=d.max_channels,
            settings=settings)
  return MultiScaleDiscriminator(**kw), MultiScaleDiscriminator(**kw)
