"""What FID and FVD share: running feature statistics of generated and real samples, the Frechet distance."""
from __future__ import annotations

import numpy as np

from headgan_jax.errors import ConfigError
from headgan_jax.metrics.evaluators import base
from headgan_jax.metrics.stats import RunningStats, frechet_distance, load_stats


class FrechetEvaluator(base.Evaluator):
  """Shared by FID and FVD: running feature statistics of generated and real samples, Frechet distance at the end."""
  metric = ''

  def __init__(self, name: str, features: base.FeatureFn, dim: int, network: str, real: str = 'auto',
               real_stats: str = '', batch_size: int = 8, every: int = 0):
    super().__init__(name, every)
    if real not in ('auto', 'target', 'driving'):
      raise ConfigError(f"config.evals.{name}.real must be 'auto', 'target' or 'driving', got {real!r}")
    self.features, self.dim, self.network = features, int(dim), network
    self.real, self.batch_size = real, int(batch_size)
    self._fixed_real = load_stats(real_stats) if real_stats else None
    self._reset()

  def _reset(self) -> None:
    self.generated = RunningStats(self.dim)
    self.real_stats = RunningStats(self.dim)
    self._pending: dict[str, list[np.ndarray]] = {'generated': [], 'real': []}  # Samples waiting for a full batch.

  def _samples(self, x) -> np.ndarray:
    raise NotImplementedError

  def update(self, batch) -> None:
    real = self.real
    if real == 'auto':
      real = 'target' if batch.get('target') is not None else 'driving'
    self.requires = ('generated',) if self._fixed_real is not None else ('generated', real)
    self._real_key = real
    super().update(batch)

  def _update(self, batch) -> None:
    self._pending['generated'].append(self._samples(batch['generated']))
    if self._fixed_real is None:
      self._pending['real'].append(self._samples(batch[self._real_key]))
    self._flush(final=False)

  def _flush(self, final: bool) -> None:
    """Features of the pending samples in full batches (a few samples per clip, e.g. one FVD clip, would otherwise
    each be padded to a whole batch); at the end also the rest, padded."""
    for key, stats in (('generated', self.generated), ('real', self.real_stats)):
      if not self._pending[key]:
        continue
      x = np.concatenate(self._pending[key])
      n = len(x) if final else len(x) - len(x) % self.batch_size
      if n:
        stats.update(base.batched(self.features, x[:n], self.batch_size))
      self._pending[key] = [x[n:]] if n < len(x) else []

  def _count(self, key: str) -> int:
    """Samples seen on one side ('generated' / 'real'): those with features and those waiting for a batch."""
    stats = self.generated if key == 'generated' else self.real_stats
    return stats.count + sum(len(x) for x in self._pending[key])

  def _too_few(self) -> bool:
    """Fewer than 2 samples on a side: no covariance, so no distance. Checked before the network runs on the
    pending samples (a test set of one FVD clip cost the README's main job ~20 s of I3D for nothing)."""
    return self._count('generated') < 2 or (self._fixed_real is None and self._count('real') < 2)

  @property
  def skipped(self) -> str | None:
    n = self._count('generated')
    if self._missing is None and 0 < n < 2:
      return f'needs at least 2 samples on each side, got {n}'
    return self._missing

  def result(self) -> dict[str, float]:
    if self._too_few():
      return {}
    self._flush(final=True)
    if self._fixed_real is not None:
      mu_r, sigma_r = self._fixed_real
      n_real = -1  # Precomputed statistics: the count is not known.
    else:
      mu_r, sigma_r, n_real = self.real_stats.mean(), self.real_stats.covariance(), self.real_stats.count
    d = frechet_distance(self.generated.mean(), self.generated.covariance(), mu_r, sigma_r)
    return {self.metric: d, f'{self.metric}_generated': self.generated.count, f'{self.metric}_real': n_real}
