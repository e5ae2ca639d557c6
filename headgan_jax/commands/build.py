"""headgan-build / python -m headgan_jax.data.build: builds the demo set or VoxCeleb (headgan_jax/data/build.py).

Exit status: 0 built (or found built); 2 bad flags or input (one message, no traceback).
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Sequence

from absl import flags

from headgan_jax import commands, errors
from headgan_jax.commands import parsing
from headgan_jax.data import build

USAGE = 'python -m headgan_jax.data.build {demo,voxceleb} [--image_size N] [--data_dir DIR] ...'


def define_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_string('config', os.path.join(build.REPO, 'configs', 'paper.py'), 'config file', flag_values=fv)
  flags.DEFINE_integer('image_size', 0, 'crop size stored (default config.image_size)', flag_values=fv)
  flags.DEFINE_string('data_dir', None, 'TFDS data dir (default config.data.data_dir)', flag_values=fv)
  flags.DEFINE_string('cache_dir', None, 'per-clip cache (default <data_dir>/headgan_cache)', flag_values=fv)
  flags.DEFINE_string('clips_dir', None, 'demo: the folder of clips (default config.data.demo_dir)', flag_values=fv)
  flags.DEFINE_string('manual_dir', None, 'voxceleb: the mp4 tree', flag_values=fv)
  flags.DEFINE_string('beam_pipeline_options', '', 'voxceleb: comma-separated Beam options', flag_values=fv)
  flags.DEFINE_integer('direct_num_workers', 0, 'voxceleb, DirectRunner: processes', flag_values=fv)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  fv = define_flags()
  try:
    (dataset,) = parsing.parse(fv, argv, build.__doc__, USAGE, positionals=('dataset',),
                               choices={'dataset': sorted(build.NAMES)})
  except parsing.Exit as e:
    return e.code
  start = time.perf_counter()
  try:
    from headgan_jax import compilation_cache  # pylint: disable=import-outside-toplevel
    # ~/.cache/headgan-jax/xla or $HEADGAN_JAX_COMPILATION_CACHE, like the other entry points: the tracker's compiled
    # fits, for a re-run and for the main job's later stages (evaluate.py, reenact.py track clips too).
    compilation_cache.enable()
    from headgan_jax import config_files  # pylint: disable=import-outside-toplevel
    config = config_files.load(fv.config)
    if fv.data_dir is not None:
      config.data.data_dir = fv.data_dir
    if fv.cache_dir is not None:
      config.data.cache_dir = fv.cache_dir
    builder = build.build(build.NAMES[dataset], config, fv.image_size or None, fv.clips_dir, fv.manual_dir,
                          fv.beam_pipeline_options, fv.direct_num_workers)
  except errors.HeadGANError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  counts = builder.info.metadata.get('counts') or {}
  for split, c in sorted(counts.items()):
    print(f'{split}: ' + ', '.join(f'{k} {v}' for k, v in c.items()))
  print(f'written to {builder.data_dir}')
  print(json.dumps(dict(dataset=builder.info.full_name, data_dir=os.fspath(builder.data_dir), counts=counts,
                        seconds=round(time.perf_counter() - start, 1))))
  return 0


if __name__ == '__main__':
  sys.exit(commands.start('build'))
