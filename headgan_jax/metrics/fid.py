"""FID (Heusel et al. [15], as pytorch-fid [25]): Frechet distance of InceptionV3 pool3 features of two image sets.

`inception_features(variables, images)` is the jitted, batched feature extractor; `fid_from_features` and the
streaming `FIDAccumulator` (in evaluators) feed `frechet_distance`. The weights are the user's copy of pytorch-fid's
file (`inception.load_pytorch_fid_weights`).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from headgan_jax.metrics import image as image_lib
from headgan_jax.metrics.inception import FEATURE_DIM, InceptionV3
from headgan_jax.metrics.stats import RunningStats, frechet_distance  # noqa: F401  (the public names live here)

__all__ = ['FEATURE_DIM', 'frechet_distance', 'inception_features', 'fid_from_features', 'RunningStats']


@functools.partial(jax.jit, static_argnames=('resize',))
def _features(variables, images: jax.Array, resize: bool = True) -> jax.Array:
  return InceptionV3(resize=resize).apply(variables, images)


def inception_features(variables, images, resize: bool = True) -> jax.Array:
  """(N, 2048) pool3 features of (N, H, W, 3) images, uint8 or float in [-1, 1] (resized to 299 as pytorch-fid)."""
  image_lib.check_images(images, 'images')
  return _features(variables, image_lib.to_signed(images), resize=resize)


def fid_from_features(features_a, features_b) -> float:
  """FID between two (N, D) feature sets (mean and unbiased covariance of each, then the Frechet distance)."""
  a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
  return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
