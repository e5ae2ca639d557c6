"""The rendering network R (paper Sec. 3.3, Appendix B.1, Table 3).

R encodes x_{t-k:t} (3(k+1) channels) like F's encoder, then decodes with alternating SPADE and AdaIN blocks and
pixel shuffles. Which SPADE block gets which condition: the text lists the SPADE conditions as
"h-bar^(1), h-bar^(2), h-bar^(3), y-bar^ref" and Table 3 has four SPADE blocks, at 64, 128, 256 and 256, whose
widths (512, 128, 32) are exactly those of h^(1), h^(2), h^(3). So, in order:

  64x64    SPADE(h-bar^(1))  AdaIN(h^(a))   pixel shuffle
  128x128  SPADE(h-bar^(2))  AdaIN(h^(a))   pixel shuffle
  256x256  SPADE(h-bar^(3))  AdaIN(h^(a))   SPADE(y-bar^ref)
  LeakyReLU, 7x7 conv-3, tanh

Every condition already has its block's resolution, so SPADE's resize is the identity here. The same audio vector
drives every AdaIN block.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from headgan_jax.nn import blocks
from headgan_jax.nn.flow import Encoder


class RenderingNetwork(nn.Module):
  """R (Table 3): x_{t-k:t}, SPADE conditions (h-bar^(1..num_down+1), lowest first), y-bar^ref and h^(a) -> y~_t."""
  ngf: int = 32
  num_down: int = 2
  spade_hidden: int = 256
  spade_resize: str = 'nearest'
  block_shortcut: bool = True
  block_spectral_norm: bool = True
  lrelu_slope: float = 0.2
  init_gain: float = 0.02
  dtype: blocks.Dtype = jnp.float32
  conv_impl: str = 'xla'

  @nn.compact
  def __call__(self, x_drive: jax.Array, features: Sequence[jax.Array], ref_image: jax.Array, audio: jax.Array,
               update_stats: bool = False) -> jax.Array:
    if len(features) != self.num_down + 1:
      raise ValueError(f'RenderingNetwork: {len(features)} feature maps given, need num_down + 1 = '
                       f'{self.num_down + 1}')
    common = dict(spectral_norm=self.block_spectral_norm, lrelu_slope=self.lrelu_slope,
                  init_gain=self.init_gain, dtype=self.dtype, conv_impl=self.conv_impl)
    spade = dict(hidden=self.spade_hidden, resize=self.spade_resize, shortcut=self.block_shortcut, **common)
    # The authors' AdaIN block has no shortcut; block_shortcut=False (Fig. 7) removes the SPADE one too.
    adain = dict(shortcut=False, **common)
    h = Encoder(self.ngf, self.num_down, self.init_gain, self.dtype, self.conv_impl, name='encoder')(x_drive)[0]
    for level in range(self.num_down + 1):
      if level:
        h = blocks.PixelShuffle(2, name=f'shuffle_{level - 1}')(h)
      h = blocks.SpadeBlock(name=f'spade_{level}', **spade)(h, features[level].astype(self.dtype), update_stats)
      h = blocks.AdainBlock(name=f'adain_{level}', **adain)(h, audio, update_stats)
    h = blocks.SpadeBlock(name=f'spade_{self.num_down + 1}', **spade)(h, ref_image.astype(self.dtype),
                                                                     update_stats)
    h = blocks.Conv(3, 7, init_gain=self.init_gain, dtype=self.dtype, conv_impl=self.conv_impl, name='head')(
        nn.leaky_relu(h, self.lrelu_slope))
    return jnp.tanh(h.astype(jnp.float32))
