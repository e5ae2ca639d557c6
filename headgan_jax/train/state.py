"""The train state of HeadGAN: parameters, spectral-norm statistics and Adam states of G, D and D_m.

The state is a pytree of arrays only (so orbax can checkpoint it and jit can shard it); the networks and optimisers
are rebuilt from the config by `make_models` / `make_optimizers`. D_m is absent (empty dicts) when
config.model.use_audio is False, as in the "w/o audio" ablation of Table 1.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from headgan_jax.errors import ConfigError
from headgan_jax.train import data

PyTree = Any

# Compile options for the jitted `init_state`: LLVM at -O1. The init runs once, and XLA:CPU spends nearly all of its
# start-up compiling it (every parameter's random draw and every spectral-norm power iteration is its own kernel):
# -O1 compiles it about twice as fast as the default -O2 and draws the same numbers (bench/train_step.py --startup).
INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 1}


class Models(NamedTuple):
  """The three networks; `mouth_disc` is None when config.model.use_audio is False."""
  generator: nn.Module
  disc: nn.Module
  mouth_disc: nn.Module | None


class Optimizers(NamedTuple):
  generator: optax.GradientTransformation
  disc: optax.GradientTransformation
  mouth_disc: optax.GradientTransformation


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training. Params are float32 whatever the compute dtype."""
  step: jax.Array  # int32 scalar: number of completed train steps.
  g_params: PyTree
  g_stats: PyTree  # 'batch_stats' (spectral-norm power iteration vectors u) of G.
  g_opt: PyTree
  d_params: PyTree
  d_stats: PyTree
  d_opt: PyTree
  dm_params: PyTree
  dm_stats: PyTree
  dm_opt: PyTree


def make_models(config: ml_collections.ConfigDict) -> Models:
  """G, D and D_m from the config (D_m None without audio)."""
  # Imported here so that the data / schedule parts of this module load without the networks.
  from headgan_jax.nn.discriminator import make_discriminators  # pylint: disable=import-outside-toplevel
  from headgan_jax.nn.generator import make_generator  # pylint: disable=import-outside-toplevel
  disc, mouth_disc = make_discriminators(config)
  return Models(make_generator(config), disc, mouth_disc if config.model.use_audio else None)


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """config.train.lr for `epochs` epochs, then linear decay to 0 over `decay_epochs` (steps_per_epoch each)."""
  t = config.train
  for name in ('epochs', 'decay_epochs', 'steps_per_epoch'):
    if t[name] < 0 or (name == 'steps_per_epoch' and t[name] <= 0):
      raise ConfigError(f'config.train.{name} = {t[name]} must be positive')
  if t.lr <= 0:
    raise ConfigError(f'config.train.lr = {t.lr} must be positive')
  constant_steps = int(t.epochs * t.steps_per_epoch)
  decay_steps = int(t.decay_epochs * t.steps_per_epoch)
  if decay_steps == 0:
    return optax.constant_schedule(t.lr)
  return optax.linear_schedule(t.lr, 0.0, transition_steps=decay_steps, transition_begin=constant_steps)


def make_optimizers(config: ml_collections.ConfigDict) -> Optimizers:
  """Adam(lr schedule, b1, b2) for each of G, D and D_m (Section 4: the same settings for all three)."""
  schedule = learning_rate_schedule(config)
  tx = lambda: optax.adam(schedule, b1=config.train.b1, b2=config.train.b2)  # noqa: E731
  return Optimizers(tx(), tx(), tx())


def _init_variables(module: nn.Module, key: jax.Array, *inputs) -> tuple[PyTree, PyTree]:
  variables = module.init(key, *inputs)
  return variables['params'], variables.get('batch_stats', {})


def init_state(key: jax.Array, config: ml_collections.ConfigDict, models: Models | None = None,
               optimizers: Optimizers | None = None) -> TrainState:
  """A fresh TrainState from a PRNG key (params by the networks' own initialisers, Adam states at zero).

  jit-able with `config`, `models` and `optimizers` static (see `init_state_fn`).
  """
  models = models or make_models(config)
  optimizers = optimizers or make_optimizers(config)
  spec = data.batch_spec(config, 1)
  zeros = lambda s: jnp.zeros(s.shape, s.dtype)  # noqa: E731
  x_drive, y_ref, x_ref, audio, y = (zeros(spec.x_drive), zeros(spec.y_ref), zeros(spec.x_ref), zeros(spec.audio),
                                     zeros(spec.y))
  k_g, k_d, k_dm = jax.random.split(key, 3)
  g_params, g_stats = _init_variables(models.generator, k_g, x_drive, y_ref, x_ref, audio)
  d_params, d_stats = _init_variables(models.disc, k_d, jnp.concatenate([x_ref, y], -1))
  if models.mouth_disc is not None:
    m = config.disc.mouth_size
    dm_input = jnp.zeros((1, m, m, 3 + config.model.audio_dim), jnp.float32)
    dm_params, dm_stats = _init_variables(models.mouth_disc, k_dm, dm_input)
  else:
    dm_params, dm_stats = {}, {}
  return TrainState(step=jnp.zeros((), jnp.int32),
                    g_params=g_params, g_stats=g_stats, g_opt=optimizers.generator.init(g_params),
                    d_params=d_params, d_stats=d_stats, d_opt=optimizers.disc.init(d_params),
                    dm_params=dm_params, dm_stats=dm_stats, dm_opt=optimizers.mouth_disc.init(dm_params))


def count_params(params: PyTree) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))
