"""CSIM: identity similarity of generated frames to the ground truth or the reference (config type 'csim')."""
from __future__ import annotations

import numpy as np

from headgan_jax.errors import ConfigError
from headgan_jax.metrics import csim as csim_lib
from headgan_jax.metrics import image as image_lib
from headgan_jax.metrics.evaluators import base


class CSIMEvaluator(base.Evaluator):
  """Mean cosine similarity of identity embeddings: generated vs ground truth (self) or vs the reference (cross)."""

  def __init__(self, name: str, embedder: csim_lib.Embedder, against: str = 'auto', every: int = 0,
               min_size: int = 0):
    super().__init__(name, every)
    if against not in ('auto', 'target', 'reference'):
      raise ConfigError(f"config.evals.{name}.against must be 'auto', 'target' or 'reference', got {against!r}")
    self.against = against
    self.embedder = embedder
    self.network = embedder.name
    self.min_size = int(min_size)
    if self.min_size:
      self.network += f' (frames under {self.min_size} px upsampled to it, bilinear)'
    self._reset()

  def _reset(self) -> None:
    self._sum, self._pairs, self._no_face = 0.0, 0, 0

  @property
  def skipped(self) -> str | None:
    if self._missing is None and not self._pairs and self._no_face:
      return f'{self.network} found no face in any of {self._no_face} frame pairs'
    return self._missing

  def _embed(self, images) -> np.ndarray:
    """Embeddings of uint8 images; small frames (the demo's 64 px) upsampled first: face detectors need ~80 px."""
    images = image_lib.to_uint8(images)
    h, w = images.shape[1:3]
    if self.min_size and min(h, w) < self.min_size:
      images = image_lib.upsample_uint8(images, self.min_size)
    return csim_lib.embeddings(images, self.embedder)

  @classmethod
  def from_config(cls, name: str, cfg) -> base.Evaluator:
    if cfg.get('embedder', 'dlib') == 'arcface' and not cfg.get('arcface_model', ''):
      return base.Skipped(name, 'ArcFace (the paper\'s CSIM network) has no offline weights: set '
                          f'config.evals.{name}.arcface_model to an insightface recognition .onnx file',
                          cfg.get('every', 0))
    return cls(name, csim_lib.embedder_from_config(cfg), cfg.get('against', 'auto'), cfg.get('every', 0),
               cfg.get('min_size', 0))

  def update(self, batch) -> None:
    against = self.against
    if against == 'auto':
      against = 'target' if batch.get('target') is not None else 'reference'
    self.requires = ('generated', against)
    super().update(batch)

  def _update(self, batch) -> None:
    t = np.shape(batch['generated'])[1]
    emb_gen = self._embed(base.frames(batch['generated']))
    if batch.get('target') is not None and self.requires[1] == 'target':
      emb_other = self._embed(base.frames(batch['target']))
    else:
      ref = batch['reference']
      image_lib.check_images(ref, 'reference images')
      emb_ref = self._embed(ref)  # One per clip, not per frame.
      emb_other = np.repeat(emb_ref, t, axis=0)
    res = csim_lib.csim(emb_gen, emb_other)
    if res['pairs']:
      self._sum += res['csim'] * res['pairs']
    self._pairs += res['pairs']
    self._no_face += res['no_face']

  def result(self) -> dict[str, float]:
    if not self._pairs:
      return {}
    return {'csim': self._sum / self._pairs, 'csim_pairs': self._pairs, 'csim_no_face': self._no_face}
