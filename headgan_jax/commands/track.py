"""headgan-track / python -m headgan_jax.tracking.track: track a face video or image, or learn a 3DMM from clips
(headgan_jax/tracking/track.py).

  python -m headgan_jax.tracking.track VIDEO_OR_IMAGE --out DIR [--save-track]   # DIR/report.json, overlay
  python -m headgan_jax.tracking.track learn CLIP... --out model.npz [--num-exp 40]

Exit status: 0 done; 2 bad flags or input, or the clip was rejected (one message, no traceback).
"""
from __future__ import annotations

import json
import os
import sys
from typing import Sequence

from absl import flags

from headgan_jax import commands, errors
from headgan_jax.commands import parsing

PROG = 'python -m headgan_jax.tracking.track'
DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), '..', '..', 'configs', 'paper.py')


def define_flags(learn: bool, data_free: str) -> flags.FlagValues:
  """The flags of `track` (learn=False) or of `track learn`."""
  fv = flags.FlagValues()
  if learn:
    flags.DEFINE_string('out', None, 'the model .npz to write', flag_values=fv)
    flags.DEFINE_integer('num-exp', 40, 'expression components to keep', flag_values=fv)
  else:
    flags.DEFINE_string('out', None, 'output folder', flag_values=fv)
    flags.DEFINE_bool('save-track', False, 'also write DIR/track.npz (the ClipTrack)', flag_values=fv)
  flags.DEFINE_string('config', DEFAULT_CONFIG, 'config file (its track and face3d fields)', flag_values=fv)
  flags.DEFINE_string('model', None, f'a 3DMM .npz, or {data_free!r} for the data-free model (sets '
                      'config.face3d.model; default: the learned model headgan_jax/tracking/learned_face_model.npz)',
                      flag_values=fv)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  from headgan_jax import config_files  # pylint: disable=import-outside-toplevel
  from headgan_jax.tracking import face_model, track  # pylint: disable=import-outside-toplevel
  learn = bool(argv) and argv[0] == 'learn'
  fv = define_flags(learn, face_model.DATA_FREE)
  try:
    if learn:
      description = 'Learn a 3DMM on the face detector\'s mesh from talking-head clips (one person per clip).'
      clips = parsing.parse(fv, argv[1:], description, f'{PROG} learn CLIP... --out model.npz',
                            positionals=('clip',),
                            more=True, required=('out',))
    else:
      description = 'Track a face video or image: report.json and an overlay (crop | landmarks | x_t).'
      (source,) = parsing.parse(fv, argv, description, f'{PROG} VIDEO_OR_IMAGE --out DIR',
                                positionals=('source',), required=('out',))
  except parsing.Exit as e:
    return e.code
  try:
    config = config_files.load(fv.config)
    if fv.model is not None:
      config.face3d.model = fv.model
    if learn:
      model = track.learn_command(clips, fv.out, config, fv['num-exp'].value)
      print(f'wrote {fv.out}: {model.num_id} identity and {model.num_exp} expression components')
      return 0
    data = track.run_command(source, fv.out, config, fv['save-track'].value)
  except errors.HeadGANError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  for note in data['notes']:
    print(f'note: {note}', file=sys.stderr)
  if data['rejected']:
    print(f'error: rejected: {data["rejected"]} (report in {os.path.join(fv.out, "report.json")})', file=sys.stderr)
    return 2
  print(json.dumps({k: data[k] for k in ('num_frames', 'num_tracked', 'fit_rms_px_median', 'crop_box', 'rejected')}))
  return 0


if __name__ == '__main__':
  sys.exit(commands.start('track'))
