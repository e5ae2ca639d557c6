"""The dense flow network F (paper Sec. 3.3, Appendix B.1, Table 2) and the warping of the reference.

F encodes (y_ref, x_ref) into visual features h^(1), h^(2), h^(3) (lowest resolution first: 64x64x512,
128x128x128, 256x256x32 at 256 input) and decodes, modulated by x_{t-k:t} through SPADE blocks, a dense flow w_t
(pixels, x then y displacement) and a mask m = (tanh + 1) / 2 with w_t = raw_flow * m (authors' code).

Warping is backward: output pixel (i, j) samples the source at (i + w_y, j + w_x) bilinearly. Sample positions
outside the image are clamped to the border (edge replication, like the authors' Resample2d op), so every output
pixel is a convex combination of source pixels. For h^(2) and h^(1) the flow is down-sampled by 2 per level and
halved ("down-sample with bilinear interpolation and divide by two"): bilinear down-sampling by exactly 2 with
half-pixel centres is the 2x2 average, which is what we compute.
"""
from __future__ import annotations

from typing import Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from headgan_jax.nn import blocks


def bilinear_sample(image: jax.Array, sample_y: jax.Array, sample_x: jax.Array) -> jax.Array:
  """Samples (B, H, W, C) at fractional pixel positions (B, h, w) each; positions are clamped to the image.

  Everything is float32 whatever image's dtype, and so is the result (bf16 compute: docs/accelerators.md, "4.
  bfloat16", bench/bf16_precision.py): positions, because a bf16 coordinate in [128, 256) is a whole pixel (the warp
  was 6 % wrong at 256 px); the gathered pixels, so that the backward pass scatter-adds into float32 (bf16 sums made
  the feature gradient 3.6x bf16's rounding error); the output, because L_F^Temp compares two warps whose difference
  is below bf16's resolution at initialisation (25 % wrong). Integer positions return the pixels exactly.
  """
  b, h, w, c = image.shape
  sy = jnp.clip(sample_y.astype(jnp.float32), 0.0, h - 1.0)
  sx = jnp.clip(sample_x.astype(jnp.float32), 0.0, w - 1.0)
  y0f, x0f = jnp.floor(sy), jnp.floor(sx)
  wy, wx = (sy - y0f)[..., None], (sx - x0f)[..., None]
  y0, x0 = y0f.astype(jnp.int32), x0f.astype(jnp.int32)
  y1, x1 = jnp.minimum(y0 + 1, h - 1), jnp.minimum(x0 + 1, w - 1)
  flat = image.astype(jnp.float32).reshape(b, h * w, c)
  out_hw = sample_y.shape[1:]

  def gather(yi: jax.Array, xi: jax.Array) -> jax.Array:
    idx = (yi * w + xi).reshape(b, -1)
    rows = jax.vmap(lambda f, i: f[i])(flat, idx)  # Whole C-vectors per pixel: contiguous in NHWC.
    return rows.reshape(b, *out_hw, c)

  return ((1 - wy) * (1 - wx) * gather(y0, x0) + (1 - wy) * wx * gather(y0, x1)
          + wy * (1 - wx) * gather(y1, x0) + wy * wx * gather(y1, x1))


def warp(image: jax.Array, flow: jax.Array) -> jax.Array:
  """Backward-warps (B, H, W, C) by a flow (B, H, W, 2) in pixels (x, y): out[i, j] = image[i + fy, j + fx].

  Zero flow returns `image` exactly (as float32); positions outside are clamped to the border. The sampling grid
  (y + w_y, x + w_x) is float32 whatever the compute dtype (see `bilinear_sample`).
  """
  b, h, w, _ = image.shape
  if flow.shape != (b, h, w, 2):
    raise ValueError(f'warp: flow of shape {flow.shape} does not match image {image.shape} (need (B, H, W, 2))')
  ys = jnp.arange(h, dtype=jnp.float32)[None, :, None]
  xs = jnp.arange(w, dtype=jnp.float32)[None, None, :]
  flow = flow.astype(jnp.float32)
  return bilinear_sample(image, ys + flow[..., 1], xs + flow[..., 0])


def downsample_flow(flow: jax.Array) -> jax.Array:
  """Halves a flow's resolution (2x2 average = bilinear /2 with half-pixel centres) and its magnitude."""
  b, h, w, _ = flow.shape
  if h % 2 or w % 2:
    raise ValueError(f'downsample_flow: flow size {h}x{w} is not even')
  return nn.avg_pool(flow.astype(jnp.float32), (2, 2), strides=(2, 2)) / 2.0


def warp_reference(flow: jax.Array, image: jax.Array,
                   features: Sequence[jax.Array]) -> tuple[jax.Array, tuple[jax.Array, ...]]:
  """y-bar_t^ref = warp(y_ref, w_t) and h-bar^(l) = warp(h^(l), w_t down-sampled to h^(l)'s size).

  `features` are lowest resolution first; each must be the flow's size divided by a power of two.
  """
  warped_image = warp(image, flow)
  flows = {flow.shape[1]: flow}
  f = flow
  while f.shape[1] > min(x.shape[1] for x in features):
    f = downsample_flow(f)
    flows[f.shape[1]] = f
  warped = []
  for x in features:
    if x.shape[1] not in flows:
      raise ValueError(f'warp_reference: feature of size {x.shape[1:3]} is not flow size {flow.shape[1:3]} / 2^n')
    warped.append(warp(x, flows[x.shape[1]]))
  return warped_image, tuple(warped)


class Encoder(nn.Module):
  """Encoder of F and R (Tables 2, 3): 7x7 conv-ngf, then `num_down` 3x3 stride-2 convs, each 4x wider, every
  conv followed by instance norm and ReLU (`blocks.ConvNormReLU`). Returns every layer's output, lowest resolution
  first (for F these are h^(1), ..., h^(num_down+1))."""
  ngf: int = 32
  num_down: int = 2
  settings: blocks.BlockSettings = blocks.BlockSettings()

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool = False) -> tuple[jax.Array, ...]:
    s = self.settings
    x = blocks.ConvNormReLU(self.ngf, 7, settings=s, name='conv_0')(x.astype(s.dtype), update_stats)
    feats = [x]
    for i in range(1, self.num_down + 1):
      x = blocks.ConvNormReLU(self.ngf * 4**i, 3, strides=2, settings=s, name=f'conv_{i}')(x, update_stats)
      feats.append(x)
    return tuple(feats[::-1])


@flax.struct.dataclass
class FlowOutput:
  """What F computes: `flow` (B, H, W, 2) pixels (x, y), already multiplied by `mask` (B, H, W, 1) in [0, 1];
  `features` = (h^(1), ..., h^(num_down+1)), the UNWARPED reference features, lowest resolution first."""
  flow: jax.Array
  mask: jax.Array
  features: tuple[jax.Array, ...]


class DenseFlowNetwork(nn.Module):
  """F (Table 2). Input (y_ref, x_ref) concatenated (6 ch) and x_{t-k:t} (3(k+1) ch) as SPADE modulation.

  Decoder: `low_blocks` SPADE blocks at the lowest resolution; then per level a pixel shuffle, followed by a
  SPADE block on every level but the last; then two 7x7 convs, to the 2-channel flow and to the 1-channel mask
  logit (the authors' two heads; one 3-channel conv would compute the same but draw its Xavier init with another
  fan-out). Table 2 puts no activation before them, and neither do we.
  """
  ngf: int = 32
  num_down: int = 2
  low_blocks: int = 3
  settings: blocks.BlockSettings = blocks.BlockSettings()

  @nn.compact
  def __call__(self, y_ref: jax.Array, x_ref: jax.Array, x_drive: jax.Array,
               update_stats: bool = False) -> FlowOutput:
    s = self.settings
    feats = Encoder(self.ngf, self.num_down, s, name='encoder')(jnp.concatenate([y_ref, x_ref], axis=-1),
                                                               update_stats)
    x_drive = x_drive.astype(s.dtype)
    h = feats[0]
    # The blocks whose output a pixel shuffle reads get its init (settings.upsample_init).
    for i in range(self.low_blocks):
      h = blocks.spade_block(s, f'spade_low_{i}', 2 if i == self.low_blocks - 1 else 0)(h, x_drive, update_stats)
    for level in range(self.num_down):
      h = blocks.PixelShuffle(2, name=f'shuffle_{level}')(h)
      if level < self.num_down - 1:
        h = blocks.spade_block(s, f'spade_up_{level}', 2)(h, x_drive, update_stats)
    raw_flow = s.conv(2, 7, name='flow_head')(h).astype(jnp.float32)
    mask = (jnp.tanh(s.conv(1, 7, name='mask_head')(h).astype(jnp.float32)) + 1) / 2
    return FlowOutput(flow=raw_flow * mask, mask=mask, features=feats)
