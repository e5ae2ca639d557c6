"""FID over all frames (config type 'fid'; InceptionV3 pool3 with pytorch-fid's weights)."""
from __future__ import annotations

from headgan_jax.metrics.evaluators import base, frechet


class FIDEvaluator(frechet.FrechetEvaluator):
  """FID over all frames (InceptionV3 pool3, pytorch-fid's weights)."""
  metric = 'fid'

  def _samples(self, x):
    return base.frames(x)

  @classmethod
  def from_config(cls, name: str, cfg) -> base.Evaluator:
    from headgan_jax.metrics import fid, inception  # pylint: disable=import-outside-toplevel
    every = cfg.get('every', 0)
    path = cfg.get('inception_weights', '')
    if not path:
      return base.Skipped(name, 'InceptionV3 (FID) has no offline weights: set config.evals.'
                          f'{name}.inception_weights to pytorch-fid\'s {inception.WEIGHTS_NAME}', every)
    variables = inception.load_pytorch_fid_weights(path, cfg.get('sha256_prefix', inception.WEIGHTS_SHA256_PREFIX))
    return cls(name, lambda x: fid.inception_features(variables, x), fid.FEATURE_DIM,
               f'InceptionV3 pool3 (pytorch-fid, {path})', cfg.get('real', 'auto'), cfg.get('real_stats', ''),
               cfg.get('batch_size', 16), every)
