"""L1, PSNR, SSIM against the ground truth, whole frame and over the face (config type 'image')."""
from __future__ import annotations

import numpy as np

from headgan_jax.metrics import image as image_lib
from headgan_jax.metrics.evaluators import base


class ImageEvaluator(base.Evaluator):
  """L1, PSNR, SSIM against the ground truth, whole frame and over the face mask (self-reenactment)."""
  requires = ('generated', 'target')
  _KEYS = ('l1', 'psnr', 'ssim', 'l1_face', 'psnr_face', 'ssim_face')

  def __init__(self, name: str, every: int = 0):
    super().__init__(name, every)
    self._reset()

  def _reset(self) -> None:
    self._sums = {k: 0.0 for k in self._KEYS}
    self._counts = {k: 0 for k in self._KEYS}
    self._frames_seen = 0

  @classmethod
  def from_config(cls, name: str, cfg) -> base.Evaluator:
    return cls(name, cfg.get('every', 0))

  def _update(self, batch) -> None:
    mask = batch.get('face_mask')
    if mask is not None:
      mask = np.asarray(mask).reshape((-1,) + tuple(np.shape(mask)[2:]))
    res = image_lib.image_metrics(base.frames(batch['generated']), base.frames(batch['target']), mask)
    for k in self._KEYS:
      v = res[k][np.isfinite(res[k])]  # Frames with an empty mask (NaN) or identical frames (PSNR inf) drop out.
      self._sums[k] += float(v.sum())
      self._counts[k] += int(v.size)
    self._frames_seen += len(res['l1'])

  def result(self) -> dict[str, float]:
    out = {k: self._sums[k] / self._counts[k] for k in self._KEYS if self._counts[k]}
    if out:
      out['image_frames'] = self._frames_seen
    return out
