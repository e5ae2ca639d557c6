"""headgan-summary / python -m headgan_jax.nn.summary: layer output shapes and parameter counts of G (F, R), D and
D_m, shapes only (headgan_jax/nn/summary.py).

Exit status: 0 printed; 2 bad flags or config (one message, no traceback).
"""
from __future__ import annotations

import sys
from typing import Sequence

from absl import flags

from headgan_jax import commands, config_files, errors
from headgan_jax.commands import parsing

USAGE = 'python -m headgan_jax.nn.summary --config configs/paper.py [--depth 2] [--batch 1]'


def define_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_string('config', 'configs/paper.py', 'config file path.py[:arg] or a saved config.json',
                      flag_values=fv)
  flags.DEFINE_integer('depth', 3, 'module nesting depth shown in the tables', flag_values=fv)
  flags.DEFINE_integer('batch', 1, 'batch size of the inputs', flag_values=fv)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  from headgan_jax.nn import summary  # pylint: disable=import-outside-toplevel
  fv = define_flags()
  try:
    parsing.parse(fv, argv, summary.__doc__, USAGE)
  except parsing.Exit as e:
    return e.code
  try:
    config = config_files.load(fv.config)
    g, v_g, inputs = summary.generator_variables(config, fv.batch)
    print(summary.format_table(f'G (input x_drive {inputs[0].shape}, y_ref/x_ref {inputs[1].shape}, audio '
                               f'{inputs[3].shape})', summary.layer_shapes(g, v_g, *inputs, depth=fv.depth)))
    for name, (mod, v, x) in zip(('D', 'D_m'), summary.discriminator_variables(config, fv.batch)):
      print(summary.format_table(f'{name} (input {x.shape})', summary.layer_shapes(mod, v, x, depth=fv.depth)))
    counts = summary.parameter_counts(config)
    comparison = summary.format_comparison(config)
  except errors.HeadGANError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print('== parameter counts')
  for k, n in counts.items():
    print(f'{k:<4} {n:>12,d}  ({n / 1e6:.2f} M)')
  print(comparison)
  return 0


if __name__ == '__main__':
  sys.exit(commands.start('summary'))
