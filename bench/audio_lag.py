"""Audio timing: at which lag do our audio streams best predict the tracked mouth opening? (config.audio offsets)

  python bench/audio_lag.py [--fixtures ../shared/fixtures] [--cache DIR] [--max-lag 10] [--clips a.mp4 b.mp4 ...]

For each real clip with speech (default: ../shared/fixtures/driving.mp4, demo/*.mp4 and extra/*.mp4 except the three
1080x1920 portrait HEVC clips extra/latentsync-*, whose decoded frames alone take gigabytes), per video frame t:
- mouth opening: inner-lip gap (MediaPipe points 13 / 14) over the outer-eye-corner distance (33 / 263), from the
  project's MediaPipe face mesh (detection + 468 landmarks, as headgan_jax/tracking/track.py locates faces); frames
  without a usable face are left out;
- part RMS: RMS of the samples of part a_t;
- low-level energy: the mean-energy value of h^(aL) at lowlevel_offset 0 (window of parts t-4 .. t+3);
- letter presence: 1 - P(BLANK) of part a_t from the pocketsphinx backend (one-hot, as the features use it).
Then the Pearson correlation of mouth[t] with stream[t + k] for k = -max_lag .. +max_lag, per clip, and the mean
curve over clips. Lag k > 0 means the audio k frames AFTER frame t best predicts frame t's mouth, i.e. the offset
(config.audio.lowlevel_offset / chars_offset, positive = look ahead) that feeds frame t that audio is k: the
low-level offset is the low-level energy's peak lag and the characters' offset the letter presence's peak lag (part
RMS, unwindowed, is reported as the raw timing). The spread of each mean peak is given by a bootstrap over clips.
A cross-check that needs no video (so no clip's audio-video sync enters): the lag at which the letter presence best
follows the part RMS, r(rms[t], letters[t + k]), i.e. the recogniser's own timing against the sound.

Landmarks and transcripts are cached in --cache (default: a folder in the system temp dir, outside the repository),
keyed by clip name, size and modification time; a warm rerun takes seconds. Prints figures, then ONE JSON line.
"""
from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402

from configs import paper  # noqa: E402
from headgan_jax.audio import asr  # noqa: E402
from headgan_jax.audio import io as audio_io  # noqa: E402
from headgan_jax.audio import lowlevel  # noqa: E402
from headgan_jax.audio import timing  # noqa: E402
from headgan_jax.tracking import facemesh as fm  # noqa: E402
from headgan_jax.tracking import track  # noqa: E402
from headgan_jax.tracking import video as video_lib  # noqa: E402

STREAMS = ('part_rms', 'lowlevel_energy', 'letters')
CHOICE = {'lowlevel_offset': 'lowlevel_energy', 'chars_offset': 'letters'}  # Config field <- the stream it follows.
EXCLUDED = ('latentsync-',)  # 1080x1920 portrait HEVC: decoding all frames takes GBs; faces are small.
MEAN_ENERGY = lowlevel.LOWLEVEL_NAMES.index('mean_energy')


def default_clips(fixtures: pathlib.Path) -> list[pathlib.Path]:
  """driving.mp4, demo/*.mp4, extra/*.mp4 (minus EXCLUDED), those that exist."""
  clips = [fixtures / 'driving.mp4'] + sorted((fixtures / 'demo').glob('*.mp4')) + sorted(
      p for p in (fixtures / 'extra').glob('*.mp4') if not p.name.startswith(EXCLUDED))
  return [p for p in clips if p.exists()]


def clip_landmarks(path: pathlib.Path, mesh: fm.FaceMesh, config) -> tuple[np.ndarray, np.ndarray, float]:
  """(points (T, 468, 3) source px, usable (T,) bool, fps) of a clip: detection then landmarks, as track.py."""
  frames, fps = video_lib.read_video(path)
  det = mesh.detect(frames)
  found = det.count > 0
  if not found.any():
    return np.zeros((len(frames), fm.NUM_POINTS, 3), np.float32), found, fps
  use = track.fill_missing(found)
  points, presence = mesh.landmarks(frames, det.boxes[use, 0], det.keypoints[use, 0],
                                    refine=bool(config.track.refine_landmarks))
  return points, found & (presence >= float(config.track.min_presence)), fps


def cache_key(path: pathlib.Path) -> str:
  st = path.stat()
  return f'{path.parent.name}-{path.stem}-{st.st_size}-{int(st.st_mtime)}'


def clip_streams(path: pathlib.Path, cache: pathlib.Path, mesh_fn, backend: asr.AsrBackend, config) -> dict:
  """{'mouth', 'part_rms', 'lowlevel_energy', 'letters'} (T,) each (mouth NaN where no usable face), and 'fps'."""
  file = cache / f'{cache_key(path)}.npz'
  if file.exists():
    with np.load(file) as z:
      return {k: z[k] for k in z.files}
  points, usable, fps = clip_landmarks(path, mesh_fn(), config)
  mouth = np.where(usable, timing.mouth_opening(points), np.nan)
  t = len(mouth)
  rate, half = int(config.audio.sample_rate), int(config.audio.window_half)
  x = audio_io.clip_to_frames(audio_io.load_audio(str(path), rate), fps, t, rate)
  out = dict(
      mouth=mouth, fps=np.float64(fps),
      part_rms=timing.part_rms(x, rate, fps, t),
      lowlevel_energy=lowlevel.lowlevel_features(x, rate, fps, t, half, offset=0)[:, MEAN_ENERGY].astype(np.float64),
      letters=timing.letter_presence(backend.part_chars(x, rate, fps, t)))
  cache.mkdir(parents=True, exist_ok=True)
  np.savez(file, **out)
  return out


def bootstrap_peaks(curves: np.ndarray, lags: np.ndarray, rounds: int = 2000, seed: int = 0) -> dict:
  """Peak lag of the mean curve over clips resampled with replacement: {lag: share of rounds}."""
  rng = np.random.default_rng(seed)
  n = len(curves)
  peaks = [timing.peak_lag(lags, np.nanmean(curves[rng.integers(0, n, n)], axis=0)) for _ in range(rounds)]
  values, counts = np.unique(peaks, return_counts=True)
  return {int(v): round(float(c) / rounds, 3) for v, c in zip(values, counts)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--fixtures', default=str(REPO.parent / 'shared' / 'fixtures'))
  parser.add_argument('--cache', default=str(pathlib.Path(tempfile.gettempdir()) / 'headgan-audio-lag'))
  parser.add_argument('--max-lag', type=int, default=10)
  parser.add_argument('--clips', nargs='*', help='clip paths (default: the fixture clips, see above)')
  args = parser.parse_args()

  config = paper.get_config()
  fixtures = pathlib.Path(args.fixtures)
  clips = [pathlib.Path(c) for c in args.clips] if args.clips else default_clips(fixtures)
  if not clips:
    sys.exit(f'no clips: {fixtures} holds none of the fixture clips; pass --clips')
  lags = np.arange(-args.max_lag, args.max_lag + 1)
  mesh_fn = functools.cache(lambda: fm.FaceMesh(fm.FaceMeshSettings.from_config(config)))  # Only if not cached.
  backend = asr.PocketSphinxBackend()

  start = time.perf_counter()
  curves = {s: [] for s in STREAMS}
  per_clip = {}
  audio_pairs = []  # (part RMS, letter presence) per clip, for the audio-only cross-check.
  print(f'{"clip":48s} {"fps":>6s} {"T":>4s} {"face":>5s}  ' + '  '.join(f'{s:>22s}' for s in STREAMS))
  for path in clips:
    d = clip_streams(path, pathlib.Path(args.cache), mesh_fn, backend, config)
    audio_pairs.append((d['part_rms'], d['letters']))
    name = str(path.relative_to(fixtures)) if path.is_relative_to(fixtures) else str(path)
    row = {'fps': round(float(d['fps']), 3), 'frames': int(len(d['mouth'])),
           'face_frames': int(np.isfinite(d['mouth']).sum())}
    cells = []
    for s in STREAMS:
      r = timing.lagged_pearson(d['mouth'], d[s], lags)
      curves[s].append(r)
      if np.all(np.isnan(r)):
        row[s] = {'peak_lag': None, 'peak_r': None, 'r_at_0': None}
        cells.append(f'{"n/a":>22s}')
        continue
      k = timing.peak_lag(lags, r)
      row[s] = {'peak_lag': k, 'peak_r': round(float(np.nanmax(r)), 3),
                'r_at_0': round(float(r[lags == 0][0]), 3)}
      cells.append(f'peak {k:+3d} r={np.nanmax(r):+.2f} (0:{r[lags == 0][0]:+.2f})')
    per_clip[name] = row
    print(f'{name[:48]:48s} {row["fps"]:6.2f} {row["frames"]:4d} {row["face_frames"]:5d}  ' + '  '.join(cells))

  result = {'clips': len(clips), 'lags': lags.tolist(), 'streams': {}, 'per_clip': per_clip}
  print(f'\nmean over {len(clips)} clips, Pearson r(mouth[t], stream[t + k]):')
  print(f'{"k":>4s} ' + ' '.join(f'{s:>16s}' for s in STREAMS))
  means = {s: np.nanmean(np.stack(curves[s]), axis=0) for s in STREAMS}
  for i, k in enumerate(lags):
    print(f'{k:+4d} ' + ' '.join(f'{means[s][i]:16.3f}' for s in STREAMS))
  for s in STREAMS:
    k = timing.peak_lag(lags, means[s])
    peaks = [row[s]['peak_lag'] for row in per_clip.values() if row[s]['peak_lag'] is not None]
    result['streams'][s] = {
        'mean_curve': [round(float(v), 4) for v in means[s]], 'mean_peak_lag': k,
        'mean_peak_r': round(float(np.nanmax(means[s])), 4), 'mean_r_at_0': round(float(means[s][lags == 0][0]), 4),
        'per_clip_peak_median': float(np.median(peaks)),
        'bootstrap_peak_share': bootstrap_peaks(np.stack(curves[s]), lags)}
    st = result['streams'][s]
    print(f'{s:16s} mean-curve peak at k = {k:+d} (r = {st["mean_peak_r"]:.3f}; at k = 0: {st["mean_r_at_0"]:.3f}); '
          f'median per-clip peak {st["per_clip_peak_median"]:+.1f}; bootstrap over clips: {st["bootstrap_peak_share"]}')
  audio_only = [timing.lagged_pearson(d_rms, d_let, lags) for d_rms, d_let in audio_pairs]
  peaks = [timing.peak_lag(lags, r) for r in audio_only]
  mean_audio = np.nanmean(np.stack(audio_only), axis=0)
  result['letters_vs_rms'] = {
      'mean_peak_lag': timing.peak_lag(lags, mean_audio), 'mean_peak_r': round(float(np.nanmax(mean_audio)), 4),
      'per_clip_peaks': {int(v): int(c) for v, c in zip(*np.unique(peaks, return_counts=True))}}
  print(f'audio only, letters vs part RMS: mean-curve peak at k = {result["letters_vs_rms"]["mean_peak_lag"]:+d} '
        f'(r = {result["letters_vs_rms"]["mean_peak_r"]:.3f}); per-clip peaks {{lag: clips}} '
        f'{result["letters_vs_rms"]["per_clip_peaks"]}')
  result['chosen'] = {field: result['streams'][s]['mean_peak_lag'] for field, s in CHOICE.items()}
  result['authors'] = {'lowlevel_offset': 4, 'chars_offset': 5}
  result['configured'] = {f: int(config.audio[f]) for f in CHOICE}
  result['seconds'] = round(time.perf_counter() - start, 1)
  print(f'\nmeasured offsets: {result["chosen"]} (authors: {result["authors"]}; configs/paper.py now: '
        f'{result["configured"]}); {result["seconds"]} s')
  print(json.dumps(result))


if __name__ == '__main__':
  main()
