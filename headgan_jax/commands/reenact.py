"""headgan-reenact / reenact.py: one image + a driving video -> a talking-head video with sound
(headgan_jax/reenact.py).

  python reenact.py --checkpoint WORKDIR --reference face.png --driving talk.mp4 --out out.mp4 [--audio speech.wav]
      [--side-by-side] [--batch 8]

Exit status: 0 written; 2 bad flags or input (one message, no traceback); 130 interrupted (nothing written).
"""
from __future__ import annotations

import json
import os
import sys
from typing import Sequence

from absl import flags

from headgan_jax import commands, errors
from headgan_jax.commands import parsing

USAGE = 'reenact.py --checkpoint W --reference IMG --driving VIDEO --out OUT.mp4 [--audio FILE] [--side-by-side]'


def define_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_string('checkpoint', None, 'training work folder (latest checkpoint) or one checkpoint folder '
                      '(WORKDIR/checkpoints/<step>)', flag_values=fv)
  flags.DEFINE_string('reference', None, 'image of the person to animate', flag_values=fv)
  flags.DEFINE_string('driving', None, 'driving video (pose, expression and, unless --audio, sound)', flag_values=fv)
  flags.DEFINE_string('out', None, 'output .mp4', flag_values=fv)
  flags.DEFINE_string('audio', None, 'drive the mouth and the sound from this audio (or video) file', flag_values=fv)
  flags.DEFINE_bool('side-by-side', False, 'write driving crop | x_t | generated', flag_values=fv)
  flags.DEFINE_integer('batch', 8, 'frames per G call', flag_values=fv)
  flags.DEFINE_string('side-by-side-out', None, 'also write the side-by-side video here (same pass)', flag_values=fv)
  flags.DEFINE_string('grid', None, 'also write an image grid here (.png): reference | driving | x_t | generated for '
                      '4 evenly spaced frames', flag_values=fv)
  flags.DEFINE_bool('no-progress', False, 'no progress bar', flag_values=fv)
  return fv


def check_inputs(reference: str, driving: str, audio: str | None) -> None:
  """VideoError naming the first input that is not a file (before anything is loaded)."""
  for path, what in ((reference, 'reference image'), (driving, 'driving video'), (audio, 'audio')):
    if path is not None and not os.path.isfile(path):
      raise errors.VideoError(f'{path}: ' + (f'is a folder, not a file (the {what}).' if os.path.isdir(path) else
                                             f'file not found (the {what}).'))


def main(argv: Sequence[str] | None = None) -> int:
  from headgan_jax import reenact  # pylint: disable=import-outside-toplevel
  fv = define_flags()
  try:
    parsing.parse(fv, argv, reenact.__doc__, USAGE, required=('checkpoint', 'reference', 'driving', 'out'))
  except parsing.Exit as e:
    return e.code
  from headgan_jax import compilation_cache  # pylint: disable=import-outside-toplevel
  compilation_cache.enable()
  try:
    check_inputs(fv.reference, fv.driving, fv.audio)
    reenact.check_out(fv.out, (fv.reference, fv.driving, fv.audio), create=False)  # Refusals before any work.
    summary = reenact.reenact(fv.checkpoint, fv.reference, fv.driving, fv.out, fv.audio, fv['side-by-side'].value,
                              fv.batch, not fv['no-progress'].value, side_by_side_out=fv['side-by-side-out'].value,
                              grid_out=fv.grid)
  except errors.HeadGANError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print('interrupted: no output written.', file=sys.stderr)
    return 130
  print(reenact.describe(summary), file=sys.stderr)
  print(json.dumps(summary.to_json()))
  return 0


if __name__ == '__main__':
  sys.exit(commands.start('reenact'))
