"""The train state of HeadGAN: for each of G, D and D_m its parameters, spectral-norm statistics and Adam state.

The state is a pytree of arrays only (so orbax can checkpoint it and jit can shard it); the networks and optimisers
are rebuilt from the config by `make_models` / `make_optimizers`. D_m's NetState holds empty dicts when there is no
mouth discriminator (config.disc.use_mouth False).

Learning rate (Section 4, and the authors' code for the decay): config.train.lr for `epochs` epochs, then
config.train.lr_schedule 'epoch_steps' (the authors': constant within an epoch, x(1 - i / decay_epochs) in the i-th
decay epoch, i.e. x0.75, x0.5, x0.25, 0 for 4) or 'linear' (per step, to 0 at the end). An epoch is one pass over
the training set: `steps_per_epoch(config, num_examples)` = num_examples // batch_size, unless
config.train.steps_per_epoch > 0 fixes it (synthetic data, tests).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from headgan_jax.data import batch as batch_lib
from headgan_jax.errors import ConfigError

PyTree = Any
LR_SCHEDULES = ('epoch_steps', 'linear')

# Compile options for the jitted `init_state` (`init_compiler_options`): LLVM at -O1, and on the CPU XLA:CPU's fusion
# emitters. The init runs once, and XLA:CPU spends nearly all of its start-up compiling it (every parameter's random
# draw and every spectral-norm power iteration is its own kernel, ~1,300 for G): -O1 compiles it about twice as fast as
# the default -O2 and draws the same numbers (bench/startup.py). The fusion emitters are XLA:CPU's default; pinned
# because a process that turns them off for its other programs (the tests' fast-compile flags, tests/conftest.py)
# would compile this one 1.4-1.9x slower with the loop emitters (configs/demo.py: 23-31 s against 16-17 s, 2026-12-03).
INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 1}
CPU_INIT_COMPILER_OPTIONS = {'xla_cpu_use_fusion_emitters': True}


class Models(NamedTuple):
  """The three networks; `mouth_disc` is None when config.disc.use_mouth is False."""
  generator: nn.Module
  disc: nn.Module
  mouth_disc: nn.Module | None


class Optimizers(NamedTuple):
  """One optax transformation per network, and `schedule(step)`: the learning rate of train step `step` (for logs).

  D and D_m step only every config.train.d_every train steps, so their own schedule is indexed by their update
  count and maps it back to the train step (see `make_optimizers`).
  """
  generator: optax.GradientTransformation
  disc: optax.GradientTransformation
  mouth_disc: optax.GradientTransformation
  schedule: optax.Schedule


@flax.struct.dataclass
class NetState:
  """One network's trainable state: `params`, `stats` (its 'batch_stats': spectral-norm power-iteration vectors)
  and `opt_state` (its optimiser's). Params are float32 whatever the compute dtype."""
  params: PyTree
  stats: PyTree
  opt_state: PyTree

  def apply_gradients(self, grads: PyTree, tx: optax.GradientTransformation, stats: PyTree | None = None) -> NetState:
    """One optimiser update with `grads`; `stats` (e.g. advanced by the forward pass) replaces the old ones."""
    updates, opt_state = tx.update(grads, self.opt_state, self.params)
    return NetState(params=optax.apply_updates(self.params, updates),
                    stats=self.stats if stats is None else stats, opt_state=opt_state)


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training."""
  step: jax.Array  # int32 scalar: number of completed train steps.
  g: NetState  # Generator G = F + R.
  d: NetState  # Image discriminator D.
  dm: NetState  # Mouth discriminator D_m (empty dicts without one).


def make_models(config: ml_collections.ConfigDict) -> Models:
  """G, D and D_m from the config (D_m None when config.disc.use_mouth is False)."""
  # Imported here so that the data / schedule parts of this module load without the networks.
  from headgan_jax.nn.discriminator import make_discriminators  # pylint: disable=import-outside-toplevel
  from headgan_jax.nn.generator import make_generator  # pylint: disable=import-outside-toplevel
  disc, mouth_disc = make_discriminators(config)
  return Models(make_generator(config), disc, mouth_disc if config.disc.use_mouth else None)


def steps_per_epoch(config: ml_collections.ConfigDict, num_examples: int | None = None) -> int:
  """Train steps in one epoch: config.train.steps_per_epoch when > 0, else num_examples // batch_size (>= 1)."""
  t = config.train
  if t.steps_per_epoch < 0:
    raise ConfigError(f'config.train.steps_per_epoch = {t.steps_per_epoch} must be >= 0')
  if t.steps_per_epoch > 0:
    return int(t.steps_per_epoch)
  if num_examples is None:
    raise ConfigError('config.train.steps_per_epoch = 0 means one epoch is one pass over the training set, but no '
                      'dataset size was given (pass num_examples, or set steps_per_epoch > 0 for synthetic data)')
  if num_examples < 1:
    raise ConfigError(f'the training set has {num_examples} examples; an epoch needs at least one')
  return max(1, int(num_examples) // int(t.batch_size))


def learning_rate_schedule(config: ml_collections.ConfigDict, num_examples: int | None = None) -> optax.Schedule:
  """The learning rate of train step s (0-based): constant for `epochs` epochs, then decayed to 0 over
  `decay_epochs` epochs per config.train.lr_schedule (see the module docstring)."""
  t = config.train
  for name in ('epochs', 'decay_epochs'):
    if t[name] < 0:
      raise ConfigError(f'config.train.{name} = {t[name]} must be >= 0')
  if t.lr <= 0:
    raise ConfigError(f'config.train.lr = {t.lr} must be positive')
  if t.lr_schedule not in LR_SCHEDULES:
    raise ConfigError(f'config.train.lr_schedule = {t.lr_schedule!r}; expected one of {LR_SCHEDULES}')
  per_epoch = steps_per_epoch(config, num_examples)
  lr, epochs, decay = float(t.lr), int(t.epochs), int(t.decay_epochs)
  if decay == 0:
    return optax.constant_schedule(lr)
  if t.lr_schedule == 'linear':
    return optax.linear_schedule(lr, 0.0, transition_steps=decay * per_epoch, transition_begin=epochs * per_epoch)

  def epoch_steps(step):
    epoch = jnp.asarray(step) // per_epoch  # 0-based; decay epoch i = epoch - epochs + 1.
    return lr * jnp.clip(1.0 - (epoch - epochs + 1) / decay, 0.0, 1.0)

  return epoch_steps


def make_optimizers(config: ml_collections.ConfigDict, num_examples: int | None = None) -> Optimizers:
  """Adam(lr schedule, b1, b2, eps) for each of G, D and D_m (Section 4: the same settings for all three).

  `num_examples` (the training set's size) defines an epoch when config.train.steps_per_epoch is 0. D's and D_m's
  k-th update (k = 0, 1, ...) happens at train step k d_every + d_every - 1, so their schedule is evaluated there.
  """
  schedule = learning_rate_schedule(config, num_examples)
  d_every = int(config.train.d_every)
  if d_every < 1:
    raise ConfigError(f'config.train.d_every = {config.train.d_every} must be >= 1')
  t = config.train
  adam = lambda sched: optax.adam(sched, b1=t.b1, b2=t.b2, eps=t.adam_eps)  # noqa: E731
  d_schedule = schedule if d_every == 1 else (lambda count: schedule(count * d_every + d_every - 1))
  return Optimizers(generator=adam(schedule), disc=adam(d_schedule), mouth_disc=adam(d_schedule), schedule=schedule)


def _init_net(module: nn.Module | None, tx: optax.GradientTransformation, key: jax.Array, *inputs) -> NetState:
  if module is None:
    params, stats = {}, {}
  else:
    variables = module.init(key, *inputs)
    params, stats = variables['params'], variables.get('batch_stats', {})
  return NetState(params=params, stats=stats, opt_state=tx.init(params))


def init_state(key: jax.Array, config: ml_collections.ConfigDict, models: Models | None = None,
               optimizers: Optimizers | None = None) -> TrainState:
  """A fresh TrainState from a PRNG key (params by the networks' own initialisers, Adam states at zero).

  jit-able with `config`, `models` and `optimizers` static.
  """
  # Imported here for the same reason as in make_models.
  from headgan_jax.nn.discriminator import mouth_disc_channels  # pylint: disable=import-outside-toplevel
  models = models or make_models(config)
  optimizers = optimizers or make_optimizers(config)
  spec = batch_lib.batch_spec(config, 1)
  zeros = lambda s: jnp.zeros(s.shape, s.dtype)  # noqa: E731
  x_drive, y_ref, x_ref, audio, y = (zeros(spec.x_drive), zeros(spec.y_ref), zeros(spec.x_ref), zeros(spec.audio),
                                     zeros(spec.y))
  k_g, k_d, k_dm = jax.random.split(key, 3)
  m = config.disc.mouth_size
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      g=_init_net(models.generator, optimizers.generator, k_g, x_drive, y_ref, x_ref, audio),
      d=_init_net(models.disc, optimizers.disc, k_d, jnp.concatenate([x_ref, y], -1)),
      dm=_init_net(models.mouth_disc, optimizers.mouth_disc, k_dm,
                   jnp.zeros((1, m, m, mouth_disc_channels(config)), jnp.float32)))


def init_compiler_options(platform: str | None = None) -> dict[str, Any]:
  """The init's compile options on `platform` (default: JAX's default backend); the emitter option is XLA:CPU's own."""
  platform = platform or jax.default_backend()
  return {**INIT_COMPILER_OPTIONS, **(CPU_INIT_COMPILER_OPTIONS if platform == 'cpu' else {})}


def jit_init_state(config: ml_collections.ConfigDict, models: Models | None = None,
                   optimizers: Optimizers | None = None, **jit_kwargs) -> Callable[[jax.Array], TrainState]:
  """`init_state` for this config, jit-compiled with `init_compiler_options()`; `jit_kwargs` go to jax.jit (e.g.
  out_shardings)."""
  return jax.jit(lambda key: init_state(key, config, models, optimizers), compiler_options=init_compiler_options(),
                 **jit_kwargs)


def count_params(params: PyTree) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))
