"""Streaming feature statistics (mean, covariance) and the Frechet distance between two Gaussians.

FID [15, 25] and FVD [35] are both the Frechet distance between Gaussians fitted to network features of a real and a
generated set:

  d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

pytorch-fid takes scipy.linalg.sqrtm of the non-symmetric product S1 S2, which can return complex values and needs
an epsilon fix for singular covariances. Here tr((S1 S2)^(1/2)) = tr((A S2 A)^(1/2)) with A = S1^(1/2): both square
roots are of symmetric positive semi-definite matrices, taken by eigendecomposition in float64 (eigenvalues clipped at
0 against roundoff), so the result is real and stable for rank-deficient covariances (fewer samples than features).
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from headgan_jax.errors import MetricInputError


def _check_stats(mu, sigma, name: str) -> tuple[np.ndarray, np.ndarray]:
  mu = np.asarray(mu, np.float64)
  sigma = np.asarray(sigma, np.float64)
  if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
    raise MetricInputError(f'{name}: mean must be (D,) and covariance (D, D), got {mu.shape} and {sigma.shape}')
  if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
    raise MetricInputError(f'{name}: the statistics hold NaN or infinite values')
  return mu, sigma


def _psd_sqrt(sym: np.ndarray) -> np.ndarray:
  """Square root of a symmetric positive semi-definite matrix (eigenvalues below 0 from roundoff are clipped)."""
  w, v = np.linalg.eigh((sym + sym.T) * 0.5)
  return (v * np.sqrt(np.maximum(w, 0.0))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """Frechet distance d^2 between N(mu1, sigma1) and N(mu2, sigma2), in float64 (the FID / FVD value).

  Args: means (D,) and covariances (D, D) of the two feature sets (any float dtype).
  Returns: a Python float >= 0 (tiny negative roundoff is clipped to 0).
  """
  mu1, sigma1 = _check_stats(mu1, sigma1, 'first statistics')
  mu2, sigma2 = _check_stats(mu2, sigma2, 'second statistics')
  if mu1.shape != mu2.shape:
    raise MetricInputError(f'feature sizes differ: {mu1.shape[0]} vs {mu2.shape[0]}')
  if np.array_equal(mu1, mu2) and np.array_equal(sigma1, sigma2):
    return 0.0  # d(P, P) = 0 exactly; the general path below gives it only to roundoff (~1e-13 * trace).
  a = _psd_sqrt(sigma1)
  middle = a @ sigma2 @ a
  eig = np.linalg.eigvalsh((middle + middle.T) * 0.5)
  tr_covmean = np.sum(np.sqrt(np.maximum(eig, 0.0)))
  diff = mu1 - mu2
  d = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean
  return float(max(d, 0.0))


class RunningStats:
  """Mean and covariance of feature rows fed in batches, in float64 with bounded memory (Chan et al.'s merge).

  `update(features)` takes (N, D) rows; `mean()` and `covariance()` match np.mean / np.cov(rowvar=False) of all
  rows seen (unbiased, as pytorch-fid). Memory is O(D^2) whatever the number of rows.
  """

  def __init__(self, dim: int):
    self.dim = int(dim)
    self.count = 0
    self._mean = np.zeros(self.dim, np.float64)
    self._m2 = np.zeros((self.dim, self.dim), np.float64)

  def update(self, features) -> None:
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[1] != self.dim:
      raise MetricInputError(f'RunningStats expects (N, {self.dim}) features, got {x.shape}')
    if not np.all(np.isfinite(x)):
      raise MetricInputError('features hold NaN or infinite values (a network produced non-finite activations)')
    n = x.shape[0]
    if n == 0:
      return
    mean_b = x.mean(axis=0)
    centred = x - mean_b
    m2_b = centred.T @ centred
    total = self.count + n
    delta = mean_b - self._mean
    self._m2 += m2_b + np.outer(delta, delta) * (self.count * n / total)
    self._mean += delta * (n / total)
    self.count = total

  def merge(self, other: 'RunningStats') -> None:
    """Adds the rows summarised by `other` (e.g. from another host)."""
    if other.dim != self.dim:
      raise MetricInputError(f'cannot merge statistics of {other.dim} features into {self.dim}')
    if other.count == 0:
      return
    total = self.count + other.count
    delta = other._mean - self._mean
    self._m2 += other._m2 + np.outer(delta, delta) * (self.count * other.count / total)
    self._mean += delta * (other.count / total)
    self.count = total

  def mean(self) -> np.ndarray:
    return self._mean.copy()

  def covariance(self) -> np.ndarray:
    if self.count < 2:
      raise MetricInputError(f'a covariance needs at least 2 feature rows, got {self.count}')
    return self._m2 / (self.count - 1)


def save_stats(path: str, mu: np.ndarray, sigma: np.ndarray) -> None:
  """Writes (mu, sigma) as pytorch-fid's .npz layout (keys `mu`, `sigma`), atomically."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=folder, prefix='.stats-', suffix='.npz', delete=False) as f:
    np.savez(f, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64))
    tmp = f.name
  os.replace(tmp, path)


def load_stats(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(mu, sigma) from a pytorch-fid style .npz (keys `mu`, `sigma`)."""
  try:
    with np.load(path, allow_pickle=False) as data:
      mu, sigma = data['mu'], data['sigma']
  except (OSError, KeyError, ValueError) as e:
    raise MetricInputError(f'{path}: not a statistics file with arrays `mu` and `sigma` ({e})') from e
  return _check_stats(mu, sigma, path)
