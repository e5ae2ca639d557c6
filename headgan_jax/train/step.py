"""One data-parallel training step of HeadGAN: update G by L_G (eq. 9), then, every config.train.d_every steps, D and
D_m by their hinge losses (eq. 10).

Data parallelism: a 1-D `jax.sharding.Mesh` over the devices with axis 'data'. The batch is sharded along its first
axis, the train state (and VGG params) replicated; the step is one `jax.jit` with those in/out shardings, so every
loss is a mean over the GLOBAL batch and XLA inserts the gradient all-reduce itself. The result does not depend on
the number of devices (tests/test_train_step.py checks 8 devices against 1).

Frame pairs: each example holds frames t-1 and t (see `data.batch.Batch`). Frame t-1 enters L_G only through
L_F^Temp, which compares the warped features of F, so F runs once on both frames (interleaved along the batch axis
as (b0 t-1, b0 t, b1 t-1, b1 t, ...), so each device keeps its own examples) and R only on frame t. VGG19 runs once
on [y~_t, y-bar_t^ref, y_t] stacked. config.train.shared_passes = False computes the same loss the straightforward
way (G on both frames, one VGG pass per pair); the tests check that both give the same values and gradients.
The discriminators see fake and real interleaved in one call (instance norm is per sample, so this equals two
separate calls).

L_G is the weighted sum of the terms of `G_LOSS_TERMS` with the weights of `g_loss_weights(config)`, one table, so
the total cannot drift from the logged terms (likewise D's loss).

D and D_m: updated on step s when (s + 1) % d_every == 0 (the authors update them after every 4th G step), on the
fake G produced in this step BEFORE its update (stop-gradient), as the authors' code does; SPADE's recipe regenerates
it with the updated G, a difference of one optimiser step. How the skip is compiled is config.train.d_update:
'two_steps' (default) compiles a step without and a step with the D update, and `TrainStep` picks one on the host
from the step number; 'traced_cond' compiles one step with a `lax.cond`. Measured on CPU
(bench/train_step_variants.py, README): the two steps run ~12 % faster per step and take ~1.4x the compile time.
The D metrics (d_adv, dm_adv, d_real, d_fake, d_total) are the discriminators' losses at the state the step starts
from, computed from the same D outputs as G's adversarial terms, so they are logged on every step.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from headgan_jax.data import batch as batch_lib
from headgan_jax.errors import ConfigError
from headgan_jax.face3d.mouth import crop_mouth
from headgan_jax.nn.discriminator import image_disc_input, mouth_disc_input
from headgan_jax.sharding import batch_sharding, replicated
from headgan_jax.train import losses
from headgan_jax.train.state import Models, Optimizers, TrainState, jit_init_state

Metrics = dict[str, jax.Array]
VGGApply = Callable[[Any, jax.Array], Sequence[jax.Array]]
StepFn = Callable[[TrainState, batch_lib.Batch, Any], tuple[TrainState, Metrics]]

# The terms of L_G (eq. 9 and the authors' flow-mask L1) and of the discriminators' loss (eq. 10).
G_LOSS_TERMS = ('g_adv', 'g_fm', 'g_l1', 'g_vgg', 'f_l1', 'f_vgg', 'f_temp', 'f_mask', 'gm_adv', 'gm_fm')
D_LOSS_TERMS = ('d_adv', 'dm_adv')
# Every metric the step returns, in a fixed order (float32 scalars). d_grad_norm is 0 and d_updated 0 on the steps
# that leave D and D_m alone.
METRIC_NAMES = ('g_total', *G_LOSS_TERMS, 'd_total', *D_LOSS_TERMS, 'd_real', 'd_fake', 'g_grad_norm',
                'd_grad_norm', 'd_updated', 'lr')


def g_loss_weights(config: ml_collections.ConfigDict) -> dict[str, float]:
  """lambda of every term of L_G, keyed like G_LOSS_TERMS (Appendix A; FM of D_m scaled like D's, as the authors)."""
  lo = config.loss
  return {'g_adv': 1.0, 'g_fm': lo.fm, 'g_l1': lo.l1, 'g_vgg': lo.vgg, 'f_l1': lo.l1, 'f_vgg': lo.vgg,
          'f_temp': lo.temp, 'f_mask': lo.flow_mask, 'gm_adv': lo.mouth_gan, 'gm_fm': lo.mouth_gan * lo.fm}


def d_loss_weights(config: ml_collections.ConfigDict) -> dict[str, float]:
  """Weights of the discriminators' loss terms, keyed like D_LOSS_TERMS (D_m's hinge x0.5, as the authors)."""
  return {'d_adv': 1.0, 'dm_adv': config.loss.mouth_d}


def weighted_sum(terms: dict[str, jax.Array], weights: dict[str, float]) -> jax.Array:
  """sum_k weights[k] * terms[k]; the two tables must have the same keys."""
  if set(terms) != set(weights):
    raise ValueError(f'loss terms {sorted(terms)} do not match the weight table {sorted(weights)}')
  return sum((float(weights[k]) * terms[k] for k in weights), jnp.zeros((), jnp.float32))


def _interleave(a: jax.Array, b: jax.Array) -> jax.Array:
  """(B, ...), (B, ...) -> (2B, ...) as a0, b0, a1, b1, ...: keeps each example on its device."""
  return jnp.stack([a, b], axis=1).reshape((2 * a.shape[0],) + a.shape[1:])


def _split(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The inverse of `_interleave`."""
  x = x.reshape((x.shape[0] // 2, 2) + x.shape[1:])
  return x[:, 0], x[:, 1]


def _split_tree(tree: Any) -> tuple[Any, Any]:
  return jax.tree.map(lambda x: _split(x)[0], tree), jax.tree.map(lambda x: _split(x)[1], tree)


def _apply(module, params, stats, *args, update_stats: bool, method: str | None = None):
  """module(*args) with its spectral-norm stats; returns (output, new stats) (stats unchanged unless updating)."""
  variables = {'params': params, 'batch_stats': stats}
  kw = {} if method is None else {'method': method}
  if not update_stats:
    return module.apply(variables, *args, update_stats=False, **kw), stats
  out, mutated = module.apply(variables, *args, update_stats=True, mutable=['batch_stats'], **kw)
  return out, mutated.get('batch_stats', stats)


def _f32_tree(tree: Any) -> Any:
  return jax.tree.map(lambda x: x.astype(jnp.float32), tree)


class LossFns(NamedTuple):
  """The step's two loss functions (pure; built by `loss_fns`).

  generator(g_params, state, batch, vgg_params) -> (L_G, (terms, new G stats, stop_grad(y~_t), D metrics)).
  discriminators((d_params, dm_params), state, batch, fake) -> (L_D, (new D stats, new D_m stats)).
  """
  generator: Callable[..., tuple[jax.Array, Any]]
  discriminators: Callable[..., tuple[jax.Array, Any]]


def loss_fns(config: ml_collections.ConfigDict, models: Models, vgg_apply: VGGApply | None = None) -> LossFns:
  """L_G and L_D of one step as functions of the parameters (see the module docstring)."""
  lo = config.loss
  use_vgg = bool(lo.use_vgg)
  if use_vgg and vgg_apply is None:
    raise ConfigError('config.loss.use_vgg is True but no VGG19 network was given to the train step '
                      '(build it with headgan_jax.nn.vgg.vgg19_from_config, or set config.loss.use_vgg = False)')
  use_flow, use_audio = bool(config.model.use_flow), bool(config.model.use_audio)
  shared = bool(config.train.shared_passes)
  generator, mouth_disc = models.generator, models.mouth_disc
  layer_weights = tuple(lo.vgg_layer_weights)
  g_weights, d_weights = g_loss_weights(config), d_loss_weights(config)
  crop = functools.partial(crop_mouth, box_size=batch_lib.mouth_box_size(config), out_size=config.disc.mouth_size)
  zero = jnp.zeros((), jnp.float32)

  def disc_outputs(module, params, stats, fake_in, real_in, update_stats):
    out, stats = _apply(module, params, stats, _interleave(fake_in, real_in), update_stats=update_stats)
    fake_out, real_out = _split_tree(_f32_tree(out))
    return fake_out, real_out, stats

  def mouth_inputs(fake: jax.Array, batch: batch_lib.Batch) -> tuple[jax.Array, jax.Array]:
    audio = batch.audio if use_audio else None  # "w/o audio": D_m sees the mouth crop alone.
    return (mouth_disc_input(crop(fake, batch.mouth), audio), mouth_disc_input(crop(batch.y, batch.mouth), audio))

  def generate(g_params, g_stats, batch: batch_lib.Batch):
    """(y~_t, F's output on frame t, warped features of frame t-1, new G stats)."""
    pair = lambda a, b: _interleave(a, b)  # noqa: E731  (frame t-1, frame t)
    if shared:
      # F on both frames (one power iteration per conv, as one G call does), R on frame t only.
      warped, g_stats = _apply(generator, g_params, g_stats, pair(batch.x_drive_prev, batch.x_drive),
                               pair(batch.y_ref, batch.y_ref), pair(batch.x_ref, batch.x_ref),
                               update_stats=True, method='warp')
      prev, now = _split_tree(warped)
      fake, g_stats = _apply(generator, g_params, g_stats, batch.x_drive, now, batch.audio, update_stats=True,
                             method='render')
      return fake, now, prev.warped_features, g_stats
    out, g_stats = _apply(generator, g_params, g_stats, pair(batch.x_drive_prev, batch.x_drive),
                          pair(batch.y_ref, batch.y_ref), pair(batch.x_ref, batch.x_ref),
                          pair(batch.audio_prev, batch.audio), update_stats=True)
    prev, now = _split_tree(out)
    return now.image, now, prev.warped_features, g_stats

  def g_loss(g_params, state: TrainState, batch: batch_lib.Batch, vgg_params):
    fake, now, prev_features, g_stats = generate(g_params, state.g.stats, batch)
    fake = fake.astype(jnp.float32)
    x_t = batch.x_t
    face = losses.face_mask(x_t, lo.face_mask_threshold)
    terms = dict.fromkeys(G_LOSS_TERMS, zero)
    d_fake, d_real, _ = disc_outputs(models.disc, state.d.params, state.d.stats, image_disc_input(x_t, fake),
                                     image_disc_input(x_t, batch.y), update_stats=False)
    terms['g_adv'] = losses.hinge_g(d_fake)
    terms['g_fm'] = losses.feature_matching(d_real, d_fake, config.disc.num_layers)
    terms['g_l1'] = losses.masked_l1(fake, batch.y, face)
    sg = jax.lax.stop_gradient
    d_metrics = {'d_adv': losses.hinge_d(sg(d_real), sg(d_fake)), 'dm_adv': zero,
                 'd_real': jnp.mean(jnp.stack([jnp.mean(s[-1]) for s in sg(d_real)])),
                 'd_fake': jnp.mean(jnp.stack([jnp.mean(s[-1]) for s in sg(d_fake)]))}
    if use_flow:  # "w/o F" has no flow to supervise: its F terms stay 0.
      warped = now.warped_ref
      terms['f_l1'] = losses.masked_l1(warped, batch.y, face)
      terms['f_temp'] = losses.temporal_l1(prev_features, now.warped_features)
      terms['f_mask'] = losses.flow_mask_l1(now.mask, batch.foreground)
    if use_vgg:
      vgg = functools.partial(vgg_apply, vgg_params)
      if use_flow and shared:
        terms['g_vgg'], terms['f_vgg'] = losses.vgg_l1_many(vgg, [fake, now.warped_ref], batch.y, layer_weights)
      else:
        terms['g_vgg'] = losses.vgg_l1(vgg, fake, batch.y, layer_weights)
        if use_flow:
          terms['f_vgg'] = losses.vgg_l1(vgg, now.warped_ref, batch.y, layer_weights)
    if mouth_disc is not None:
      dm_fake, dm_real, _ = disc_outputs(mouth_disc, state.dm.params, state.dm.stats, *mouth_inputs(fake, batch),
                                         update_stats=False)
      terms['gm_adv'] = losses.hinge_g(dm_fake)
      terms['gm_fm'] = losses.feature_matching(dm_real, dm_fake, config.disc.num_layers)
      d_metrics['dm_adv'] = losses.hinge_d(sg(dm_real), sg(dm_fake))
    return weighted_sum(terms, g_weights), (terms, g_stats, sg(fake), d_metrics)

  def d_loss(d_and_dm_params, state: TrainState, batch: batch_lib.Batch, fake: jax.Array):
    d_params, dm_params = d_and_dm_params
    x_t = batch.x_t
    d_fake, d_real, d_stats = disc_outputs(models.disc, d_params, state.d.stats, image_disc_input(x_t, fake),
                                           image_disc_input(x_t, batch.y), update_stats=True)
    terms = {'d_adv': losses.hinge_d(d_real, d_fake), 'dm_adv': zero}
    dm_stats = state.dm.stats
    if mouth_disc is not None:
      dm_fake, dm_real, dm_stats = disc_outputs(mouth_disc, dm_params, state.dm.stats, *mouth_inputs(fake, batch),
                                                update_stats=True)
      terms['dm_adv'] = losses.hinge_d(dm_real, dm_fake)
    return weighted_sum(terms, d_weights), (d_stats, dm_stats)

  return LossFns(g_loss, d_loss)


D_UPDATE_MODES = ('two_steps', 'traced_cond')


def train_step_fn(config: ml_collections.ConfigDict, models: Models, optimizers: Optimizers,
                  vgg_apply: VGGApply | None = None, update_d: bool | None = None) -> StepFn:
  """The un-jitted step `(state, batch, vgg_params) -> (state, metrics)`; see `make_train_step`.

  update_d: True / False: D and D_m are updated on every step / never; None: on the steps s with
  (s + 1) % config.train.d_every == 0, decided by a traced condition (`lax.cond`) inside the step.
  """
  d_every = int(config.train.d_every)
  if d_every < 1:
    raise ConfigError(f'config.train.d_every = {config.train.d_every} must be >= 1')
  fns = loss_fns(config, models, vgg_apply)
  d_weights = d_loss_weights(config)

  def step(state: TrainState, batch: batch_lib.Batch, vgg_params=None) -> tuple[TrainState, Metrics]:
    (g_total, (g_terms, g_stats, fake, d_metrics)), g_grads = jax.value_and_grad(fns.generator, has_aux=True)(
        state.g.params, state, batch, vgg_params)
    g = state.g.apply_gradients(g_grads, optimizers.generator, g_stats)

    def with_d_update(_):
      (_, (d_stats, dm_stats)), (d_grads, dm_grads) = jax.value_and_grad(fns.discriminators, has_aux=True)(
          (state.d.params, state.dm.params), state, batch, fake)
      return (state.d.apply_gradients(d_grads, optimizers.disc, d_stats),
              state.dm.apply_gradients(dm_grads, optimizers.mouth_disc, dm_stats),
              optax.tree.norm((d_grads, dm_grads)).astype(jnp.float32), jnp.ones((), jnp.float32))

    def without_d_update(_):
      return state.d, state.dm, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)

    if update_d is None and d_every > 1:
      d, dm, d_norm, d_updated = jax.lax.cond((state.step + 1) % d_every == 0, with_d_update, without_d_update, None)
    elif update_d is False:
      d, dm, d_norm, d_updated = without_d_update(None)
    else:
      d, dm, d_norm, d_updated = with_d_update(None)

    new_state = TrainState(step=state.step + 1, g=g, d=d, dm=dm)
    metrics = {**g_terms, **d_metrics,
               'g_total': g_total,
               'd_total': weighted_sum({k: d_metrics[k] for k in D_LOSS_TERMS}, d_weights),
               'g_grad_norm': optax.tree.norm(g_grads), 'd_grad_norm': d_norm, 'd_updated': d_updated,
               'lr': jnp.asarray(optimizers.schedule(state.step), jnp.float32)}
    return new_state, {name: metrics[name].astype(jnp.float32) for name in METRIC_NAMES}

  return step


@dataclasses.dataclass(frozen=True, eq=False)
class TrainStep:
  """The compiled, data-parallel train step: `train_step(state, batch, vgg_params, step=None) -> (state, metrics)`.

  `step` is the number of completed steps, i.e. `state.step`, as the loop knows it: with two compiled steps
  (config.train.d_update 'two_steps') it picks the one to run. Pass it; without it `int(state.step)` is read from
  the device, which waits for the previous step and so stops the host from queueing the next one.
  `lower(state, batch, vgg_params, step=None)` lowers what that step would run (benchmarks: `.compile()`, cost
  analysis); `jitted_for(step)` is that jitted function. Calls check the batch first, from shapes alone, before
  anything is compiled: DataError for a field of the wrong shape / dtype, ConfigError when the global batch does not
  split over the mesh.
  """
  config: ml_collections.ConfigDict
  n_devices: int
  d_every: int
  jitted: Any  # The one step; with two steps, the one WITHOUT the D / D_m update.
  jitted_with_d: Any = None  # With two steps: the one with it.

  def updates_d(self, step: int) -> bool:
    """Whether train step `step` (0-based) updates D and D_m."""
    return (int(step) + 1) % self.d_every == 0

  def jitted_for(self, step: int) -> Any:
    if self.jitted_with_d is not None and self.updates_d(step):
      return self.jitted_with_d
    return self.jitted

  def check(self, batch: batch_lib.Batch) -> None:
    if batch.batch_size % self.n_devices:
      raise ConfigError(f'the global batch size {batch.batch_size} is not a multiple of the {self.n_devices} '
                        'devices of the mesh (config.train.batch_size)')
    batch_lib.check_batch(batch, self.config)

  def _pick(self, state: TrainState, batch: batch_lib.Batch, step: int | None) -> Any:
    self.check(batch)
    if self.jitted_with_d is None:
      return self.jitted
    return self.jitted_for(int(state.step) if step is None else step)

  def __call__(self, state: TrainState, batch: batch_lib.Batch, vgg_params=None,
               step: int | None = None) -> tuple[TrainState, Metrics]:
    return self._pick(state, batch, step)(state, batch, vgg_params)

  def lower(self, state: TrainState, batch: batch_lib.Batch, vgg_params=None, step: int | None = None):
    return self._pick(state, batch, step).lower(state, batch, vgg_params)


def make_train_step(config: ml_collections.ConfigDict, models: Models, optimizers: Optimizers, mesh: Mesh,
                    vgg_apply: VGGApply | None = None, donate: bool = True,
                    update_d: bool | None = None) -> TrainStep:
  """The jit-compiled, data-parallel train step `(state, batch, vgg_params, step=None) -> (state, metrics)`.

  `state` and `vgg_params` (None when config.loss.use_vgg is False) are replicated over `mesh`, `batch` sharded
  along 'data' (its size must be a multiple of the device count). Metrics are float32 scalars, one per entry of
  METRIC_NAMES, computed on the global batch. With `donate` the input state's buffers are reused. D and D_m are
  updated every config.train.d_every steps, compiled per config.train.d_update (see the module docstring);
  `update_d` True / False instead compiles one step that always / never updates them.
  """
  mode = config.train.d_update
  if mode not in D_UPDATE_MODES:
    raise ConfigError(f'config.train.d_update = {mode!r}; expected one of {D_UPDATE_MODES}')
  repl, sharded = replicated(mesh), batch_sharding(mesh)
  jit = lambda fn: jax.jit(fn, in_shardings=(repl, sharded, repl), out_shardings=(repl, repl),  # noqa: E731
                           donate_argnums=(0,) if donate else ())
  d_every = int(config.train.d_every)
  two = update_d is None and mode == 'two_steps' and d_every > 1
  if two:
    without = jit(train_step_fn(config, models, optimizers, vgg_apply, update_d=False))
    with_d = jit(train_step_fn(config, models, optimizers, vgg_apply, update_d=True))
  else:
    without, with_d = jit(train_step_fn(config, models, optimizers, vgg_apply, update_d)), None
  return TrainStep(config=config, n_devices=mesh.devices.size, d_every=d_every, jitted=without,
                   jitted_with_d=with_d)


def init_state_sharded(key: jax.Array, config: ml_collections.ConfigDict, models: Models, optimizers: Optimizers,
                       mesh: Mesh) -> TrainState:
  """`state.init_state`, jit-compiled with its output replicated over `mesh`."""
  return jit_init_state(config, models, optimizers, out_shardings=replicated(mesh))(key)

