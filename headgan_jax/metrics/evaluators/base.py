"""The evaluator interface (`Evaluator`: reset / update(batch) / result), `Skipped`, and what several evaluators
share: the batch check, frames of (B, T, ...) clips and batched feature extraction. The batch format and the
registry of evaluators by name: headgan_jax/metrics/evaluators/__init__.py."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from headgan_jax.errors import MetricInputError
from headgan_jax.metrics import image as image_lib

FeatureFn = Callable[[np.ndarray], np.ndarray]


def frames(x) -> np.ndarray:
  """(B, T, H, W, 3) -> (B * T, H, W, 3)."""
  image_lib.check_images(x, 'frames', ndim=5)
  return np.asarray(x).reshape((-1,) + tuple(np.shape(x)[2:]))


def batched(fn: FeatureFn, x: np.ndarray, batch_size: int) -> np.ndarray:
  """fn over chunks of `batch_size` rows; the last chunk is padded to full size so a jitted fn compiles once."""
  outs = []
  for i in range(0, len(x), batch_size):
    chunk = x[i:i + batch_size]
    n = len(chunk)
    if n < batch_size:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, axis=0)])
    outs.append(np.asarray(fn(chunk))[:n])
  return np.concatenate(outs) if outs else np.zeros((0,))


class Evaluator:
  """Base: `update(batch)` accumulates, `result()` returns a dict of scalars; `network` names the network used;
  `skipped` is None or the reason why nothing was (or could be) measured."""
  requires: tuple[str, ...] = ('generated',)

  def __init__(self, name: str, every: int = 0):
    self.name = name
    self.every = int(every)
    self.network: str | None = None
    self._missing: str | None = None

  @property
  def skipped(self) -> str | None:
    return self._missing

  def reset(self) -> None:
    """Forgets every sample (before each in-loop evaluation, or each protocol)."""
    self._missing = None
    self._reset()

  def _reset(self) -> None:
    raise NotImplementedError

  def update(self, batch: Mapping[str, Any]) -> None:
    missing = [k for k in self.requires if batch.get(k) is None]
    if missing:
      self._missing = f'needs {", ".join(missing)}, which this protocol does not provide'
      return
    self._update(batch)

  def _update(self, batch: Mapping[str, Any]) -> None:
    raise NotImplementedError

  def result(self) -> dict[str, float]:
    raise NotImplementedError


class Skipped(Evaluator):
  """Stands for an evaluator that cannot run (no weight file): reports the reason, measures nothing."""

  def __init__(self, name: str, reason: str, every: int = 0):
    super().__init__(name, every)
    self._missing = reason

  def reset(self) -> None:
    pass

  def update(self, batch) -> None:
    del batch

  def result(self) -> dict[str, float]:
    return {}




def check_batch(batch: Mapping[str, Any]) -> None:
  """Frame arrays in a batch agree on (B, T) with `generated` (names the offending key)."""
  gen = batch.get('generated')
  if gen is None:
    raise MetricInputError('a batch needs generated frames (key "generated")')
  image_lib.check_images(gen, 'generated frames', ndim=5)
  bt = tuple(np.shape(gen)[:2])
  for key in ('target', 'driving', 'face_mask', 'mouth_mask', 'exp_generated', 'exp_driving'):
    if batch.get(key) is not None and tuple(np.shape(batch[key])[:2]) != bt:
      raise MetricInputError(f'batch[{key!r}] has leading shape {tuple(np.shape(batch[key])[:2])}, but the generated '
                             f'frames have (B, T) = {bt}')
  if batch.get('reference') is not None and np.shape(batch['reference'])[0] != bt[0]:
    raise MetricInputError(f'batch["reference"] has {np.shape(batch["reference"])[0]} images for {bt[0]} clips')
  for key in ('camera_generated', 'camera_driving'):
    cam = batch.get(key)
    if cam is not None and tuple(np.shape(cam.rotation)[:2]) != bt:
      raise MetricInputError(f'batch[{key!r}] cameras have leading shape {tuple(np.shape(cam.rotation)[:2])}, '
                             f'expected {bt}')
