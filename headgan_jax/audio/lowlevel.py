"""Low-level audio features h_t^(aL) in R^84 (Section 3.2): pyAudioAnalysis' short-term set, all frames at once.

The paper takes these from pyAudioAnalysis [12]; the authors' code (extract_audio_features.py) keeps its 8 time /
spectral features and 13 MFCCs (no chroma), adds their deltas, and takes the mean and std over a mid-term window of 8
video frames. Short-term windows last half a video frame and step 1/16 of a frame (16 per part a_t).

Per short-term window x (W samples of the DC-removed, peak-normalised signal), X = |FFT(x)|[:W//2] / (W//2)
(rectangular window, as pyAudioAnalysis):

| idx | name              | definition (pyAudioAnalysis.ShortTermFeatures)                                     |
|-----|-------------------|------------------------------------------------------------------------------------|
| 0   | zcr               | number of sign changes / (W - 1)                                                   |
| 1   | energy            | sum(x^2) / W                                                                       |
| 2   | energy_entropy    | entropy (bits) of the energies of 10 equal sub-blocks, normalised by sum(x^2)     |
| 3   | spectral_centroid | sum(f_k X_k) / sum(X_k) / (sr / 2), f_k = (k + 1) sr / W                           |
| 4   | spectral_spread   | sqrt(sum((f_k - centroid)^2 X_k) / sum(X_k)) / (sr / 2)                            |
| 5   | spectral_entropy  | entropy (bits) of the energies of 10 equal sub-bands of X                          |
| 6   | spectral_flux     | sum((X / sum X - X_prev / sum X_prev)^2); 0 for the first window                   |
| 7   | spectral_rolloff  | first bin where the cumulative energy of X exceeds 90 %, / (W // 2)                |
| 8-20| mfcc_1..mfcc_13   | DCT-II (ortho) of log10 of 40 talkbox triangular filter energies (13 linear + 27 log) |

That is 21 values per short-term window; 21 deltas (difference to the previous window, 0 for the first) make 42;
the mean (42) then the std (42) over the 2L * 16 short-term windows of parts a_{t-L+o} .. a_{t+L-1+o} make the 84
values of h_t^(aL), in this order: [mean(features), mean(deltas), std(features), std(deltas)]. o is the window's
offset in frames (config.audio.lowlevel_offset, positive = ahead of frame t): 0 centres the window on t (the paper
says centred), L gives the authors' forward-looking window t .. t+2L-1 (see features.py for the measured default).

Departures from pyAudioAnalysis, all deliberate: windows are placed on the frame grid (window j of part t starts at
round((t + j / 16) * sr / fps), so there is no drift over long clips); the signal is reflect-padded at both ends as
far as the windows of the first and last frames reach, so every frame's window is full; an all-zero window gives 0
centroid / spread instead of NaN.
pyAudioAnalysis' filterbank quirk (bin k is taken to be at k * sr / (W // 2) Hz, twice its real frequency) is kept so
the features match the library the paper used.
"""
from __future__ import annotations

import numpy as np
import scipy.fft

from headgan_jax.errors import AudioError

EPS = 1e-8  # pyAudioAnalysis' eps.
SHORT_PER_PART = 16  # Short-term windows per part a_t (authors: short step = 1 / (16 fps)).
SHORT_WINDOW_PARTS = 0.5  # Short-term window length in parts (authors: 8 / (16 fps)).
NUM_BLOCKS = 10  # Sub-blocks of the energy / spectral entropies.
NUM_MFCC = 13
ROLLOFF = 0.90
FEATURE_NAMES = (
    'zcr', 'energy', 'energy_entropy', 'spectral_centroid', 'spectral_spread', 'spectral_entropy', 'spectral_flux',
    'spectral_rolloff') + tuple(f'mfcc_{i}' for i in range(1, NUM_MFCC + 1))
NUM_SHORT = len(FEATURE_NAMES)  # 21
NUM_LOWLEVEL = 4 * NUM_SHORT  # 84: (features + deltas) x (mean + std).
LOWLEVEL_NAMES = tuple(
    f'{stat}_{kind}{name}' for stat in ('mean', 'std') for kind in ('', 'delta_') for name in FEATURE_NAMES)
_CHUNK = 4096  # Short-term windows per FFT batch: bounds memory on long clips.


def dc_normalize(x: np.ndarray) -> np.ndarray:
  """Removes the mean and scales the peak to 1 (pyAudioAnalysis' signal normalisation)."""
  x = np.asarray(x, np.float64) - np.mean(x)
  return x / (np.max(np.abs(x)) + 1e-10)


def mfcc_filterbank(sample_rate: float, num_fft: int) -> np.ndarray:
  """pyAudioAnalysis' (scikits.talkbox) triangular filterbank, (40, num_fft), quirks included."""
  lowfreq, linc, logsc, num_lin, num_log = 133.33, 200 / 3, 1.0711703, 13, 27
  freqs = np.zeros(num_lin + num_log + 2)
  freqs[:num_lin] = lowfreq + np.arange(num_lin) * linc
  freqs[num_lin:] = freqs[num_lin - 1] * logsc ** np.arange(1, num_log + 3)
  lo, ce, hi = freqs[:-2, None], freqs[1:-1, None], freqs[2:, None]
  heights = 2.0 / (hi - lo)
  k = np.arange(num_fft)[None, :]
  bin_freq = k / num_fft * sample_rate
  to_bin = num_fft / sample_rate
  rising = (k >= np.floor(lo * to_bin) + 1) & (k <= np.floor(ce * to_bin))
  falling = (k >= np.floor(ce * to_bin) + 1) & (k <= np.floor(hi * to_bin))
  return (np.where(rising, heights / (ce - lo) * (bin_freq - lo), 0.0)
          + np.where(falling, heights / (hi - ce) * (hi - bin_freq), 0.0))


def _block_entropy(v: np.ndarray) -> np.ndarray:
  """Entropy (bits) of the energy split over NUM_BLOCKS equal blocks of each row of v (S, n)."""
  total = np.sum(v ** 2, axis=-1, keepdims=True)
  block = v.shape[-1] // NUM_BLOCKS
  parts = v[:, :block * NUM_BLOCKS].reshape(v.shape[0], NUM_BLOCKS, block)
  s = np.sum(parts ** 2, axis=-1) / (total + EPS)
  return -np.sum(s * np.log2(s + EPS), axis=-1)


def _window_features(frames: np.ndarray, sample_rate: float, fbank: np.ndarray,
                     prev_spectrum: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
  """The 21 short-term features of each row of frames (S, W); returns them and the last normalised spectrum."""
  s, w = frames.shape
  num_fft = w // 2
  zcr = np.sum(np.abs(np.diff(np.sign(frames), axis=-1)), axis=-1) / 2 / (w - 1)
  energy = np.sum(frames ** 2, axis=-1) / w
  energy_entropy = _block_entropy(frames)

  mag = np.abs(scipy.fft.rfft(frames, axis=-1))[:, :num_fft] / num_fft
  ind = np.arange(1, num_fft + 1) * (sample_rate / (2.0 * num_fft))
  peak = np.max(mag, axis=-1, keepdims=True)
  xt = mag / np.where(peak == 0, EPS, peak)
  den = np.sum(xt, axis=-1) + EPS
  centroid = np.sum(ind * xt, axis=-1) / den
  spread = np.sqrt(np.sum((ind - centroid[:, None]) ** 2 * xt, axis=-1) / den)
  nyquist = sample_rate / 2.0

  spectral_entropy = _block_entropy(mag)
  norm = mag / np.sum(mag + EPS, axis=-1, keepdims=True)
  prev = norm[:1] if prev_spectrum is None else prev_spectrum[None]
  flux = np.sum((norm - np.concatenate([prev, norm[:-1]])) ** 2, axis=-1)

  power = mag ** 2
  above = np.cumsum(power, axis=-1) + EPS > ROLLOFF * np.sum(power, axis=-1, keepdims=True)
  rolloff = np.where(above.any(axis=-1), np.argmax(above, axis=-1), 0) / num_fft

  mfcc = scipy.fft.dct(np.log10(mag @ fbank.T + EPS), type=2, norm='ortho', axis=-1)[:, :NUM_MFCC]
  feats = np.stack([zcr, energy, energy_entropy, centroid / nyquist, spread / nyquist, spectral_entropy, flux,
                    rolloff], axis=-1)
  return np.concatenate([feats, mfcc], axis=-1), norm[-1]


def window_features(signal: np.ndarray, starts: np.ndarray, window: int, sample_rate: float) -> np.ndarray:
  """21 short-term features (S, 21) float64 of the windows signal[starts[i] : starts[i] + window]."""
  if window < 2 * NUM_BLOCKS:
    raise AudioError(f'short-term window of {window} samples is too short (sample rate {sample_rate} too low for '
                     f'this frame rate); need at least {2 * NUM_BLOCKS}.')
  fbank = mfcc_filterbank(sample_rate, window // 2)
  offsets = np.arange(window)
  out, prev = [], None
  for i in range(0, len(starts), _CHUNK):  # Chunks of thousands of windows, vectorised inside.
    frames = signal[starts[i:i + _CHUNK, None] + offsets]
    feats, prev = _window_features(frames, sample_rate, fbank, prev)
    out.append(feats)
  return np.concatenate(out) if out else np.zeros((0, NUM_SHORT))


def with_deltas(feats: np.ndarray) -> np.ndarray:
  """(S, n) -> (S, 2n): features then their difference to the previous window (0 for the first)."""
  deltas = np.diff(feats, axis=0, prepend=feats[:1])
  return np.concatenate([feats, deltas], axis=-1)


def short_term_features(signal: np.ndarray, sample_rate: float, window: int, step: int) -> np.ndarray:
  """pyAudioAnalysis' `feature_extraction` without chroma: (42, S) = 21 features + deltas, uniform step."""
  x = dc_normalize(signal)
  starts = np.arange(0, len(x) - window + 1, step)
  return with_deltas(window_features(x, starts, int(window), sample_rate)).T


def lowlevel_features(waveform: np.ndarray, sample_rate: float, fps: float, num_frames: int,
                      window_half: int, offset: int = 0) -> np.ndarray:
  """h^(aL): (T, 84) float32 for the parts a_1:T of `waveform` (already clipped to T / fps seconds).

  Frame t's value summarises the 16 * 2L short-term windows of parts a_{t-L+offset} .. a_{t+L-1+offset}.
  """
  part = sample_rate / fps
  window = int(round(SHORT_WINDOW_PARTS * part))
  x = dc_normalize(waveform)
  # Short-term window starts, in samples of the unpadded signal, for parts -L+offset .. T+L-2+offset.
  num_parts = num_frames + 2 * window_half - 1
  grid = np.arange(num_parts * SHORT_PER_PART) / SHORT_PER_PART - window_half + int(offset)
  starts = np.round(grid * part).astype(np.int64)
  left = max(0, -int(starts.min()))
  right = max(0, int(starts.max()) + window - len(x))
  mode = 'reflect' if len(x) > 1 else 'constant'
  padded = np.pad(x, (left, right), mode=mode)
  short = with_deltas(window_features(padded, starts + left, window, sample_rate))  # (S, 42)
  return window_stats(short.reshape(num_parts, SHORT_PER_PART, -1), 2 * window_half).astype(np.float32)


def window_stats(per_part: np.ndarray, width: int) -> np.ndarray:
  """Mean and std over every run of `width` consecutive parts: (P, k, n) -> (P - width + 1, 2n).

  Sliding sums by cumulative sums (no loop over frames); features are centred first so the variance does not
  suffer from cancellation.
  """
  n = width * per_part.shape[1]
  centred = per_part - per_part.reshape(-1, per_part.shape[-1]).mean(axis=0)
  sums = np.concatenate([np.zeros((1, per_part.shape[-1])), np.cumsum(centred.sum(axis=1), axis=0)])
  sqs = np.concatenate([np.zeros((1, per_part.shape[-1])), np.cumsum((centred ** 2).sum(axis=1), axis=0)])
  mean_c = (sums[width:] - sums[:-width]) / n
  var = np.maximum((sqs[width:] - sqs[:-width]) / n - mean_c ** 2, 0.0)
  mean = mean_c + per_part.reshape(-1, per_part.shape[-1]).mean(axis=0)
  return np.concatenate([mean, np.sqrt(var)], axis=-1)
