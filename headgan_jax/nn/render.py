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
drives every AdaIN block. Without audio ("w/o audio" of Table 1, `use_audio=False`) R has no AdaIN blocks at all,
as the authors build it.
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
  use_audio: bool = True
  settings: blocks.BlockSettings = blocks.BlockSettings()

  @nn.compact
  def __call__(self, x_drive: jax.Array, features: Sequence[jax.Array], ref_image: jax.Array,
               audio: jax.Array | None, update_stats: bool = False) -> jax.Array:
    s = self.settings
    if len(features) != self.num_down + 1:
      raise ValueError(f'RenderingNetwork: {len(features)} feature maps given, need num_down + 1 = '
                       f'{self.num_down + 1}')
    h = Encoder(self.ngf, self.num_down, s, name='encoder')(x_drive, update_stats)[0]
    for level in range(self.num_down + 1):
      if level:
        h = blocks.PixelShuffle(2, name=f'shuffle_{level - 1}')(h)
      # The block whose output the next pixel shuffle reads gets its init (settings.upsample_init).
      shuffle = 2 if level < self.num_down else 0
      h = blocks.spade_block(s, f'spade_{level}', 0 if self.use_audio else shuffle)(
          h, features[level].astype(s.dtype), update_stats)
      if self.use_audio:
        h = blocks.adain_block(s, f'adain_{level}', shuffle)(h, audio, update_stats)
    h = blocks.spade_block(s, f'spade_{self.num_down + 1}')(h, ref_image.astype(s.dtype), update_stats)
    h = s.conv(3, 7, name='head')(nn.leaky_relu(h, s.lrelu_slope))
    return jnp.tanh(h.astype(jnp.float32))
