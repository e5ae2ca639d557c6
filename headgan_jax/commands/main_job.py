"""headgan-main-job / python -m headgan_jax.main_job: the whole system on the demo clips in one command
(headgan_jax/main_job.py).

Exit status: 0 done; 2 bad flags, a stage failed, or WORKDIR is in use by another run.
"""
from __future__ import annotations

import sys
from typing import Sequence

from absl import flags

from headgan_jax import commands, main_job
from headgan_jax.commands import parsing

USAGE = 'python -m headgan_jax.main_job --workdir WORKDIR [--steps N] [--data_dir DIR] [--config FILE]'


def define_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_string('workdir', None, 'where everything is written (checkpoints, eval.json, mp4s)', flag_values=fv)
  flags.DEFINE_string('config', main_job.DEFAULT_CONFIG, 'the training config (default configs/demo.py)',
                      flag_values=fv)
  flags.DEFINE_string('data_dir', None, 'TFDS data dir of the demo set (default WORKDIR/tfds)', flag_values=fv)
  flags.DEFINE_string('clips_dir', None, 'demo clips folder to build from (default config.data.demo_dir: '
                      '../shared/fixtures)', flag_values=fv)
  flags.DEFINE_integer('steps', 0, 'train steps (default: the config\'s)', flag_values=fv)
  flags.DEFINE_string('reference', None, 'default ../shared/fixtures/reference.png', flag_values=fv)
  flags.DEFINE_string('driving', None, 'default: the held-out demo clip (<demo_dir>/demo/<id>.mp4)', flag_values=fv)
  flags.DEFINE_integer('batch', 8, 'reenactment: frames per G call', flag_values=fv)
  flags.DEFINE_integer('eval_max_frames', 32, 'evaluate.py --max_frames: frames per test clip (default 32, two FVD '
                       'clips each, to keep the main job within its time on 2 CPU cores; 0 = every frame)',
                       flag_values=fv)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  fv = define_flags()
  try:
    parsing.parse(fv, argv, main_job.__doc__, USAGE, required=('workdir',))
  except parsing.Exit as e:
    return e.code
  return main_job.run_job(fv.workdir, fv.config, fv.data_dir, fv.clips_dir, fv.steps, fv.reference, fv.driving,
                          fv.batch, fv.eval_max_frames)


if __name__ == '__main__':
  sys.exit(commands.start('main_job'))
