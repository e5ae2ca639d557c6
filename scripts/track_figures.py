"""The tracking figures of docs/tracking.md on the fixture clips, and docs/track_driving_75.png.

  .venv/bin/python scripts/track_figures.py [--fixtures ../shared/fixtures] [--docs docs]

For each fixture clip: every frame located (detector + 468 landmarks, 256x256 crop); the fit with (a) a 3DMM learned
on the detector's mesh from the OTHER five clips (leave the person out) and (b) the data-free default; median
re-projection RMS (px at 256), the correlation of the fit's mouth opening (model-space inner-lip gap) with the lip gap
measured on the detector's points, and for driving.mp4 the min IoU of x_t's face region with the landmarks' convex
hull. Writes the overlay (crop | landmarks | x_t over the crop) of driving.mp4 frame 75. Prints a Markdown table
and one JSON line. The fixtures are CC BY-NC-SA 4.0 (driving.mp4: HeadGAN's authors) / third-party: the PNG is a
derived image of one frame, credited in docs/tracking.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from matplotlib.path import Path
from scipy.spatial import ConvexHull


from configs import paper  # noqa: E402
from headgan_jax.tracking import face_model, track  # noqa: E402
from headgan_jax.tracking import video as video_lib  # noqa: E402
from headgan_jax.face3d import morphable  # noqa: E402

CLIPS = ('driving.mp4', 'demo/talk-01.mp4', 'demo/talk-02.mp4', 'demo/talk-03.mp4', 'demo/talk-04.mp4',
         'demo/talk-05.mp4')


def hull_iou(face: np.ndarray, points: np.ndarray) -> float:
  s = face.shape[0]
  v, u = np.mgrid[0:s, 0:s] + 0.5
  hull = Path(points[ConvexHull(points).vertices]).contains_points(np.stack([u.ravel(), v.ravel()], 1))
  hull = hull.reshape(s, s)
  return float((face & hull).sum() / (face | hull).sum())


def main() -> int:
  here = os.path.dirname(os.path.abspath(__file__))
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--fixtures', default=os.path.join(here, '..', '..', 'shared', 'fixtures'))
  parser.add_argument('--docs', default=os.path.join(here, '..', 'docs'))
  args = parser.parse_args()
  config = paper.get_config()
  tracker = track.Tracker(config)  # Data-free default 3DMM.
  topo = tracker.mesh.topology
  located, frames_of = {}, {}
  for clip in CLIPS:
    frames, _ = video_lib.read_video(os.path.join(args.fixtures, clip))
    loc = tracker.locate(frames, clip)
    located[clip] = (loc.points, loc.found & (loc.presence >= config.track.min_presence))
    frames_of[clip] = len(frames)
  rows, result = [], {}
  for clip in CLIPS:
    points, usable = located[clip]
    held = face_model.learn_model([located[c][0][located[c][1]] for c in CLIPS if c != clip], topo)
    _, _, top, bottom = face_model.lip_sides(topo, points[0, :, :2])
    measured = track.lip_gap(points, top, bottom)
    row = dict(frames=frames_of[clip], tracked=int(usable.sum()))
    for name, model in (('held_out', held), ('default', tracker.model)):
      fit = track.Tracker(config, model=model).fit(points, usable) if name == 'held_out' else tracker.fit(points,
                                                                                                          usable)
      shapes = np.asarray(morphable.shape(model, fit['p_id'], fit['p_exp']))
      gap = np.linalg.norm(shapes[:, top] - shapes[:, bottom], axis=-1)
      row[f'{name}_rms'] = float(np.median(fit['rms']))
      row[f'{name}_mouth_corr'] = float(np.corrcoef(gap, measured)[0, 1])
    result[clip] = row
    rows.append(f'| {clip} | {row["frames"]} | {row["tracked"]} | {row["held_out_rms"]:.2f} | '
                f'{row["held_out_mouth_corr"]:.3f} | {row["default_rms"]:.2f} | {row["default_mouth_corr"]:.3f} |')
  # driving.mp4 in full with its held-out model: x_t coverage and the overlay of frame 75.
  held = face_model.learn_model([located[c][0][located[c][1]] for c in CLIPS[1:]], topo)
  drv = track.track_clip(os.path.join(args.fixtures, 'driving.mp4'), config, track.Tracker(config, model=held))
  x_t = track.render_x(held, drv.p_id, drv.p_exp, drv.camera, config.image_size)
  ious = [hull_iou(x_t[t].sum(-1) > config.loss.face_mask_threshold, drv.landmarks[t]) for t in range(len(x_t))]
  result['driving_iou_min'] = min(ious)
  os.makedirs(args.docs, exist_ok=True)
  overlay = track.overlay_frames(track.ClipTrack(**{**drv.__dict__, 'crops': drv.crops[75:76],
                                                    'landmarks': drv.landmarks[75:76]}), x_t[75:76])[0]
  video_lib.write_image(os.path.join(args.docs, 'track_driving_75.png'), overlay)
  print('| clip | frames | tracked | RMS px (held-out model) | mouth corr | RMS px (data-free default) | mouth corr |')
  print('|---|---|---|---|---|---|---|')
  print('\n'.join(rows))
  print(f'driving.mp4 x_t / landmark-hull IoU: min {min(ious):.3f}, median {np.median(ious):.3f} over {len(ious)} '
        f'frames')
  print(json.dumps(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
