"""headgan-curves / python -m headgan_jax.train.curves: a run's loss curves as one PNG (headgan_jax/train/curves.py).

Exit status: 0 written; 2 bad flags, or no event files / no train/* scalars in WORKDIR (one message, no traceback).
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

from absl import flags

from headgan_jax import commands
from headgan_jax.commands import parsing
from headgan_jax.train import curves
from headgan_jax.train.metric_writer import read_events

USAGE = 'python -m headgan_jax.train.curves --workdir RUN --out docs/learning_curves.png [--smooth 25]'


def define_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_string('workdir', None, 'a train.py work folder (reads WORKDIR/tensorboard)', flag_values=fv)
  flags.DEFINE_string('out', None, 'the PNG to write', flag_values=fv)
  flags.DEFINE_integer('smooth', 25, 'moving-average window, in logged points', flag_values=fv)
  flags.DEFINE_string('title', '', 'a title over the panels', flag_values=fv)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  fv = define_flags()
  try:
    parsing.parse(fv, argv, curves.__doc__, USAGE, required=('workdir', 'out'))
  except parsing.Exit as e:
    return e.code
  logdir = os.path.join(fv.workdir, 'tensorboard')
  if not os.path.isdir(logdir):
    print(f'error: {logdir} does not exist (not a train.py work folder?)', file=sys.stderr)
    return 2
  try:
    drawn = curves.plot(read_events(logdir)['scalars'], fv.out, fv.smooth, fv.title)
  except ValueError as e:
    print(f'error: {logdir}: {e}', file=sys.stderr)
    return 2
  print(f'wrote {fv.out} ({len(drawn)} curves)')
  return 0


if __name__ == '__main__':
  sys.exit(commands.start('curves'))
