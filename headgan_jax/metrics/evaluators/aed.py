"""AED / APD: expression and pose distances between fits of generated and driving frames (config type 'aed')."""
from __future__ import annotations

import jax
import numpy as np

from headgan_jax.errors import MetricInputError
from headgan_jax.metrics import aed as aed_lib
from headgan_jax.metrics.evaluators import base


class AEDEvaluator(base.Evaluator):
  """AED (expression L1) and APD (pose) between fits of generated and driving frames."""
  requires = ('generated', 'exp_generated', 'exp_driving')

  def __init__(self, name: str, every: int = 0):
    super().__init__(name, every)
    self.network = '3DMM fit (face3d.fitting)'
    self._reset()

  def _reset(self) -> None:
    self._sums: dict[str, float] = {}
    self._frames = 0
    self._unfit = 0

  @property
  def skipped(self) -> str | None:
    if self._missing is None and not self._frames and self._unfit:
      return f'no frame of {self._unfit} had a valid 3DMM fit of both the generated and the driving frame'
    return self._missing

  @classmethod
  def from_config(cls, name: str, cfg) -> base.Evaluator:
    return cls(name, cfg.get('every', 0))

  def _update(self, batch) -> None:
    bt = tuple(np.shape(batch['exp_generated'])[:-1])
    valid = np.ones(bt, bool) if batch.get('exp_valid') is None else np.asarray(batch['exp_valid'], bool)
    if valid.shape != bt:
      raise MetricInputError(f'batch["exp_valid"] has shape {valid.shape}, the coefficients {bt}')
    self._unfit += int((~valid).sum())
    if not valid.any():
      return
    pick = lambda x: np.asarray(x)[valid]  # noqa: E731  (N, ...) of the frames fitted on both sides.
    d = aed_lib.expression_distances(pick(batch['exp_generated']), pick(batch['exp_driving']))
    self._sums['aed'] = self._sums.get('aed', 0.0) + float(d.sum())
    if batch.get('camera_generated') is not None and batch.get('camera_driving') is not None:
      cams = [jax.tree.map(pick, c) for c in (batch['camera_generated'], batch['camera_driving'])]
      for k, v in aed_lib.pose_distances(*cams).items():
        self._sums[f'apd_{k}'] = self._sums.get(f'apd_{k}', 0.0) + float(v.sum())
    self._frames += len(d)

  def result(self) -> dict[str, float]:
    if not self._frames:
      return {}
    return {**{k: v / self._frames for k, v in self._sums.items()}, 'aed_frames': self._frames,
            'aed_unfit_frames': self._unfit}
