"""headgan-evaluate / evaluate.py: a trained checkpoint under the paper's protocols (headgan_jax/evaluate.py).

  python evaluate.py --config W/config.json --workdir W --out W/eval.json [--checkpoint STEP]

Exit status: 0 written; 2 bad flags or input (one message, no traceback).
"""
from __future__ import annotations

import sys
from typing import Sequence

from absl import flags

from headgan_jax import commands
from headgan_jax.commands import parsing
from headgan_jax.errors import HeadGANError

USAGE = 'evaluate.py --workdir W [--config W/config.json] [--out W/eval.json] [--checkpoint STEP] ...'


def define_flags(track_size: int) -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_string('config', None, 'config.json of a run, or a config file path.py[:arg] (default '
                      'WORKDIR/config.json)', flag_values=fv)
  flags.DEFINE_string('workdir', None, 'the run\'s work folder (train.py --workdir)', flag_values=fv)
  flags.DEFINE_integer('checkpoint', None, 'checkpoint step (default: the latest)', flag_values=fv)
  flags.DEFINE_string('out', None, 'eval.json to write (default WORKDIR/eval.json)', flag_values=fv)
  flags.DEFINE_string('protocols', 'self,cross', 'comma-separated: self, cross', flag_values=fv)
  flags.DEFINE_integer('max_clips', 0, 'evaluate at most this many test clips (0 = all)', flag_values=fv)
  flags.DEFINE_integer('max_frames', 0, 'at most this many frames per clip (0 = all)', flag_values=fv)
  flags.DEFINE_integer('track_size', track_size, 'frames are upsampled to this size before tracking (AED / APD)',
                       flag_values=fv)
  flags.DEFINE_integer('seed', 0, 'seed of the cross-identity pairing', flag_values=fv)
  flags.DEFINE_bool('no_progress', False, 'no progress bar', flag_values=fv)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  from headgan_jax import evaluate  # pylint: disable=import-outside-toplevel
  fv = define_flags(evaluate.DEFAULT_TRACK_SIZE)
  try:
    parsing.parse(fv, argv, evaluate.__doc__, USAGE, required=('workdir',))
  except parsing.Exit as e:
    return e.code
  try:
    from headgan_jax import compilation_cache  # pylint: disable=import-outside-toplevel
    compilation_cache.enable()
    out, table = evaluate.run(fv.workdir, fv.config, fv.checkpoint, fv.out, fv.protocols, fv.max_clips,
                              fv.max_frames, fv.track_size, fv.seed, progress=not fv.no_progress)
  except HeadGANError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(table)
  print(f'\nwrote {out}')
  return 0


if __name__ == '__main__':
  sys.exit(commands.start('evaluate'))
