"""Trains HeadGAN (G, D and D_m) with the data-parallel step of headgan_jax/train/step.py.

  python train.py --config configs/tiny.py --workdir /tmp/headgan --steps 20 --synthetic

Data: the real input pipeline (preprocessed VoxCeleb clips) does not exist yet, so only --synthetic is supported:
batches from headgan_jax.train.data.synthetic_batch, derived from the step number (a restarted run sees exactly the
batches an uninterrupted one would have). Checkpoints: orbax CheckpointManager under WORKDIR/checkpoints, every
config.train.checkpoint_every steps and at the last step, keeping config.train.keep_checkpoints; a restarted run
resumes from the latest one. With config.loss.use_vgg True the run refuses to start unless config.loss.vgg_weights
names torchvision's VGG19 file. Exit status: 0 done, 2 bad configuration or input (message, no traceback).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import pathlib
import sys
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tqdm

from headgan_jax import compilation_cache
from headgan_jax.errors import ConfigError, HeadGANError
from headgan_jax.nn import vgg as vgg_lib
from headgan_jax.train import data, state as state_lib, step as step_lib

CHECKPOINT_DIR = 'checkpoints'


@dataclasses.dataclass
class Trainer:
  """Everything a run needs that does not change while it trains: networks, optimisers, mesh, compiled step.

  Build once with `Trainer.create(config)`; `run(workdir, num_steps)` may then be called for several work
  folders (each run reads its starting point from its own checkpoints only).
  """
  config: ml_collections.ConfigDict
  models: state_lib.Models
  optimizers: state_lib.Optimizers
  mesh: jax.sharding.Mesh
  train_step: step_lib.StepFn
  vgg_params: Any
  init_key: jax.Array
  data_key: jax.Array
  batch_fn: Any  # jitted key -> sharded synthetic Batch.
  init_fn: Any  # jitted key -> replicated fresh TrainState.

  @classmethod
  def create(cls, config: ml_collections.ConfigDict, devices=None, init_key: jax.Array | None = None) -> 'Trainer':
    """Checks the config (VGG weights first: refusing early costs nothing) and builds the step."""
    vgg = vgg_lib.vgg19_from_config(config)  # ConfigError / WeightFileError when VGG is on and unusable.
    mesh = step_lib.make_mesh(devices)
    if config.train.batch_size % mesh.devices.size:
      raise ConfigError(f'config.train.batch_size = {config.train.batch_size} is not a multiple of the '
                        f'{mesh.devices.size} devices')
    models = state_lib.make_models(config)
    optimizers = state_lib.make_optimizers(config)
    vgg_apply, vgg_params = vgg if vgg is not None else (None, None)
    if vgg_params is not None:
      vgg_params = jax.device_put(vgg_params, step_lib.replicated(mesh))
    train_step = step_lib.make_train_step(config, models, optimizers, mesh, vgg_apply)
    root = jax.random.key(config.seed)
    k_init, k_data = jax.random.split(root)
    batch_fn = jax.jit(lambda key: data.synthetic_batch(key, config), out_shardings=step_lib.batch_sharding(mesh))
    init_fn = jax.jit(lambda key: state_lib.init_state(key, config, models, optimizers),
                      out_shardings=step_lib.replicated(mesh), compiler_options=state_lib.INIT_COMPILER_OPTIONS)
    return cls(config, models, optimizers, mesh, train_step, vgg_params,
               k_init if init_key is None else init_key, k_data, batch_fn, init_fn)

  def init_state(self) -> state_lib.TrainState:
    return self.init_fn(self.init_key)

  def batch(self, step: int) -> data.Batch:
    """The synthetic global batch of train step `step` (a pure function of the config's seed and the step)."""
    return self.batch_fn(jax.random.fold_in(self.data_key, step))

  def checkpoint_manager(self, workdir: str | os.PathLike) -> ocp.CheckpointManager:
    t = self.config.train
    # No save_interval_steps: orbax would also save the first step of a fresh run; `run` decides when to save.
    options = ocp.CheckpointManagerOptions(max_to_keep=t.keep_checkpoints, create=True)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(os.fspath(workdir), CHECKPOINT_DIR)), options=options)

  def restore_or_init(self, manager: ocp.CheckpointManager) -> state_lib.TrainState:
    """The latest checkpoint's state (replicated over the mesh), or a fresh one when there is none."""
    latest = manager.latest_step()
    if latest is None:
      return self.init_state()
    abstract = jax.eval_shape(
        lambda k: state_lib.init_state(k, self.config, self.models, self.optimizers), self.init_key)
    sharding = step_lib.replicated(self.mesh)
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), abstract)
    return manager.restore(latest, args=ocp.args.StandardRestore(abstract))

  def run(self, workdir: str | os.PathLike, num_steps: int, progress: bool = True) -> state_lib.TrainState:
    """Trains until `num_steps` steps are done in total, resuming from `workdir`'s latest checkpoint."""
    if num_steps < 0:
      raise ConfigError(f'--steps = {num_steps} must be >= 0')
    if self.config.train.checkpoint_every < 1 or self.config.train.keep_checkpoints < 1:
      raise ConfigError(f'config.train.checkpoint_every = {self.config.train.checkpoint_every} and '
                        f'keep_checkpoints = {self.config.train.keep_checkpoints} must both be >= 1')
    with self.checkpoint_manager(workdir) as manager:
      state = self.restore_or_init(manager)
      start = int(state.step)
      if start > num_steps:
        raise ConfigError(f'{workdir} holds a checkpoint at step {start}, beyond the requested {num_steps} steps')
      bar = tqdm.tqdm(total=num_steps, initial=start, unit='step', disable=not progress, dynamic_ncols=True)
      metrics = None
      for step in range(start, num_steps):
        state, metrics = self.train_step(state, self.batch(step), self.vgg_params)
        done = step + 1
        if done % self.config.train.log_every == 0 or done == num_steps:
          values = {k: float(v) for k, v in metrics.items()}
          bad = [k for k, v in values.items() if not np.isfinite(v)]
          if bad:  # Never train on silently: a NaN here poisons every later step and checkpoint.
            raise FloatingPointError(f'step {done}: non-finite loss terms {bad}')
          bar.set_postfix(g=f"{values['g_total']:.3f}", l1=f"{values['g_l1']:.4f}", d=f"{values['d_total']:.3f}")
        if done % self.config.train.checkpoint_every == 0 or done == num_steps:
          manager.save(done, args=ocp.args.StandardSave(state))
        bar.update(1)
      bar.close()
      manager.wait_until_finished()
    return state


def load_config(path: str) -> ml_collections.ConfigDict:
  """get_config() of a config file (configs/paper.py, configs/tiny.py, ...)."""
  if not os.path.isfile(path):
    raise ConfigError(f'config file {path} does not exist')
  spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise ConfigError(f'config file {path} has no get_config()')
  return module.get_config()


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', required=True, help='config file with get_config(), e.g. configs/tiny.py')
  parser.add_argument('--workdir', default='', help='checkpoints go to WORKDIR/checkpoints '
                      '(default config.train.workdir)')
  parser.add_argument('--steps', type=int, default=0, help='total train steps (default: (epochs + decay_epochs) '
                      'x steps_per_epoch of the config)')
  parser.add_argument('--synthetic', action='store_true', help='train on synthetic batches (required for now: '
                      'the real data pipeline does not exist yet)')
  parser.add_argument('--no-progress', action='store_true', help='no progress bar')
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  compilation_cache.enable()  # ~/.cache/headgan-jax/xla or $HEADGAN_JAX_COMPILATION_CACHE ('off': none).
  try:
    config = load_config(args.config)
    if not args.synthetic:
      raise ConfigError('only --synthetic training is available: the real data pipeline does not exist yet')
    t = config.train
    num_steps = args.steps or int((t.epochs + t.decay_epochs) * t.steps_per_epoch)
    trainer = Trainer.create(config)
    start = time.perf_counter()
    state = trainer.run(args.workdir or t.workdir, num_steps, progress=not args.no_progress)
    print(f'done: step {int(state.step)} in {time.perf_counter() - start:.1f} s, checkpoints in '
          f'{os.path.join(args.workdir or t.workdir, CHECKPOINT_DIR)}')
  except HeadGANError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
