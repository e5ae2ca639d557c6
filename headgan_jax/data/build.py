"""Builds the demo set or VoxCeleb as TFDS ArrayRecord datasets (the builders are in datasets/).

  python -m headgan_jax.data.build demo --image_size 64 --data_dir DIR             # ../shared/fixtures, in-process
  python -m headgan_jax.data.build voxceleb --manual_dir ~/vox2 --data_dir DIR     # Beam DirectRunner, 2 workers
  python -m headgan_jax.data.build voxceleb --manual_dir gs://B/vox2 --data_dir gs://B/tfds \\
      --beam_pipeline_options="runner=DataflowRunner,project=P,region=R,temp_location=gs://B/tmp,\\
      requirements_file=requirements.txt,setup_file=./setup.py"                    # a cluster (see README)

Prints the one-screen summary (also in DIR/<name>/<size>px/2.1.0/summary.txt, beside report.jsonl) and the counts
per split, and ends with one JSON line. A build that was killed starts again where it stopped (per-clip cache).
Exit status 2 with a message on bad input.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
from typing import Sequence

from headgan_jax import errors, host_malloc

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMES = {'demo': 'headgan_demo', 'voxceleb': 'headgan_voxceleb'}


def builder_class(name: str):
  """The `Builder` class of datasets/<name>/<name>_dataset_builder.py (imported once; TFDS registers it)."""
  module_name = f'{name}_dataset_builder'  # TFDS names the builder after this module ('<name>_dataset_builder').
  if module_name not in sys.modules:
    path = os.path.join(REPO, 'datasets', name, f'{name}_dataset_builder.py')
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
  return sys.modules[module_name].Builder


def data_dir_of(config) -> str:
  import tensorflow_datasets as tfds
  return os.path.abspath(os.path.expanduser(config.data.data_dir)) if config.data.data_dir else os.fspath(
      tfds.core.constants.DATA_DIR)


def make_builder(name: str, config, image_size: int | None = None, **kwargs):
  """The builder of dataset `name` ('headgan_demo' / 'headgan_voxceleb') at crop size image_size (default
  config.image_size), with the project config."""
  size = int(image_size or config.image_size)
  return builder_class(name)(config=f'{size}px', data_dir=data_dir_of(config), project_config=config,
                             cache_dir=config.data.cache_dir or None, **kwargs)


def remove_stale(builder) -> None:
  """Removes the half-written `incomplete.*` folders a killed build leaves (the per-clip cache is what is kept)."""
  parent = os.path.dirname(os.fspath(builder.data_path))
  if os.path.isdir(parent):
    for n in os.listdir(parent):
      if n.startswith('incomplete.'):
        shutil.rmtree(os.path.join(parent, n), ignore_errors=True)


def build(name: str, config, image_size: int | None = None, clips_dir: str | None = None,
          manual_dir: str | None = None, beam_options: str = '', direct_num_workers: int = 0):
  """Builds (or finds built) dataset `name`; returns the builder."""
  import tensorflow_datasets as tfds
  kwargs = {'clips_dir': clips_dir} if name == 'headgan_demo' else {}
  builder = make_builder(name, config, image_size, **kwargs)
  download_config = tfds.download.DownloadConfig()
  if name == 'headgan_voxceleb':
    from apache_beam.options.pipeline_options import PipelineOptions
    manual = manual_dir or config.data.manual_dir
    if not manual:
      raise errors.DatasetError('headgan_voxceleb needs the VoxCeleb mp4 tree: --manual_dir or '
                                'config.data.manual_dir.')
    from etils import epath
    if not epath.Path(manual).is_dir():
      raise errors.DatasetError(f'{manual}: the VoxCeleb folder (--manual_dir) does not exist.')
    flags = [f'--{o}' for o in beam_options.split(',') if o] if beam_options else []
    if not beam_options:
      flags = ['--runner=DirectRunner']
      if direct_num_workers:
        flags += [f'--direct_num_workers={direct_num_workers}', '--direct_running_mode=multi_processing']
    download_config = tfds.download.DownloadConfig(manual_dir=manual, beam_options=PipelineOptions(flags))
  remove_stale(builder)
  builder.download_and_prepare(download_config=download_config)
  return builder


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m headgan_jax.data.build', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('dataset', choices=sorted(NAMES))
  parser.add_argument('--config', default=os.path.join(REPO, 'configs', 'paper.py'))
  parser.add_argument('--image_size', type=int, default=0, help='crop size stored (default config.image_size)')
  parser.add_argument('--data_dir', default=None, help='TFDS data dir (default config.data.data_dir)')
  parser.add_argument('--cache_dir', default=None, help='per-clip cache (default <data_dir>/headgan_cache)')
  parser.add_argument('--clips_dir', default=None, help='demo: the folder of clips (default config.data.demo_dir)')
  parser.add_argument('--manual_dir', default=None, help='voxceleb: the mp4 tree')
  parser.add_argument('--beam_pipeline_options', default='', help='voxceleb: comma-separated Beam options')
  parser.add_argument('--direct_num_workers', type=int, default=0, help='voxceleb, DirectRunner: processes')
  args = parser.parse_args(argv)
  start = time.perf_counter()
  try:
    from headgan_jax import compilation_cache
    # ~/.cache/headgan-jax/xla or $HEADGAN_JAX_COMPILATION_CACHE, like the other entry points: the tracker's compiled
    # fits, for a re-run and for the main job's later stages (evaluate.py, reenact.py track clips too).
    compilation_cache.enable()
    from headgan_jax import config_files
    config = config_files.load(args.config)
    if args.data_dir is not None:
      config.data.data_dir = args.data_dir
    if args.cache_dir is not None:
      config.data.cache_dir = args.cache_dir
    builder = build(NAMES[args.dataset], config, args.image_size or None, args.clips_dir, args.manual_dir,
                    args.beam_pipeline_options, args.direct_num_workers)
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
  host_malloc.reexec_with_tcmalloc()  # First: it may start this command again (headgan_jax/host_malloc.py).
  sys.exit(main())
