"""Regenerates the tracker's default 3DMM, headgan_jax/tracking/learned_face_model.npz, and its record (.json).

  .venv/bin/python scripts/learn_face_model.py [--fixtures ../shared/fixtures] [--out headgan_jax/tracking/...npz]

Learned on the face detector's 468-point mesh (`face_model.learn_model`: Procrustes, PCA of per-clip means =
identity, of per-frame deviations = expression, 40 kept) from the clips of ../shared/fixtures/extra/ (one person
each) whose licence, as extra/README.md lists it, allows redistribution of derived data (every one but the
non-commercial clip), less the demo set's held-out people (`building.DEMO_HELD_OUT`): the model has never seen the
people it is evaluated on. Per clip FRAMES_PER_CLIP frames evenly spread over the whole clip are located (detector +
468 points, the tracker's crop). The .npz is written byte-reproducibly (fixed zip times, sorted arrays), so the
same detector results give the same sha256; the .json beside it lists the clips with their source and licence
(attribution), the settings and that sha256 (tests/test_learned_face_model.py checks both against this script's
selection). Prints one JSON line. Takes about a minute on 2 CPU cores (56 s measured).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import sys
import zipfile

import numpy as np


from headgan_jax import errors  # noqa: E402
from headgan_jax.files import write_atomic  # noqa: E402
from headgan_jax.data import building  # noqa: E402
from headgan_jax.tracking import face_model  # noqa: E402
from headgan_jax.face3d import morphable  # noqa: E402

FRAMES_PER_CLIP = 120
NUM_EXP = 40
IMAGE_SIZE = 256  # Crop size the points are measured at (the model's scale is normalised by Procrustes anyway).


def extra_clip_table(fixtures: str) -> list[dict[str, str]]:
  """Rows (file, identity, source, licence) of extra/README.md's clip table."""
  path = os.path.join(fixtures, 'extra', 'README.md')
  try:
    text = open(path, encoding='utf-8').read()
  except OSError as e:
    raise errors.DatasetError(f'{path}: cannot read the extra clips\' list: {e}') from e
  rows = []
  for line in text.splitlines():
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if len(cells) >= 4 and cells[0].endswith('.mp4'):
      rows.append(dict(file=cells[0], identity=cells[1], source=cells[2], licence=cells[3]))
  if not rows:
    raise errors.DatasetError(f'{path}: no clip table (| file.mp4 | identity | source | licence | ...).')
  return rows


def learning_clips(fixtures: str) -> list[dict[str, str]]:
  """The clips the model is learned from (sorted by file): extra/ rows whose licence is not non-commercial and
  whose person is not held out of the demo set."""
  held = set(building.DEMO_HELD_OUT)
  keep = [r for r in extra_clip_table(fixtures)
          if not re.search(r'non-commercial|\bNC\b', r['licence'], re.I) and os.path.splitext(r['file'])[0] not in held]
  return sorted(keep, key=lambda r: r['file'])


def located_points(tracker, path: str, frames_per_clip: int, name: str) -> tuple[np.ndarray | None, str]:
  """((n, 468, 3) crop-pixel points of the usable ones of `frames_per_clip` frames evenly spread over the clip, '')
  or (None, why) for a clip the tracker rejects (the face moves too far, leaves the frame...). `name`: the clip in
  messages (not the path, so the record does not depend on where the fixtures are)."""
  from headgan_jax.tracking import video as video_lib
  total = video_lib.video_info(path).num_frames
  picks = set(np.linspace(0, total - 1, min(frames_per_clip, total)).round().astype(int).tolist())
  kept, t = [], 0
  for chunk in video_lib.iter_frames(path):
    kept += [f for i, f in enumerate(chunk, t) if i in picks]
    t += len(chunk)
  loc = tracker.locate(np.stack(kept), name)
  if loc.rejected:
    return None, loc.rejected
  usable = loc.found & (loc.presence >= tracker.config.track.min_presence)
  if usable.sum() < 2:
    return None, f'{name}: {int(usable.sum())} usable frames of {len(usable)}'
  return loc.points[usable], ''


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
  """An .npz whose bytes depend on the arrays only (sorted names, fixed zip times, no compression)."""
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, 'w', zipfile.ZIP_STORED) as z:
    for name in sorted(arrays):
      one = io.BytesIO()
      np.lib.format.write_array(one, np.ascontiguousarray(arrays[name]), allow_pickle=False)
      z.writestr(zipfile.ZipInfo(f'{name}.npy', date_time=(1980, 1, 1, 0, 0, 0)), one.getvalue())
  return buf.getvalue()


def main(argv=None) -> int:
  here = os.path.dirname(os.path.abspath(__file__))
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--fixtures', default=os.path.join(here, '..', '..', 'shared', 'fixtures'))
  parser.add_argument('--out', default=face_model.LEARNED_MODEL, help='the .npz (the .json is written beside it)')
  parser.add_argument('--frames-per-clip', type=int, default=FRAMES_PER_CLIP)
  args = parser.parse_args(argv)
  from configs import paper
  from headgan_jax.tracking import facemesh as fm
  from headgan_jax.tracking import track
  try:
    clips = learning_clips(args.fixtures)
    config = paper.get_config()
    config.image_size = IMAGE_SIZE
    config.face3d.model = face_model.DATA_FREE  # Only the detector is used; no learned model needed to learn one.
    tracker = track.Tracker(config)
    points, used, skipped = [], [], []
    for row in clips:
      name = f'extra/{row["file"]}'
      p, why = located_points(tracker, os.path.join(args.fixtures, name), args.frames_per_clip, name)
      print(f'{row["file"]}: ' + (f'{len(p)} frames' if p is not None else f'skipped: {why}'), file=sys.stderr)
      if p is None:
        skipped.append(dict(file=row['file'], reason=why))
      else:
        points.append(p)
        used.append(dict(row, frames=int(len(p))))
    model = face_model.learn_model(points, fm.load_topology(), num_exp=NUM_EXP, frames_per_clip=args.frames_per_clip)
  except errors.HeadGANError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  data = npz_bytes(morphable.validate_arrays(morphable.to_arrays(model), args.out))
  digest = hashlib.sha256(data).hexdigest()
  info = dict(
      sha256=digest, num_id=model.num_id, num_exp=model.num_exp, frames_per_clip=args.frames_per_clip,
      image_size=IMAGE_SIZE, held_out_not_used=list(building.DEMO_HELD_OUT),
      command='.venv/bin/python scripts/learn_face_model.py',
      note=('PCA of the face detector\'s 3-D landmarks (no images) of the clips below, from '
            '../shared/fixtures/extra/ (extra/README.md gives each clip\'s source and licence; the people shown keep '
            'their own rights). Non-commercial clips and the demo set\'s held-out people are not used.'),
      clips=used, skipped=skipped)
  write_atomic(args.out, data)
  write_atomic(os.path.splitext(args.out)[0] + '.json', (json.dumps(info, indent=1) + '\n').encode())
  print(json.dumps(dict(out=args.out, sha256=digest, clips=len(used), skipped=len(skipped), num_id=model.num_id,
                        num_exp=model.num_exp, bytes=len(data))))
  return 0


if __name__ == '__main__':
  sys.exit(main())
