"""One data-parallel training step of HeadGAN: update G by L_G (eq. 9), then D and D_m by their hinge losses (eq. 10).

Data parallelism: a 1-D `jax.sharding.Mesh` over the devices with axis 'data'. The batch is sharded along its first
axis, the train state (and VGG params) replicated; the step is one `jax.jit` with those in/out shardings, so every
loss is a mean over the GLOBAL batch and XLA inserts the gradient all-reduce itself. The result does not depend on
the number of devices (tests/test_train_step.py checks 8 devices against 1).

Frame pairs: each example holds frames t-1 and t (see `train.data.Batch`). G runs once on both frames, interleaved
along the batch axis as (b0 t-1, b0 t, b1 t-1, b1 t, ...) so that each device keeps its own examples (no data moves
between devices). Frame t-1 contributes only its warped features to L_F^Temp; gradients flow through both frames.
The discriminators likewise see fake and real interleaved in one call (instance norm is per sample, so this equals
two separate calls).

D and D_m are updated on the fake frame G produced in this step BEFORE its update (stop-gradient), which saves a
second forward pass of G; SPADE regenerates it with the updated G, a difference of one optimiser step.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from headgan_jax.errors import ConfigError
from headgan_jax.face3d.mouth import crop_mouth
from headgan_jax.nn.discriminator import image_disc_input, mouth_disc_input
from headgan_jax.train import data, losses
from headgan_jax.train.state import (INIT_COMPILER_OPTIONS, Models, Optimizers, TrainState, init_state,
                                     learning_rate_schedule)

DATA_AXIS = 'data'
Metrics = dict[str, jax.Array]
VGGApply = Callable[[Any, jax.Array], Sequence[jax.Array]]
StepFn = Callable[[TrainState, data.Batch, Any], tuple[TrainState, Metrics]]

# Every metric the step returns, in a fixed order (float32 scalars).
METRIC_NAMES = ('g_total', 'g_adv', 'g_fm', 'g_l1', 'g_vgg', 'f_l1', 'f_vgg', 'f_temp', 'gm_adv', 'gm_fm',
                'd_total', 'd_adv', 'dm_adv', 'd_real', 'd_fake', 'g_grad_norm', 'd_grad_norm', 'lr')


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with axis 'data' over `devices` (default: all devices of every process)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _interleave(a: jax.Array, b: jax.Array) -> jax.Array:
  """(B, ...), (B, ...) -> (2B, ...) as a0, b0, a1, b1, ...: keeps each example on its device."""
  return jnp.stack([a, b], axis=1).reshape((2 * a.shape[0],) + a.shape[1:])


def _split(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The inverse of `_interleave`."""
  x = x.reshape((x.shape[0] // 2, 2) + x.shape[1:])
  return x[:, 0], x[:, 1]


def _split_tree(tree: Any) -> tuple[Any, Any]:
  return jax.tree.map(lambda x: _split(x)[0], tree), jax.tree.map(lambda x: _split(x)[1], tree)


def _apply(module, params, stats, *args, update_stats: bool):
  """module(*args) with its spectral-norm stats; returns (output, new stats) (stats unchanged unless updating)."""
  variables = {'params': params, 'batch_stats': stats}
  if not update_stats:
    return module.apply(variables, *args, update_stats=False), stats
  out, mutated = module.apply(variables, *args, update_stats=True, mutable=['batch_stats'])
  return out, mutated.get('batch_stats', stats)


def _f32_tree(tree: Any) -> Any:
  return jax.tree.map(lambda x: x.astype(jnp.float32), tree)


def train_step_fn(config: ml_collections.ConfigDict, models: Models, optimizers: Optimizers,
                  vgg_apply: VGGApply | None = None) -> StepFn:
  """The un-jitted step `(state, batch, vgg_params) -> (state, metrics)`; see `make_train_step`."""
  lo = config.loss
  use_vgg = bool(lo.use_vgg)
  if use_vgg and vgg_apply is None:
    raise ConfigError('config.loss.use_vgg is True but no VGG19 network was given to the train step '
                      '(build it with headgan_jax.nn.vgg.vgg19_from_config, or set config.loss.use_vgg = False)')
  use_flow = bool(config.model.use_flow)
  mouth_disc = models.mouth_disc
  box_size = data.mouth_box_size(config)
  mouth_size = config.disc.mouth_size
  layer_weights = tuple(lo.vgg_layer_weights)
  schedule = learning_rate_schedule(config)
  crop = functools.partial(crop_mouth, box_size=box_size, out_size=mouth_size)

  def disc_outputs(module, params, stats, fake_in, real_in, update_stats):
    out, stats = _apply(module, params, stats, _interleave(fake_in, real_in), update_stats=update_stats)
    fake_out, real_out = _split_tree(_f32_tree(out))
    return fake_out, real_out, stats

  def g_loss_fn(g_params, state: TrainState, batch: data.Batch, vgg_params):
    gen_out, g_stats = _apply(
        models.generator, g_params, state.g_stats,
        _interleave(batch.x_drive_prev, batch.x_drive), _interleave(batch.y_ref, batch.y_ref),
        _interleave(batch.x_ref, batch.x_ref), _interleave(batch.audio_prev, batch.audio), update_stats=True)
    prev, now = _split_tree(gen_out)
    fake = now.image.astype(jnp.float32)
    x_t = batch.x_t
    mask = losses.face_mask(x_t, lo.face_mask_threshold)
    terms = {}
    d_fake, d_real, _ = disc_outputs(models.disc, state.d_params, state.d_stats,
                                     image_disc_input(x_t, fake), image_disc_input(x_t, batch.y),
                                     update_stats=False)
    terms['g_adv'] = losses.hinge_g(d_fake)
    terms['g_fm'] = losses.feature_matching(d_real, d_fake, config.disc.num_layers)
    terms['g_l1'] = losses.masked_l1(fake, batch.y, mask)
    zero = jnp.zeros((), jnp.float32)
    if use_vgg:
      vgg = functools.partial(vgg_apply, vgg_params)
      terms['g_vgg'] = losses.vgg_l1(vgg, fake, batch.y, layer_weights)
    else:
      terms['g_vgg'] = zero
    if use_flow:
      warped = now.warped_ref.astype(jnp.float32)
      terms['f_l1'] = losses.masked_l1(warped, batch.y, mask)
      terms['f_vgg'] = losses.vgg_l1(vgg, warped, batch.y, layer_weights) if use_vgg else zero
      terms['f_temp'] = losses.temporal_l1(_f32_tree(prev.warped_features), _f32_tree(now.warped_features))
    else:  # "w/o F": there is no flow to supervise.
      terms['f_l1'] = terms['f_vgg'] = terms['f_temp'] = zero
    if mouth_disc is not None:
      dm_fake, dm_real, _ = disc_outputs(mouth_disc, state.dm_params, state.dm_stats,
                                         mouth_disc_input(crop(fake, batch.mouth), batch.audio),
                                         mouth_disc_input(crop(batch.y, batch.mouth), batch.audio), update_stats=False)
      terms['gm_adv'] = losses.hinge_g(dm_fake)
      terms['gm_fm'] = losses.feature_matching(dm_real, dm_fake, config.disc.num_layers)
    else:
      terms['gm_adv'] = terms['gm_fm'] = zero
    total = (terms['g_adv'] + lo.l1 * terms['g_l1'] + lo.vgg * terms['g_vgg'] + lo.fm * terms['g_fm']
             + lo.l1 * terms['f_l1'] + lo.vgg * terms['f_vgg'] + lo.temp * terms['f_temp']
             + lo.mouth_gan * (terms['gm_adv'] + lo.fm * terms['gm_fm']))
    terms['g_total'] = total
    return total, (terms, g_stats, jax.lax.stop_gradient(fake))

  def d_loss_fn(d_and_dm_params, state: TrainState, batch: data.Batch, fake: jax.Array):
    d_params, dm_params = d_and_dm_params
    x_t = batch.x_t
    d_fake, d_real, d_stats = disc_outputs(models.disc, d_params, state.d_stats, image_disc_input(x_t, fake),
                                           image_disc_input(x_t, batch.y), update_stats=True)
    terms = {'d_adv': losses.hinge_d(d_real, d_fake),
             'd_real': jnp.mean(jnp.stack([jnp.mean(s[-1]) for s in d_real])),
             'd_fake': jnp.mean(jnp.stack([jnp.mean(s[-1]) for s in d_fake]))}
    dm_stats = state.dm_stats
    if mouth_disc is not None:
      dm_fake, dm_real, dm_stats = disc_outputs(
          mouth_disc, dm_params, state.dm_stats, mouth_disc_input(crop(fake, batch.mouth), batch.audio),
          mouth_disc_input(crop(batch.y, batch.mouth), batch.audio), update_stats=True)
      terms['dm_adv'] = losses.hinge_d(dm_real, dm_fake)
    else:
      terms['dm_adv'] = jnp.zeros((), jnp.float32)
    total = terms['d_adv'] + lo.mouth_d * terms['dm_adv']
    terms['d_total'] = total
    return total, (terms, d_stats, dm_stats)

  def step(state: TrainState, batch: data.Batch, vgg_params=None) -> tuple[TrainState, Metrics]:
    (_, (g_terms, g_stats, fake)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
        state.g_params, state, batch, vgg_params)
    g_updates, g_opt = optimizers.generator.update(g_grads, state.g_opt, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)

    (_, (d_terms, d_stats, dm_stats)), (d_grads, dm_grads) = jax.value_and_grad(d_loss_fn, has_aux=True)(
        (state.d_params, state.dm_params), state, batch, fake)
    d_updates, d_opt = optimizers.disc.update(d_grads, state.d_opt, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)
    dm_updates, dm_opt = optimizers.mouth_disc.update(dm_grads, state.dm_opt, state.dm_params)
    dm_params = optax.apply_updates(state.dm_params, dm_updates)

    new_state = TrainState(step=state.step + 1, g_params=g_params, g_stats=g_stats, g_opt=g_opt,
                           d_params=d_params, d_stats=d_stats, d_opt=d_opt,
                           dm_params=dm_params, dm_stats=dm_stats, dm_opt=dm_opt)
    metrics = {**g_terms, **d_terms,
               'g_grad_norm': optax.tree.norm(g_grads),
               'd_grad_norm': optax.tree.norm((d_grads, dm_grads)),
               'lr': jnp.asarray(schedule(state.step), jnp.float32)}
    return new_state, {name: metrics[name].astype(jnp.float32) for name in METRIC_NAMES}

  return step


def make_train_step(config: ml_collections.ConfigDict, models: Models, optimizers: Optimizers, mesh: Mesh,
                    vgg_apply: VGGApply | None = None, donate: bool = True) -> StepFn:
  """The jit-compiled, data-parallel train step `(state, batch, vgg_params) -> (state, metrics)`.

  `state` and `vgg_params` (None when config.loss.use_vgg is False) are replicated over `mesh`, `batch` sharded
  along 'data' (its size must be a multiple of the device count). Metrics are float32 scalars, one per entry of
  METRIC_NAMES, computed on the global batch. With `donate` the input state's buffers are reused.
  """
  step = train_step_fn(config, models, optimizers, vgg_apply)
  repl, sharded = replicated(mesh), batch_sharding(mesh)
  jitted = jax.jit(step, in_shardings=(repl, sharded, repl), out_shardings=(repl, repl),
                   donate_argnums=(0,) if donate else ())
  n_devices = mesh.devices.size

  @functools.wraps(step)
  def train_step(state: TrainState, batch: data.Batch, vgg_params=None) -> tuple[TrainState, Metrics]:
    if batch.batch_size % n_devices:
      raise ConfigError(f'the global batch size {batch.batch_size} is not a multiple of the {n_devices} devices '
                        'of the mesh (config.train.batch_size)')
    return jitted(state, batch, vgg_params)

  train_step.jitted = jitted  # For .lower(...) in benchmarks.
  return train_step


def init_state_sharded(key: jax.Array, config: ml_collections.ConfigDict, models: Models, optimizers: Optimizers,
                       mesh: Mesh) -> TrainState:
  """`state.init_state`, jit-compiled with its output replicated over `mesh`."""
  return jax.jit(lambda k: init_state(k, config, models, optimizers), out_shardings=replicated(mesh),
                 compiler_options=INIT_COMPILER_OPTIONS)(key)


def shard_batch(batch: data.Batch, mesh: Mesh) -> data.Batch:
  """Places a host (or single-device) batch on the mesh, split along 'data'."""
  return jax.device_put(batch, batch_sharding(mesh))
