"""L1, PSNR, SSIM against the ground truth, whole frame, over the face and over the mouth box (config type
'image')."""
from __future__ import annotations

import numpy as np

from headgan_jax.metrics import image as image_lib
from headgan_jax.metrics.evaluators import base


def _mask_frames(mask) -> np.ndarray | None:
  """(B, T, H, W) -> (B * T, H, W); None stays None."""
  return None if mask is None else np.asarray(mask).reshape((-1,) + tuple(np.shape(mask)[2:]))


class ImageEvaluator(base.Evaluator):
  """L1, PSNR, SSIM against the ground truth, whole frame, over the face mask and, when the batch has 'mouth_mask',
  over the mouth box (the *_mouth keys; self-reenactment)."""
  requires = ('generated', 'target')
  _KEYS = ('l1', 'psnr', 'ssim', 'l1_face', 'psnr_face', 'ssim_face', 'l1_mouth', 'psnr_mouth', 'ssim_mouth')

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
    face, mouth = (_mask_frames(batch.get(k)) for k in ('face_mask', 'mouth_mask'))
    res = image_lib.image_metrics(base.frames(batch['generated']), base.frames(batch['target']), face, mouth)
    for k in self._KEYS:
      if k not in res:  # No mouth_mask in this batch.
        continue
      v = res[k][np.isfinite(res[k])]  # Frames with an empty mask (NaN) or identical frames (PSNR inf) drop out.
      self._sums[k] += float(v.sum())
      self._counts[k] += int(v.size)
    self._frames_seen += len(res['l1'])

  def result(self) -> dict[str, float]:
    out = {k: self._sums[k] / self._counts[k] for k in self._KEYS if self._counts[k]}
    if out:
      out['image_frames'] = self._frames_seen
    return out
