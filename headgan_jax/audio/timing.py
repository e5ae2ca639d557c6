"""Audio-to-mouth timing: how far ahead of frame t the audio streams best predict the mouth (bench/audio_lag.py).

Lag convention, the same as config.audio.lowlevel_offset / chars_offset: at lag k, the mouth opening of frame t is
paired with the audio stream's value at frame t + k (k > 0: the audio is read ahead of the frame). The lag whose
Pearson correlation peaks is the offset that feeds frame t the audio that best predicts its mouth.

Streams, all per frame, at offset 0:
- mouth opening: the inner-lip gap (MediaPipe mesh points 13 upper, 14 lower) over the outer-eye-corner distance
  (33, 263), from the 468 tracked landmarks (face-size and zoom free);
- part RMS: the RMS of the samples of part a_t (no window);
- low-level energy: h_t^(aL)'s mean energy at lowlevel_offset 0 (the window of parts t-L .. t+L-1); its value at
  t + k is the window of frame t at lowlevel_offset k, so its peak lag is directly the low-level offset;
- letter presence: 1 - the BLANK probability of part a_t's character vector (speech-letter presence); its value at
  t + k is what chars_offset k gives frame t.
"""
from __future__ import annotations

import numpy as np

from headgan_jax.audio import asr as asr_lib
from headgan_jax.audio import io as audio_io

UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14  # MediaPipe face-mesh indices (inner-lip mid points).
EYE_OUTER_CORNERS = (33, 263)
MIN_PAIRS = 10  # Fewer valid frame pairs than this: no correlation (NaN).


def mouth_opening(points: np.ndarray) -> np.ndarray:
  """(T, 468, 2+) landmarks (any pixel frame) -> (T,) inner-lip gap / outer-eye-corner distance."""
  p = np.asarray(points, np.float64)[..., :2]
  gap = np.linalg.norm(p[:, UPPER_INNER_LIP] - p[:, LOWER_INNER_LIP], axis=-1)
  eyes = np.linalg.norm(p[:, EYE_OUTER_CORNERS[0]] - p[:, EYE_OUTER_CORNERS[1]], axis=-1)
  return gap / np.maximum(eyes, 1e-6)


def part_rms(waveform: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
  """(T,) RMS of the samples of each part a_t of a mono waveform (past its end: 0)."""
  x = audio_io.clip_to_frames(waveform, fps, num_frames, sample_rate).astype(np.float64)
  bounds = audio_io.part_bounds(fps, num_frames, sample_rate)
  sq = np.concatenate([[0.0], np.cumsum(x ** 2)])
  return np.sqrt((sq[bounds[1:]] - sq[bounds[:-1]]) / np.maximum(np.diff(bounds), 1))


def letter_presence(part_chars: np.ndarray) -> np.ndarray:
  """(T, 27) per-part character vectors -> (T,) 1 - P(BLANK)."""
  return 1.0 - np.asarray(part_chars, np.float64)[:, asr_lib.BLANK]


def pearson(x: np.ndarray, y: np.ndarray) -> float:
  """Pearson correlation over the pairs where both are finite; NaN with < MIN_PAIRS pairs or a constant side."""
  ok = np.isfinite(x) & np.isfinite(y)
  if ok.sum() < MIN_PAIRS:
    return float('nan')
  a, b = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
  den = np.sqrt(np.sum(a * a) * np.sum(b * b))
  return float(np.sum(a * b) / den) if den > 0 else float('nan')


def lagged_pearson(mouth: np.ndarray, audio: np.ndarray, lags) -> np.ndarray:
  """r[i] = Pearson(mouth[t], audio[t + lags[i]]) over the frames t where both exist; (len(lags),)."""
  mouth, audio = np.asarray(mouth, np.float64), np.asarray(audio, np.float64)
  t = len(mouth)
  out = []
  for k in lags:
    lo, hi = max(0, -k), min(t, t - k)  # mouth[lo:hi] pairs with audio[lo + k:hi + k].
    out.append(pearson(mouth[lo:hi], audio[lo + k:hi + k]) if hi > lo else float('nan'))
  return np.asarray(out)


def peak_lag(lags, r: np.ndarray) -> int:
  """The lag of the largest correlation (NaNs ignored)."""
  return int(np.asarray(lags)[np.nanargmax(r)])
