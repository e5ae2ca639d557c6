"""The per-frame audio vector h_t^(a) = [h_t^(aL); h_t^(aH)] in R^300 of Section 3.2.

h_t^(aL) (84): low-level features of a window of 2L parts (`lowlevel.py` documents the 84 values).
h_t^(aH) (2L * 27 = 216): the 27-class character vectors of a window of 2L parts, oldest first, flattened
part-major (values 84 + 27 i + c hold class c of the i-th part of the window). The paper writes the window as
a_{t-L-1:t+L}, which would be 2L + 2 parts; like the authors' code (create_window) we take 2L parts.

Timing (L = config.audio.window_half; offsets in frames, positive = the audio is read ahead of frame t):
- low-level: frame t summarises parts t - L + o .. t + L - 1 + o, o = config.audio.lowlevel_offset;
- characters: the per-part stream is shifted first, so that frame n takes the letter of part n + c
  (c = config.audio.chars_offset; BLANK where n + c lies outside the clip), then frame t's window holds the shifted
  stream's frames t - L .. t + L - 1 (BLANK outside the clip), i.e. the letters of parts t - L + c .. t + L - 1 + c
  wherever both t - L + i and t - L + i + c lie inside the clip (the authors' order: shift, then window).
Offset 0 centres both windows on t (t - L .. t + L - 1). The authors' code looks ahead: its low-level window covers
t .. t + 2L - 1 (lowlevel_offset = L = 4) and its DeepSpeech letters are shifted by offset_n_frames = 5
(chars_offset = 5). configs/paper.py sets the offsets measured for our pocketsphinx stream (bench/audio_lag.py).
Past the clip's ends: the low-level window reads the signal reflect-padded (`lowlevel.py`); letters of parts before
the first frame or after the last are BLANK (silence), as the authors' padding with the first / last token (a clip's
first token is their space) does.

The vector is returned unnormalised; `stats.py` computes, saves and applies the dataset's per-dimension statistics.
"""
from __future__ import annotations

import os

import numpy as np

from headgan_jax.audio import asr as asr_lib
from headgan_jax.audio import io as audio_io
from headgan_jax.audio import lowlevel
from headgan_jax.errors import AudioError, ConfigError


def feature_dim(config) -> int:
  """84 + 2L * 27 (the 84 low-level values and the 27 character classes are fixed by their definitions), checked
  against config.model.audio_dim."""
  a = config.audio
  if int(a.window_half) < 1:
    raise ConfigError(f'config.audio.window_half = {a.window_half}: must be >= 1.')
  dim = lowlevel.NUM_LOWLEVEL + 2 * int(a.window_half) * asr_lib.NUM_CHARS
  if 'model' in config and config.model.audio_dim != dim:
    raise ConfigError(f'config.model.audio_dim = {config.model.audio_dim} but 84 + 2 * window_half * 27 = {dim} '
                      f'(window_half = {a.window_half}).')
  return dim


def blank_parts(num: int, dtype=np.float32) -> np.ndarray:
  """(num, 27) one-hot BLANK parts (silence)."""
  return np.repeat(np.eye(asr_lib.NUM_CHARS, dtype=dtype)[asr_lib.BLANK][None], num, axis=0)


def shift_parts(part_chars: np.ndarray, offset: int) -> np.ndarray:
  """(T, 27) -> (T, 27) where part n holds part n + offset of the input, BLANK where that lies outside the clip."""
  t = part_chars.shape[0]
  src = np.arange(t) + int(offset)
  padded = np.concatenate([part_chars, blank_parts(1, part_chars.dtype)])  # Row t: the BLANK out-of-clip parts read.
  return padded[np.where((src >= 0) & (src < t), src, t)]


def character_windows(part_chars: np.ndarray, window_half: int, offset: int = 0) -> np.ndarray:
  """(T, 27) per-part classes -> (T, 2L * 27): the stream shifted by `offset` (shift_parts), then for each frame t
  its parts t-L .. t+L-1, BLANK beyond the clip."""
  t = part_chars.shape[0]
  shifted = shift_parts(part_chars, offset)
  padded = np.concatenate([blank_parts(window_half, shifted.dtype), shifted,
                           blank_parts(window_half - 1, shifted.dtype)])
  idx = np.arange(t)[:, None] + np.arange(2 * window_half)[None, :]
  return padded[idx].reshape(t, -1)


def offsets(config) -> tuple[int, int]:
  """(lowlevel_offset, chars_offset) of config.audio, in frames (positive = look ahead of frame t)."""
  a = config.audio
  out = []
  for name in ('lowlevel_offset', 'chars_offset'):
    value = a[name]
    if isinstance(value, bool) or int(value) != value:
      raise ConfigError(f'config.audio.{name} = {value!r}: must be a whole number of frames.')
    out.append(int(value))
  return out[0], out[1]


def features_from_waveform(waveform: np.ndarray, sample_rate: int, fps: float, num_frames: int, config,
                           backend: asr_lib.AsrBackend | None = None) -> np.ndarray:
  """h^(a) for a waveform: (T, 300) float32. Any sample rate, mono (N,) or multi-channel (N, C) / (C, N)."""
  dim = feature_dim(config)
  if not fps or fps <= 0:
    raise AudioError(f'fps = {fps}: must be positive.')
  if int(num_frames) < 1:
    raise AudioError(f'num_frames = {num_frames}: must be at least 1.')
  rate = int(config.audio.sample_rate)
  x = audio_io.resample(waveform, sample_rate, rate)
  x = audio_io.clip_to_frames(x, fps, int(num_frames), rate)
  backend = asr_lib.make_backend(config) if backend is None else backend
  low_offset, chars_offset = offsets(config)
  half = int(config.audio.window_half)
  low = lowlevel.lowlevel_features(x, rate, fps, int(num_frames), half, offset=low_offset)
  chars = backend.part_chars(x, rate, fps, int(num_frames))
  high = character_windows(chars.astype(np.float32), half, offset=chars_offset)
  out = np.concatenate([low, high], axis=-1).astype(np.float32)
  assert out.shape == (num_frames, dim), out.shape
  if not np.all(np.isfinite(out)):
    raise AudioError('audio features hold NaN or infinite values.')
  return out


def audio_features(path_or_waveform, fps: float | None, num_frames: int | None, config, *,
                   sample_rate: int | None = None, backend: asr_lib.AsrBackend | None = None) -> np.ndarray:
  """h_t^(a) for every frame t of a clip: (T, 300) float32.

  `path_or_waveform`: a video or audio file (fps / num_frames may be None for a video: read from its video stream),
  or a waveform array at `sample_rate` (default config.audio.sample_rate) with fps and num_frames given.
  Pass one `backend` (asr.make_backend(config)) when processing many clips, so its model loads once.
  """
  if isinstance(path_or_waveform, (str, os.PathLike)):
    path = os.fspath(path_or_waveform)
    if fps is None or num_frames is None:
      timing = audio_io.video_timing(path)
      fps = timing.fps if fps is None else fps
      num_frames = timing.num_frames if num_frames is None else num_frames
    rate = int(config.audio.sample_rate)
    waveform = audio_io.load_audio(path, rate)
    try:
      return features_from_waveform(waveform, rate, fps, num_frames, config, backend)
    except AudioError as e:
      raise AudioError(f'{path}: {e}') from e
  if fps is None or num_frames is None:
    raise AudioError('fps and num_frames must be given with a waveform.')
  rate = int(config.audio.sample_rate) if sample_rate is None else int(sample_rate)
  return features_from_waveform(np.asarray(path_or_waveform), rate, fps, num_frames, config, backend)
