"""Face tracking throughput per stage on a real clip, and our fit vs the authors' per-frame formulation.

  python bench/track.py [--video ../shared/fixtures/driving.mp4] [--repeats 3] [--config configs/paper.py]

Stages (frames/s, median of interleaved repetitions after one warm-up that compiles): decode (PyAV), detect
(BlazeFace, one LiteRT call per frame), crop (Pillow), landmarks (468 points, batched LiteRT), fit (one jitted
video-mode LM fit of the clip), render (x_t, jitted batched rasteriser), mouth boxes, mask (selfie segmentation,
batched). The whole path is `Tracker.track_frames` plus decoding, timed as one call.

The authors' fit (HeadGAN's public code, read for facts): per frame, a similarity Procrustes of the regressed 3-D
points to the model's landmark mean, then `scipy.optimize.lsq_linear` (method 'trf', tol 1e-10) on the stacked
[identity, expression] basis with bounds +-0.8 / +-1.5. It is timed here on the same landmarks (our detector's 3-D
points) and the same 3DMM (on --authors-frames frames spread over the clip), side by side with ours in one process, and substituted for our fit stage to give "the
whole path with their fit". VoxCeleb1 (~4.4 M frames at 25 fps) is then estimated from the whole path's rate.
Prints figures, ends with one JSON line. Timings on a shared machine are noisy: compare ratios from one run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


from headgan_jax.tracking import track  # noqa: E402
from headgan_jax.tracking import video as video_lib  # noqa: E402
from headgan_jax.face3d import camera as cam_lib  # noqa: E402
from headgan_jax import config_files  # noqa: E402

VOXCELEB1_FRAMES = 4.4e6


def procrustes_lsq_fit(mean_l: np.ndarray, basis: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                       points3d: np.ndarray) -> np.ndarray:
  """The authors' per-frame formulation: points (L, 3) aligned to mean_l by a similarity, then bounded least
  squares of the aligned residual on basis (3L, K). Returns coefficients (K,)."""
  from scipy.optimize import lsq_linear
  mu_m, mu_p = mean_l.mean(0), points3d.mean(0)
  m0, p0 = mean_l - mu_m, points3d - mu_p
  u, s, vt = np.linalg.svd(m0.T @ p0)
  d = np.sign(np.linalg.det(u @ vt))
  fix = np.array([1.0, 1.0, d])
  rot = (u * fix) @ vt
  scale = np.sum(s * fix) / np.sum(p0 * p0)
  aligned = scale * p0 @ rot.T + mu_m
  return lsq_linear(basis, (aligned - mean_l).ravel(), bounds=(lower, upper), method='trf', tol=1e-10).x


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  here = os.path.dirname(os.path.abspath(__file__))
  parser.add_argument('--video', default=os.path.join(here, '..', '..', 'shared', 'fixtures', 'driving.mp4'))
  parser.add_argument('--config', default=os.path.join(here, '..', 'configs', 'paper.py'))
  parser.add_argument('--model', default=None, help='a 3DMM .npz on the detector mesh (default: the data-free one)')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--authors-frames', type=int, default=30, help='frames the (slow) per-frame fit is timed on')
  parser.add_argument('--workers', type=int, default=50, help='Beam workers (2 cores each) for the estimate')
  args = parser.parse_args(argv)
  config = config_files.load(args.config)
  if args.model:
    config.face3d.model = args.model
  tracker = track.Tracker(config)
  frames, fps = video_lib.read_video(args.video)
  n = len(frames)
  det = tracker.detect(frames)
  found = det.count > 0
  box, reason = tracker.crop_box(det.boxes[:, 0], found, frames.shape[1:3], args.video)
  if reason:
    print(f'error: {reason}', file=sys.stderr)
    return 2
  crops = tracker.crop(frames, box)
  points, presence = tracker.landmarks(frames, det.boxes[:, 0], det.keypoints[:, 0])
  points = tracker.to_crop(points, box)
  fit = tracker.fit(points, found)
  cam = cam_lib.Camera(fit['rotation'], fit['translation'], fit['scale'])

  model = tracker.model
  idx = np.asarray(model.landmark_indices)
  mean_l = np.asarray(model.mean)[idx].astype(np.float64)
  basis = np.concatenate([np.asarray(model.id_basis)[:, idx] * np.asarray(model.id_std)[:, None, None],
                          np.asarray(model.exp_basis)[:, idx] * np.asarray(model.exp_std)[:, None, None]])
  basis = basis.reshape(len(basis), -1).T.astype(np.float64)  # (3L, K)
  bound = np.concatenate([np.full(model.num_id, config.face3d.id_bound), np.full(model.num_exp,
                                                                                 config.face3d.exp_bound)])
  model_pts = (points[:, tracker.points] * np.array([1.0, -1.0, 1.0])).astype(np.float64)  # y up, z to the viewer
  model_pts = model_pts[np.linspace(0, n - 1, min(n, args.authors_frames)).round().astype(int)]
  counts = {'authors_fit': len(model_pts)}

  stages = {
      'decode': lambda: video_lib.read_video(args.video),
      'detect': lambda: tracker.detect(frames),
      'crop': lambda: tracker.crop(frames, box),
      'landmarks': lambda: tracker.landmarks(frames, det.boxes[:, 0], det.keypoints[:, 0]),
      'fit': lambda: tracker.fit(points, found),
      'render': lambda: tracker.render(fit['p_id'], fit['p_exp'], cam),
      'mouth': lambda: tracker.mouth_boxes(fit['p_id'], fit['p_exp'], cam),
      'mask': lambda: tracker.masks(crops),
      'authors_fit': lambda: [procrustes_lsq_fit(mean_l, basis, -bound, bound, p) for p in model_pts],
      'whole': lambda: tracker.track_frames(video_lib.read_video(args.video)[0], fps, args.video),
  }
  for name, fn in stages.items():  # Warm-up: compiles.
    start = time.perf_counter()
    fn()
    print(f'  (warm-up {name}: {time.perf_counter() - start:.1f} s)', flush=True)
  times = {k: [] for k in stages}
  for _ in range(args.repeats):  # Interleaved, so the machine's load hits every stage alike.
    for name, fn in stages.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  rate = {k: counts.get(k, n) / float(np.median(v)) for k, v in times.items()}
  print(f'{args.video}: {n} frames {frames.shape[2]}x{frames.shape[1]}, crops {config.image_size}, '
        f'{model.num_landmarks} landmarks, 3DMM K_id {model.num_id} K_exp {model.num_exp}; median of '
        f'{args.repeats} interleaved repetitions')
  pipeline = ('decode', 'detect', 'crop', 'landmarks', 'fit', 'render', 'mouth', 'mask')
  for name in pipeline:
    print(f'  {name:10s} {rate[name]:8.1f} frames/s  ({1e3 / rate[name]:6.2f} ms/frame)')
  slowest = min(pipeline, key=lambda k: rate[k])
  print(f'  slowest stage: {slowest}')
  print(f'  whole path (decode + Tracker.track_frames): {rate["whole"]:.1f} frames/s')
  ours_ms = 1e3 / rate['fit']
  theirs_ms = 1e3 / rate['authors_fit']
  whole_ms = 1e3 / rate['whole']
  with_theirs = 1e3 / (whole_ms - ours_ms + theirs_ms)
  print(f'fit: ours (jitted LM, shared identity, 2-D) {rate["fit"]:.1f} frames/s vs the authors\' per-frame '
        f'Procrustes + lsq_linear {rate["authors_fit"]:.1f} frames/s: {theirs_ms / ours_ms:.1f}x')
  print(f'whole path with their fit instead of ours: {with_theirs:.1f} frames/s ({rate["whole"] / with_theirs:.2f}x '
        f'slower than ours)')
  hours = VOXCELEB1_FRAMES / rate['whole'] / 3600
  print(f'VoxCeleb1 ({VOXCELEB1_FRAMES / 1e6:.1f} M frames): {hours:.0f} h on one such 2-core machine, '
        f'{hours / args.workers:.1f} h on {args.workers} Beam workers of 2 cores')
  result = {f'{k}_fps': round(v, 2) for k, v in rate.items()}
  result.update(slowest=slowest, fit_speedup_vs_authors=round(theirs_ms / ours_ms, 2),
                whole_with_authors_fit_fps=round(with_theirs, 2), voxceleb1_hours_one_machine=round(hours, 1),
                voxceleb1_hours_cluster=round(hours / args.workers, 2), workers=args.workers, frames=n)
  print(json.dumps(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
