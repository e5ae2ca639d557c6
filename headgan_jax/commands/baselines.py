"""headgan-baselines / python -m headgan_jax.train.baselines: did the model learn? The face L1 of a trained run
against the untrained model and two trivial baselines (headgan_jax/train/baselines.py).

Exit status: 0 done; 2 bad flags or input (one message, no traceback).
"""
from __future__ import annotations

import json
import sys
from typing import Sequence

from absl import flags

from headgan_jax import commands
from headgan_jax.commands import parsing
from headgan_jax.errors import HeadGANError

USAGE = 'python -m headgan_jax.train.baselines --workdir RUN [--identities seen|unseen|all] [--grid docs/grid.png]'


def define_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_string('workdir', None, 'the work folder of a train.py run', flag_values=fv)
  flags.DEFINE_integer('step', None, 'checkpoint step (default: the latest)', flag_values=fv)
  flags.DEFINE_enum('identities', 'seen', ('seen', 'unseen', 'all'), "held-out frames of the training identities "
                    "('seen', default), the others, or all", flag_values=fv)
  flags.DEFINE_enum('reference', None, ('middle', 'first', 'clip_start'), "each frame's reference (default: the "
                    "run's config.data.test_reference, 'middle'): the middle of its video's pose-sorted reference "
                    "set (the authors'), its held-out record's first frame, or its clip's first frame",
                    flag_values=fv)
  flags.DEFINE_string('grid', '', 'write an image grid of held-out frames to this .png', flag_values=fv)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  from headgan_jax.train import baselines  # pylint: disable=import-outside-toplevel
  fv = define_flags()
  try:
    parsing.parse(fv, argv, baselines.__doc__, USAGE, required=('workdir',))
  except parsing.Exit as e:
    return e.code
  try:
    r = baselines.evaluate_workdir(fv.workdir, fv.step, fv.identities, fv.grid or None, fv.reference)
  except HeadGANError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f"face L1 on {r['frames']} held-out frames ({r['identities']} identities, reference: {r['reference']}) of "
        f"{r['source']}, step {r['step']} (mean |. - y_t| over face pixels, images in [-1, 1]; lower is better):")
  for name in baselines.BASELINES:
    print(f'  {name:17s} {r[name]:.4f}')
  learned = all(r['trained'] < r[name] for name in baselines.BASELINES[1:])
  print('the trained model beats ' + ('all three baselines' if learned else 'NOT all baselines'))
  print(json.dumps(r))
  return 0


if __name__ == '__main__':
  sys.exit(commands.start('baselines'))
