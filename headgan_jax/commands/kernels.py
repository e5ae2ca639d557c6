"""headgan-kernels / python -m headgan_jax.kernels.onednn {build [--force] | status}: compile the oneDNN convolution
kernels once per machine (scripts/setup.sh), or say whether they load (headgan_jax/kernels/onednn.py).

Exit status: 0 built / available; 1 the build failed / not available; 2 bad command line.
"""
from __future__ import annotations

import sys
from typing import Sequence

from absl import flags

from headgan_jax import commands
from headgan_jax.commands import parsing
from headgan_jax.kernels import onednn

USAGE = 'python -m headgan_jax.kernels.onednn {build [--force] | status}'


def define_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_bool('force', False, 'build: compile again even when the kernels are built', flag_values=fv)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  fv = define_flags()
  try:
    (command,) = parsing.parse(fv, argv, onednn.__doc__, USAGE, positionals=('command',),
                               choices={'command': ('build', 'status')})
  except parsing.Exit as e:
    return e.code
  if command == 'build':
    try:
      path = onednn.build(force=fv.force)
    except onednn.BuildError as e:
      print(f'error: {e}', file=sys.stderr)
      return 1
    print(path)
    return 0
  reason = onednn.unavailable_reason()
  print('available' if reason is None else f'not available: {reason}')
  return 0 if reason is None else 1


if __name__ == '__main__':
  sys.exit(commands.start('kernels'))
