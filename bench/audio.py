"""Benchmark of the audio features h^(a) (Section 3.2): seconds of audio processed per second of wall time.

  python bench/audio.py [--clip PATH] [--repeats 3]

Measured on the fixture clip ../shared/fixtures/driving.mp4 (30 fps, 5 s of speech) or, when it is absent, on a
synthesised 5 s clip (harmonic tones with syllable-like amplitude modulation, 30 fps). Figures:
- low-level h^(aL) (84 per frame) with this project's vectorised NumPy code;
- pyAudioAnalysis' ShortTermFeatures.feature_extraction on the same 16 kHz signal with the same short-term
  window / step (the per-window Python loop the paper used; it also computes chroma, which we drop), and the ratio;
- speech content h^(aH) with the pocketsphinx backend (decoder already loaded), and the whole `audio_features`.
Timings are best of --repeats (pocketsphinx: one run). Figures are printed for humans, then ONE JSON line.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402

from configs import paper  # noqa: E402
from headgan_jax.audio import asr  # noqa: E402
from headgan_jax.audio import features  # noqa: E402
from headgan_jax.audio import io as audio_io  # noqa: E402
from headgan_jax.audio import lowlevel  # noqa: E402


def synthetic_clip(rate: int, seconds: float = 5.0) -> np.ndarray:
  """Voiced-speech-like signal: a 140 Hz harmonic series, 4 Hz syllable envelope, a little noise."""
  t = np.arange(int(rate * seconds)) / rate
  voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 20))
  envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None)
  noise = 0.01 * np.random.default_rng(0).standard_normal(t.size)
  return (0.3 * voice * envelope / 3 + noise).astype(np.float32)


def best_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--clip', default=str(REPO.parent / 'shared' / 'fixtures' / 'driving.mp4'))
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()

  config = paper.get_config()
  rate, half = int(config.audio.sample_rate), int(config.audio.window_half)
  clip = pathlib.Path(args.clip)
  if clip.exists():
    timing = audio_io.video_timing(clip)
    fps, num_frames = timing.fps, timing.num_frames
    x = audio_io.clip_to_frames(audio_io.load_audio(clip, rate), fps, num_frames, rate)
    source = str(clip)
  else:
    fps, num_frames = 30.0, 150
    x = audio_io.clip_to_frames(synthetic_clip(rate), fps, num_frames, rate)
    source = 'synthetic'
  seconds = x.size / rate
  print(f'clip: {source}, {seconds:.2f} s at {rate} Hz, {num_frames} frames at {fps:g} fps')

  t_low = best_time(lambda: lowlevel.lowlevel_features(x, rate, fps, num_frames, half), args.repeats)
  window, step = round(0.5 * rate / fps), round(rate / (16 * fps))
  try:
    from pyAudioAnalysis import ShortTermFeatures  # pylint: disable=g-import-not-at-top
    t_pyaa = best_time(lambda: ShortTermFeatures.feature_extraction(x * 2 ** 15, rate, window, step), args.repeats)
  except ImportError:
    t_pyaa = float('nan')
  t_ours_st = best_time(lambda: lowlevel.short_term_features(x, rate, window, step), args.repeats)

  backend = asr.PocketSphinxBackend()
  start = time.perf_counter()
  backend._get_decoder()  # pylint: disable=protected-access
  t_load = time.perf_counter() - start
  t_asr = best_time(lambda: backend.part_chars(x, rate, fps, num_frames), 1)
  t_all = best_time(lambda: features.features_from_waveform(x, rate, fps, num_frames, config, backend), 1)

  figures = {
      'clip': source,
      'audio_seconds': round(seconds, 3),
      'lowlevel_audio_s_per_s': round(seconds / t_low, 1),
      'short_term_audio_s_per_s': round(seconds / t_ours_st, 1),
      'pyaudioanalysis_short_term_audio_s_per_s': round(seconds / t_pyaa, 1) if t_pyaa == t_pyaa else None,
      'short_term_speedup_vs_pyaudioanalysis': round(t_pyaa / t_ours_st, 1) if t_pyaa == t_pyaa else None,
      'pocketsphinx_load_s': round(t_load, 3),
      'pocketsphinx_audio_s_per_s': round(seconds / t_asr, 2),
      'audio_features_audio_s_per_s': round(seconds / t_all, 2),
  }
  print(f'low-level h^(aL) (84/frame, ours, all frames):  {figures["lowlevel_audio_s_per_s"]} s of audio / s')
  print(f'short-term features, ours (vectorised):         {figures["short_term_audio_s_per_s"]} s of audio / s')
  print(f'short-term features, pyAudioAnalysis (loop):    {figures["pyaudioanalysis_short_term_audio_s_per_s"]} '
        f's of audio / s  -> ours is {figures["short_term_speedup_vs_pyaudioanalysis"]}x')
  print(f'pocketsphinx h^(aH): load {figures["pocketsphinx_load_s"]} s, then '
        f'{figures["pocketsphinx_audio_s_per_s"]} s of audio / s')
  print(f'whole audio_features (T, 300):                  {figures["audio_features_audio_s_per_s"]} s of audio / s')
  print(json.dumps(figures))


if __name__ == '__main__':
  main()
