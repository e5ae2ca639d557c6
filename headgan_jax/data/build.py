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

import importlib.util
import os
import shutil
import sys

from headgan_jax import errors

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


if __name__ == '__main__':  # The command moved (headgan_jax/commands/build.py); this spelling still runs it.
  import runpy
  runpy.run_module('headgan_jax.commands.build', run_name='__main__', alter_sys=True)
