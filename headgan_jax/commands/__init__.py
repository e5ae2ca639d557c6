"""The project's commands, in one place: each module here holds one command's flags (absl.flags, on its own
FlagValues, parsed by parsing.parse) and a thin `main(argv) -> int` that calls the library.

This package is the top layer: it may import anything, nothing else in headgan_jax imports it (a library module whose
command moved here keeps a one-line `runpy` forwarder under `if __name__ == '__main__':`). Run a command as
`python -m headgan_jax.commands.<module>`, through its old spelling (train.py, python -m headgan_jax.data.build, ...),
or as the console script pyproject.toml installs (headgan-<name>, all of them this module's `launch`).
"""
from __future__ import annotations

import importlib
import os
import sys
from headgan_jax import host_malloc

# Console script name (headgan-<name>) -> the module in this package holding its main().
COMMANDS = {
    'train': 'train',
    'evaluate': 'evaluate',
    'reenact': 'reenact',
    'main-job': 'main_job',
    'track': 'track',
    'facemesh': 'facemesh',
    'build': 'build',
    'baselines': 'baselines',
    'curves': 'curves',
    'summary': 'summary',
    'convert': 'convert',
    'kernels': 'kernels',
}


def start(module: str) -> int:
  """main() of headgan_jax.commands.<module>, after re-executing this process with tcmalloc preloaded (host_malloc.py:
  first, since it may start the command again; the command is imported only after)."""
  host_malloc.reexec_with_tcmalloc()
  return importlib.import_module(f'headgan_jax.commands.{module}').main()


def launch() -> int:
  """The console scripts' entry point: the command named by the script's file name (headgan-train -> train)."""
  name = os.path.basename(sys.argv[0]).removesuffix('.exe').removeprefix('headgan-')
  if name not in COMMANDS:
    print(f'error: {sys.argv[0]!r} is not one of the commands: ' + ', '.join(f'headgan-{n}' for n in COMMANDS),
          file=sys.stderr)
    return 2
  return start(COMMANDS[name])
