"""headgan-facemesh / python -m headgan_jax.tracking.facemesh fetch: get the face models' files
(headgan_jax/tracking/facemesh.py).

Exit status: 0 the files are in place; 2 bad flags, or they could not be had (one message, no traceback).
"""
from __future__ import annotations

import sys
from typing import Sequence

from absl import flags

from headgan_jax import commands
from headgan_jax.commands import parsing
from headgan_jax.errors import HeadGANError
from headgan_jax.tracking import facemesh

USAGE = 'python -m headgan_jax.tracking.facemesh fetch [--dir DIR] [--wheel FILE]'


def define_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_string('dir', '', f'models folder (default {facemesh.DEFAULT_MODELS_DIR})', flag_values=fv)
  flags.DEFINE_string('wheel', '', 'use this mediapipe wheel file instead of downloading it', flag_values=fv)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  fv = define_flags()
  description = (f'Get the model files of mediapipe {facemesh.MEDIAPIPE_VERSION} (Apache-2.0). fetch: download '
                 '(pip) or copy the model files into the models folder.')
  try:
    parsing.parse(fv, argv, description, USAGE, positionals=('command',), choices={'command': ('fetch',)})
  except parsing.Exit as e:
    return e.code
  try:
    folder = facemesh.fetch(fv.dir, fv.wheel)
  except HeadGANError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'MediaPipe {facemesh.MEDIAPIPE_VERSION} model files in {folder}')
  return 0


if __name__ == '__main__':
  sys.exit(commands.start('facemesh'))
