"""FVD (Unterthiner et al. [35]): Frechet distance of I3D (Kinetics-400) logits of 16-frame clips.

As the reference implementation: every frame is resized to 224x224 (bilinear) and scaled to [-1, 1], the clip goes
through I3D, and its 400 logits are the features; real and generated clip sets are compared with
`frechet_distance`. Videos longer than a clip are cut into consecutive clips (`split_clips`).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from headgan_jax.errors import MetricInputError
from headgan_jax.metrics import image as image_lib
from headgan_jax.metrics.i3d import CLIP_LENGTH, INPUT_SIZE, I3D, NUM_CLASSES
from headgan_jax.metrics.stats import frechet_distance

FEATURE_DIM = NUM_CLASSES


def split_clips(videos, length: int = CLIP_LENGTH, stride: int | None = None):
  """(B, T, H, W, 3) videos -> (B * K, length, H, W, 3) clips starting every `stride` frames (default: length).

  Frames after the last whole clip are dropped; a video shorter than `length` gives no clip.
  """
  image_lib.check_images(videos, 'videos', ndim=5)
  stride = length if stride is None else stride
  if length < 1 or stride < 1:
    raise MetricInputError(f'clip length and stride must be >= 1, got {length} and {stride}')
  t = np.shape(videos)[1]
  starts = np.arange(0, t - length + 1, stride)
  if starts.size == 0:
    return np.zeros((0, length) + tuple(np.shape(videos)[2:]), np.dtype(videos.dtype))
  index = starts[:, None] + np.arange(length)[None, :]  # (K, length)
  clips = videos[:, index]  # (B, K, length, H, W, 3)
  return clips.reshape((-1, length) + tuple(np.shape(videos)[2:]))


@functools.partial(jax.jit, static_argnames=('size',))
def _features(variables, clips: jax.Array, size: int) -> jax.Array:
  b, t, h, w, c = clips.shape
  if (h, w) != (size, size):
    clips = jax.image.resize(clips, (b, t, size, size, c), 'bilinear', antialias=False)
  return I3D().apply(variables, clips)


def i3d_features(variables, clips, size: int = INPUT_SIZE) -> jax.Array:
  """(N, 400) I3D logits of (N, T, H, W, 3) clips (uint8 or float in [-1, 1]), frames resized to size x size.

  `size` is 224 for FVD; smaller sizes run the same network on smaller clips (tests, quick looks) and give
  numbers that are not comparable with FVD at 224.
  """
  image_lib.check_images(clips, 'clips', ndim=5)
  return _features(variables, image_lib.to_signed(clips), size=int(size))


def fvd_from_features(features_a, features_b) -> float:
  """FVD between two (N, 400) sets of I3D logits."""
  a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
  if a.shape[0] < 2 or b.shape[0] < 2:
    raise MetricInputError(f'FVD needs at least 2 clips per set, got {a.shape[0]} and {b.shape[0]}')
  return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
