"""Dataset statistics of h^(a): per-dimension mean and std, computed over a dataset, saved with it, applied to
every clip before it reaches G and D_m, per config.audio.standardise:

- 'lowlevel' (default): only the 84 low-level values h^(aL) are standardised; the 216 character values h^(aH) stay
  0/1. Standardising a one-hot dimension with dataset statistics would turn a rare letter into ~1/sqrt(p) (a
  letter heard in 0.1 % of the parts becomes ~30) and a silent part into small negative values everywhere.
- 'none': the raw values, as the authors' code feeds them.
- 'all': every dimension (the characters too).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Iterable

import numpy as np

from headgan_jax.audio.lowlevel import NUM_LOWLEVEL  # h^(aL) comes first in h^(a) (features.py).
from headgan_jax.errors import AudioError, ConfigError

MIN_STD = 1e-6  # Dimensions constant over the dataset (e.g. a letter never heard) are only centred.
STANDARDISE_MODES = ('lowlevel', 'none', 'all')


@dataclasses.dataclass(frozen=True)
class FeatureStats:
  """mean, std: (D,) float64; count: number of frames they were computed over."""
  mean: np.ndarray
  std: np.ndarray
  count: int


def compute_stats(clips: Iterable[np.ndarray]) -> FeatureStats:
  """Mean and (population) std per dimension over all frames of all clips, each (T_i, D); one pass, merging
  per-clip moments (Chan et al.) so a dataset need not fit in memory."""
  count, mean, m2, dim = 0, None, None, None
  for i, clip in enumerate(clips):
    x = np.asarray(clip, np.float64)
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
      raise AudioError(f'audio feature clip {i}: expected shape (T, {dim or "D"}), got {x.shape}.')
    if not np.all(np.isfinite(x)):
      raise AudioError(f'audio feature clip {i}: holds NaN or infinite values.')
    if x.shape[0] == 0:
      continue
    dim = x.shape[1]
    n, mu = x.shape[0], x.mean(axis=0)
    sq = ((x - mu) ** 2).sum(axis=0)
    if count == 0:
      count, mean, m2 = n, mu, sq
    else:
      delta = mu - mean
      total = count + n
      mean = mean + delta * n / total
      m2 = m2 + sq + delta ** 2 * count * n / total
      count = total
  if count == 0:
    raise AudioError('cannot compute audio feature statistics from no frames.')
  return FeatureStats(mean=mean, std=np.sqrt(m2 / count), count=count)


def normalise(features: np.ndarray, stats: FeatureStats | None, standardise: str = 'lowlevel',
              num_lowlevel: int = NUM_LOWLEVEL) -> np.ndarray:
  """h^(a) as G and D_m take it, float32: (features - mean) / std on the dimensions `standardise` selects ('lowlevel':
  the first `num_lowlevel`; 'all'; 'none': no statistics needed, `stats` may be None); near-constant dimensions are
  divided by 1, the others are returned unchanged (the 0/1 characters)."""
  if standardise not in STANDARDISE_MODES:
    raise ConfigError(f'config.audio.standardise = {standardise!r}; expected one of {STANDARDISE_MODES}')
  x = np.asarray(features)
  if standardise == 'none':
    return x.astype(np.float32)
  if stats is None:
    raise AudioError(f'config.audio.standardise = {standardise!r} needs the dataset\'s audio statistics; none given.')
  if x.shape[-1] != stats.mean.shape[0]:
    raise AudioError(f'audio features have {x.shape[-1]} dimensions, the statistics {stats.mean.shape[0]}.')
  n = x.shape[-1] if standardise == 'all' else min(int(num_lowlevel), x.shape[-1])
  std = np.where(stats.std[:n] < MIN_STD, 1.0, stats.std[:n])
  head = (x[..., :n] - stats.mean[:n]) / std
  return np.concatenate([head, x[..., n:]], axis=-1).astype(np.float32)


def save_stats(stats: FeatureStats, path: str) -> None:
  """Writes an .npz (mean, std, count) atomically: a temp file in the same folder, then os.replace."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, suffix='.tmp.npz')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, mean=stats.mean, std=stats.std, count=np.int64(stats.count))
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def load_stats(path: str) -> FeatureStats:
  """Reads what `save_stats` wrote; AudioError naming the file when it is missing or malformed."""
  path = os.fspath(path)
  try:
    with np.load(path) as data:
      mean, std, count = data['mean'], data['std'], int(data['count'])
  except FileNotFoundError as e:
    raise AudioError(f'{path}: audio feature statistics file not found.') from e
  except (KeyError, ValueError, OSError, EOFError) as e:
    raise AudioError(f'{path}: not an audio feature statistics file (needs arrays mean, std, count): {e}') from e
  if mean.ndim != 1 or mean.shape != std.shape or not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
    raise AudioError(f'{path}: mean {mean.shape} and std {std.shape} must be finite vectors of one length.')
  if np.any(std < 0) or count < 1:
    raise AudioError(f'{path}: negative std or count {count} < 1.')
  return FeatureStats(mean=mean.astype(np.float64), std=std.astype(np.float64), count=count)
