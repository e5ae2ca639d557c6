"""The training loop: data source by name, checkpoints, TensorBoard logging, in-loop evaluation, preemption, NaN stop.

  trainer = Trainer.create(config)              # checks the config, builds networks, optimisers, mesh, jitted step
  result = trainer.run(workdir)                 # trains to total_steps(config), resuming from workdir's checkpoints

train.py is the command line around this (headgan_jax/commands/train.py); tests and notebooks call it directly.

Work folder:
  WORKDIR/config.json        the resolved config of the run (written once; a resumed run must match it, except for
                             the fields in RESUMABLE_FIELDS, or it stops with the differing fields named)
  WORKDIR/checkpoints/<N>/   orbax checkpoints after N steps: 'state' (the TrainState, an opaque pytree here) and
                             'data' (every process's data-iterator state); keep-N, atomic, written by all processes;
                             checksums.json, written by process 0 once orbax has finished the step
  WORKDIR/checkpoints_damaged/  checkpoints found damaged on resume, moved aside (workdir.py: `damage`)
  WORKDIR/run.lock           locked by the process training here: a second run in the folder is refused
  WORKDIR/assets/            the training set's 3DMM and audio statistics (written at every start by process 0), so
                             that the folder alone reenacts and evaluates its checkpoints (workdir.py reads
                             this layout: G alone, the config check, the assets)
  WORKDIR/tensorboard/       event files: train/<term> for every loss term, grad norm and the learning rate (means
                             over each log interval), perf/steps_per_s and perf/examples_per_s, images/train grids
                             (x_t | warped reference | generated | target | mouth crops: generated over target),
                             eval/<name>/<metric>, and the config as hparams and text

Data (headgan_jax/data/sources.py has the full contract): `config.data.source` names a source; its train iterator
yields GLOBAL `data.batch.Batch`es sharded along 'data' on the step's mesh, each process loading only its own rows
and assembling them with `jax.make_array_from_process_local_data`; `get_state()` / `set_state()` (JSON values) are
saved with every checkpoint and restored on resume, so a resumed run sees exactly the batches an uninterrupted one
would have. The held-out batches for in-loop evaluation come from the same source (`make_eval_batches`).

Several hosts: call `jax.distributed.initialize()` before anything touches jax (cli.py does), then everything here is
unchanged: the mesh spans every device of every process, each process feeds its rows, every process runs the same
steps and takes part in orbax's collective checkpoint writes, and only process 0 writes TensorBoard files and the
config. WORKDIR must be storage that every host sees (a bucket or a network file system).

Faults: a run resumes from the newest checkpoint that is whole; each newer damaged one (truncated, a file missing,
other bytes than were written) is moved to WORKDIR/checkpoints_damaged/ with one line on stderr (step, why, where);
when checkpoints exist but none is whole it stops with CheckpointError and moves nothing. A second run in a work
folder that a live process trains in stops at once with WorkdirBusyError naming that process (`hold_workdir`).
Killed at any moment (SIGKILL, power loss), a run loses only the steps after its last checkpoint: orbax writes each
checkpoint in a temporary folder renamed into place once complete (the next run removes unfinished ones), and a run
killed before sealing a checkpoint with checksums.json has it read back whole on resume. A write that fails for lack of
space (ENOSPC, a quota, a file size limit) stops training with CheckpointError naming the folder, the cause and the
checkpoint to resume from (workdir.stop_on_no_space); the unfinished checkpoint never replaces a whole one.
SIGTERM or SIGINT (preemptible VMs, Ctrl-C) lets the current step finish, writes a checkpoint and returns
with `stopped_by` set (on several hosts the processes agree on the step to stop at); a second signal acts as usual.
A NaN or inf in any metric stops training with NonFiniteLossError naming the step, the terms and the last good
checkpoint; metrics are checked every step (one step behind, so the host does not wait on the device) and always
before a checkpoint is written, so no checkpoint ever holds a diverged state.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tqdm
from jax.experimental import multihost_utils

from headgan_jax import config_files, config_migrate
from headgan_jax import sharding as sharding_lib
from headgan_jax import workdir as workdir_lib
from headgan_jax.data import batch as batch_lib
from headgan_jax.data import sources
from headgan_jax.errors import CheckpointError, ConfigError, NonFiniteLossError, WorkdirBusyError
from headgan_jax.face3d.mouth import crop_mouth
from headgan_jax.files import write_atomic
from headgan_jax.nn import inference, vgg as vgg_lib
from headgan_jax.train import evals as evals_lib, metric_writer, state as state_lib
from headgan_jax.train import step as step_lib

CHECKPOINT_DIR = workdir_lib.CHECKPOINT_DIR
TENSORBOARD_DIR = workdir_lib.TENSORBOARD_DIR
CONFIG_FILE = workdir_lib.CONFIG_FILE
# Config fields (or prefixes, ending with '.') a resumed run may change: they do not alter what is trained.
RESUMABLE_FIELDS = ('train.num_steps', 'train.log_every', 'train.checkpoint_every', 'train.keep_checkpoints',
                    'train.image_every', 'train.image_examples', 'train.workdir', 'loss.vgg_weights', 'evals.')
# The columns of the image grids, left to right (the mouth column: generated crop over the target's).
PREVIEW_COLUMNS = ('x_t', 'warped', 'generated', 'target', 'mouth')
# The metrics shown in TensorBoard's hparams view beside the config.
HPARAM_METRICS = ('train/g_total', 'train/g_l1', 'train/f_l1', 'train/d_total')


def total_steps(config: ml_collections.ConfigDict, num_examples: int | None = None) -> int:
  """config.train.num_steps, or when it is 0, (epochs + decay_epochs) epochs of `state.steps_per_epoch` steps
  (config.train.steps_per_epoch, or one pass over a training set of `num_examples`): the schedule's own epochs."""
  t = config.train
  if t.num_steps < 0:
    raise ConfigError(f'config.train.num_steps = {t.num_steps} must be >= 0')
  if t.num_steps:
    return int(t.num_steps)
  if not t.steps_per_epoch and not num_examples:
    raise ConfigError(f'config.train.num_steps = 0 and steps_per_epoch = {t.steps_per_epoch} ask for epochs over the '
                      f'training set, but data source {config.data.source!r} does not give its size: set '
                      '--config.train.num_steps or --config.train.steps_per_epoch')
  return int((t.epochs + t.decay_epochs) * state_lib.steps_per_epoch(config, num_examples))


# --- The resolved config in the work folder ------------------------------------------------------------------


def _config_json(config: ml_collections.ConfigDict) -> str:
  return config.to_json_best_effort(indent=2, sort_keys=True)


def save_or_check_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes WORKDIR/config.json on a fresh run (process 0); on a resumed one, raises ConfigError naming every field
  that differs from it (except RESUMABLE_FIELDS)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      try:
        saved = config_migrate.migrate(json.load(f))  # A run saved in an older layout too.
      except json.JSONDecodeError as e:
        raise ConfigError(f'{path} is not valid JSON ({e}); it should hold the config of the run in {workdir}') from e
    diff = config_files.differences(saved, config, ignore=RESUMABLE_FIELDS)
    if diff:
      raise ConfigError(f'{workdir} holds a run with a different config ({path}):\n  ' + '\n  '.join(diff) +
                        f'\nUse a new --workdir, or, to resume with the new values on purpose, delete {path}.')
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    write_atomic(path, _config_json(config))


# --- The work folder: one run at a time, resumed from a whole checkpoint ---------------------------------------


def _agree(value: int) -> int:
  """Process 0's `value` on every process (a collective on several hosts; nothing on one)."""
  if jax.process_count() == 1:
    return value
  return int(np.asarray(multihost_utils.broadcast_one_to_all(np.int32(value))))


def _refuse_together(busy: str | None, workdir: str) -> None:
  """WorkdirBusyError on every process when process 0 found WORKDIR `busy` (its message)."""
  if _agree(busy is not None):
    raise WorkdirBusyError(busy or workdir_lib.workdir_holder(workdir) or
                           f'{workdir} is in use by another training run (process 0 found it locked).')


def refuse_if_busy(workdir: str | os.PathLike) -> None:
  """WorkdirBusyError at once when a live process trains in WORKDIR (a probe: creates nothing). train.py calls it
  before building anything; `hold_workdir` is what keeps a second run out."""
  workdir = os.path.abspath(os.fspath(workdir))
  _refuse_together(workdir_lib.workdir_holder(workdir) if jax.process_index() == 0 else None, workdir)


@contextlib.contextmanager
def hold_workdir(workdir: str | os.PathLike):
  """WORKDIR's run lock (workdir.py: flock, released by the kernel however the process ends) for the
  duration, or WorkdirBusyError on every process when another live run holds it. Several hosts: a run uses one work
  folder for all of them and only its process 0 takes the lock (the others would refuse each other where the file
  system locks across hosts); the others learn the outcome from it."""
  workdir = os.path.abspath(os.fspath(workdir))
  lock, busy = None, None
  if jax.process_index() == 0:
    try:
      lock = workdir_lib.lock_workdir(workdir)
    except WorkdirBusyError as e:
      busy = str(e)
  _refuse_together(busy, workdir)
  try:
    yield
  finally:
    if lock is not None:
      lock.release()


def set_aside_damaged(workdir: str, report: Callable[[str], None] = workdir_lib.say) -> int | None:
  """The step of WORKDIR's newest whole checkpoint (None: no checkpoint yet), after moving every newer damaged one
  to WORKDIR/checkpoints_damaged/ (one `report` line each: step, why, where). CheckpointError, moving nothing, when
  checkpoints exist but none is whole: starting afresh over them is for the user to decide. Call it on one process,
  holding the work folder's lock (a reader beside the run only skips damaged checkpoints)."""
  step, damaged = workdir_lib.newest_whole(workdir)
  if step is None and damaged:
    raise CheckpointError(f'{os.path.join(workdir, CHECKPOINT_DIR)}: no checkpoint there is whole, so training cannot '
                          f'resume: {workdir_lib.describe(damaged)}. Move them out of the folder (or use another '
                          'work folder) to start afresh.')
  for d in damaged:  # Moved before orbax's CheckpointManager lists the folder: it would see a damaged latest.
    report(f'skipping checkpoint step {d.step}: {d.reason}; moved to {workdir_lib.set_aside(workdir, d)}')
  return step


def resume_step(workdir: str) -> int | None:
  """`set_aside_damaged` on process 0, its step on every process (CheckpointError on all when it refused)."""
  none, refused, message = -1, -2, None
  code = none
  if jax.process_index() == 0:
    try:
      step = set_aside_damaged(workdir)
      code = none if step is None else step
    except CheckpointError as e:
      code, message = refused, str(e)
  code = _agree(code)
  if code == refused:
    raise CheckpointError(message or f'{workdir}: no checkpoint there is whole (process 0 says why).')
  return None if code == none else code


# --- Signals -------------------------------------------------------------------------------------------------


class StopSignals:
  """While active, SIGTERM / SIGINT set `received` (the signal's name) instead of killing the process; a second
  signal gets its previous handler back. Only the main thread can install handlers; elsewhere this does nothing."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received: str | None = None
    self._previous: dict[int, Any] = {}

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.received = signal.Signals(signum).name
    for sig, handler in self._previous.items():  # A second signal: the usual behaviour.
      signal.signal(sig, handler)

  def __enter__(self) -> 'StopSignals':
    with contextlib.suppress(ValueError):  # Not the main thread.
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()

  def stop_requested(self) -> str | None:
    """The signal name when any process received one. On several hosts all processes must stop at the same step, so
    this is a collective there (a tiny all-gather per step: it waits for the step, a few ms of idle device time)."""
    if jax.process_count() == 1:
      return self.received
    names = [s.name for s in self.SIGNALS]
    code = names.index(self.received) + 1 if self.received else 0
    codes = np.asarray(multihost_utils.process_allgather(np.int32(code)))
    return names[int(codes.max()) - 1] if codes.max() else None


# --- Logging helpers -----------------------------------------------------------------------------------------


def _host_scalars(metrics: dict[str, jax.Array]) -> dict[str, float]:
  """Replicated scalars to host floats (addressable_data: also works when the array spans several hosts)."""
  return {k: float(np.asarray(v.addressable_data(0))) for k, v in metrics.items()}


def image_grid(columns: list[np.ndarray]) -> np.ndarray:
  """(H, W, 3) uint8: one row per example, the (N, h, w_i, 3) `columns` side by side; values in [0, 1]."""
  rows = np.concatenate([np.asarray(c, np.float32) for c in columns], axis=2)
  return (np.clip(rows.reshape((-1,) + rows.shape[2:]), 0, 1) * 255 + 0.5).astype(np.uint8)


class _Interval:
  """Per-step metrics of one log interval: finiteness checked step by step, means at the end."""

  def __init__(self):
    self.sums: dict[str, float] = {}
    self.count = 0
    self.last: dict[str, float] = {}

  def add(self, step: int, values: dict[str, float], last_checkpoint: Callable[[], str]) -> None:
    bad = {k: v for k, v in values.items() if not np.isfinite(v)}
    if bad:  # Never train on: a NaN here poisons every later step and checkpoint.
      terms = ', '.join(f'{k} = {v}' for k, v in bad.items())
      raise NonFiniteLossError(f'training stopped at step {step}: non-finite {terms}. {last_checkpoint()}')
    for k, v in values.items():
      self.sums[k] = self.sums.get(k, 0.0) + v
    self.count += 1
    self.last = values

  def means(self) -> dict[str, float]:
    out = {k: v / self.count for k, v in self.sums.items()}
    if 'lr' in out:
      out['lr'] = self.last['lr']  # The rate in force now, not its mean.
    return out


# --- The trainer ---------------------------------------------------------------------------------------------


def generator_variables(state: Any) -> dict[str, Any]:
  """G's flax variables in a train state: the one place where the loop looks inside the state."""
  return {'params': state.g.params, 'batch_stats': state.g.stats}


@dataclasses.dataclass
class RunResult:
  state: Any
  step: int
  stopped_by: str | None  # 'SIGTERM' / 'SIGINT' when a signal stopped the run early, else None.


@dataclasses.dataclass
class Trainer:
  """Everything a run needs that does not change while it trains: networks, optimisers, mesh, compiled functions.

  Build once with `Trainer.create(config)`; `run(workdir)` may be called for several work folders (each run reads
  its starting point from its own checkpoints only).
  """
  config: ml_collections.ConfigDict
  models: state_lib.Models
  optimizers: state_lib.Optimizers
  mesh: jax.sharding.Mesh
  train_step: step_lib.StepFn
  vgg_params: Any
  init_key: jax.Array
  init_fn: Callable[[jax.Array], Any]  # jitted key -> replicated fresh state.
  generate_fn: Callable[[Any, batch_lib.Batch], tuple[jax.Array, jax.Array]]  # (state, batch) -> G's frames and warped
  #   references, sharded like the batch: apply_generator on the state's G.
  preview_fn: Callable[..., dict[str, jax.Array]]  # jitted (batch, frames, warped) -> image-grid columns, replicated.
  apply_generator: inference.GenerateFn  # nn/inference.py make_generate_fn: (G's variables, batch).

  @classmethod
  def create(cls, config: ml_collections.ConfigDict, devices=None, init_key: jax.Array | None = None,
             num_examples: int | None = None) -> 'Trainer':
    """Checks the config (VGG weights first: refusing early costs nothing) and builds the step.

    `num_examples` (the training set's size; default: what the data source says, `sources.train_size`) defines an
    epoch of the learning-rate schedule when config.train.steps_per_epoch is 0.
    """
    vgg = vgg_lib.vgg19_from_config(config)  # ConfigError / WeightFileError when VGG is on and unusable.
    t = config.train
    for name in ('checkpoint_every', 'keep_checkpoints', 'log_every'):
      if t[name] < 1:
        raise ConfigError(f'config.train.{name} = {t[name]} must be >= 1')
    if t.image_every < 0 or t.image_examples < 1:
      raise ConfigError(f'config.train.image_every = {t.image_every} must be >= 0 and image_examples = '
                        f'{t.image_examples} >= 1')
    mesh = sharding_lib.make_mesh(devices)
    if t.batch_size % mesh.devices.size:
      raise ConfigError(f'config.train.batch_size = {t.batch_size} is not a multiple of the '
                        f'{mesh.devices.size} devices')
    models = state_lib.make_models(config)
    if num_examples is None and not t.steps_per_epoch:  # Epochs over the training set: ask the source its size.
      num_examples = sources.train_size(config)
    optimizers = state_lib.make_optimizers(config, num_examples)
    vgg_apply, vgg_params = vgg if vgg is not None else (None, None)
    if vgg_params is not None:
      vgg_params = jax.device_put(vgg_params, sharding_lib.replicated(mesh))
    train_step = step_lib.make_train_step(config, models, optimizers, mesh, vgg_apply)
    repl, sharded = sharding_lib.replicated(mesh), sharding_lib.batch_sharding(mesh)
    init_fn = state_lib.jit_init_state(config, models, optimizers, out_shardings=repl)

    n = min(t.image_examples, t.batch_size)
    box, size = batch_lib.mouth_box_size(config), config.image_size

    def preview(batch: batch_lib.Batch, image: jax.Array, warped: jax.Array) -> dict[str, jax.Array]:
      first, image, warped = jax.tree.map(lambda x: x[:n], (batch, image, warped))
      mouths = [crop_mouth(im, first.mouth, box, size // 2) for im in (image, first.y)]
      to01 = lambda x: (x.astype(jnp.float32) + 1) / 2  # noqa: E731
      return {'x_t': first.x_t, 'warped': to01(warped), 'generated': to01(image), 'target': to01(first.y),
              'mouth': to01(jnp.concatenate(mouths, axis=1))}

    # One compilation of G's forward pass serves the image grids and the evaluations (same batch size).
    apply_generator = inference.make_generate_fn(models.generator, mesh)
    generate_fn = lambda state, batch: apply_generator(generator_variables(state), batch)  # noqa: E731
    preview_fn = jax.jit(preview, in_shardings=(sharded, sharded, sharded), out_shardings=repl)
    root = jax.random.key(config.seed)
    return cls(config, models, optimizers, mesh, train_step, vgg_params,
               jax.random.split(root)[0] if init_key is None else init_key, init_fn, generate_fn, preview_fn,
               apply_generator)

  def init_state(self) -> Any:
    return self.init_fn(self.init_key)

  def abstract_state(self) -> Any:
    """Shapes, dtypes and (replicated) shardings of the state, for restoring into."""
    abstract = jax.eval_shape(self.init_fn, self.init_key)
    sharding = sharding_lib.replicated(self.mesh)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), abstract)

  def restore(self, workdir: str | os.PathLike, step: int | None = None) -> tuple[Any, int]:
    """(state, step) of checkpoint `step` (default the newest whole one: workdir.find) of the run in `workdir`,
    replicated on the mesh: the whole TrainState (G alone, for inference: workdir.load). CheckpointError when
    there is no such checkpoint or it is damaged."""
    step = workdir_lib.find(workdir, step).step
    with self.checkpoint_manager(workdir) as manager:
      restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(self.abstract_state())))
    return restored.state, step

  def checkpoint_manager(self, workdir: str | os.PathLike, cleanup: bool = False) -> ocp.CheckpointManager:
    """orbax's manager of WORKDIR/checkpoints; `cleanup` removes the temporary folders of checkpoints whose writing
    never finished (a run killed while writing): only for the run holding the work folder's lock, as a reader beside
    a live run would remove the checkpoint it is writing."""
    # No save_interval_steps: orbax would also save the first step of a fresh run; `run` decides when to save.
    options = ocp.CheckpointManagerOptions(max_to_keep=self.config.train.keep_checkpoints, create=True,
                                           cleanup_tmp_directories=cleanup)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(os.fspath(workdir), CHECKPOINT_DIR)), options=options)

  def save(self, manager: ocp.CheckpointManager, step: int, state: Any, iterator: sources.TrainIterator) -> None:
    """A checkpoint of `state` and of every process's data-iterator position (collective on several hosts)."""
    states = [iterator.get_state()]
    if jax.process_count() > 1:  # Each process has its own position: gather them all into the one JSON item.
      text = np.frombuffer(json.dumps(states[0]).encode(), np.uint8)
      size = int(np.max(multihost_utils.process_allgather(np.int32(text.size))))
      padded = np.zeros(size, np.uint8)
      padded[:text.size] = text
      gathered = np.asarray(multihost_utils.process_allgather(padded))
      states = [json.loads(bytes(row).rstrip(b'\0').decode()) for row in gathered]
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave({'process_count': jax.process_count(), 'iterator_states': states})))

  def restore_or_init(self, manager: ocp.CheckpointManager, iterator: sources.TrainIterator,
                      step: int | None) -> tuple[Any, int]:
    """(state, step) of checkpoint `step` (the iterator set to its position), or a fresh state and 0 for None.
    CheckpointError when the checkpoint does not restore into this trainer's state."""
    if step is None:
      return self.init_state(), 0
    folder = os.path.join(os.fspath(manager.directory), str(step))
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(self.abstract_state()), data=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-exception-caught  # orbax / tensorstore raise plain Exceptions.
      # It was found whole (set_aside_damaged), so this is no damage: most likely other code or another config.
      raise CheckpointError(f'{folder} is whole but does not restore into this run\'s train state: '
                            f'{(str(e).strip().splitlines() or [type(e).__name__])[0][:300]}') from e
    if jax.process_index() == 0 and not os.path.exists(os.path.join(folder, workdir_lib.CHECKSUMS_FILE)):
      workdir_lib.write_checksums(folder)  # Read back whole and restored: later checks compare instead of reading.
    saved = restored.data
    if saved['process_count'] != jax.process_count():
      raise ConfigError(f'the checkpoint at step {step} in {manager.directory} was written by '
                        f'{saved["process_count"]} processes, this run has {jax.process_count()}: each process\'s '
                        'data position cannot be carried over; resume with the same number of processes')
    iterator.set_state(saved['iterator_states'][jax.process_index()])
    return restored.state, step

  def run(self, workdir: str | os.PathLike, num_steps: int | None = None, progress: bool = True,
          iterator: sources.TrainIterator | None = None) -> RunResult:
    """Trains until `num_steps` (default total_steps(config)) steps are done in total, resuming from `workdir`.

    `iterator` replaces the config's data source (it must keep the same contract). WorkdirBusyError when another
    live process trains in `workdir`; the work folder's lock is held until this returns. CheckpointError (one line:
    workdir.no_space_message) when a write fails for lack of space.
    """
    workdir = os.path.abspath(os.fspath(workdir))
    with hold_workdir(workdir), workdir_lib.stop_on_no_space(workdir):
      return self._run(workdir, num_steps, progress, iterator)

  def _run(self, workdir: str, num_steps: int | None, progress: bool,
           iterator: sources.TrainIterator | None) -> RunResult:
    config, t = self.config, self.config.train
    iterator = sources.make_train_iterator(config, self.mesh) if iterator is None else iterator
    num_steps = total_steps(config, getattr(iterator, 'num_examples', None)) if num_steps is None else num_steps
    if num_steps < 0:
      raise ConfigError(f'the number of train steps ({num_steps}) must be >= 0')
    evals = evals_lib.make_evals(config)
    eval_sets = {ev.name: sources.make_eval_batches(config, self.mesh, ev.split, ev.spec) for ev in evals}
    save_or_check_config(config, workdir)
    is_writer = jax.process_index() == 0
    if is_writer:  # The folder then reenacts and evaluates its checkpoints without the dataset.
      workdir_lib.write_assets(config, workdir)
    resume = resume_step(workdir)  # Before orbax's manager lists the folder: damaged ones are moved aside first.
    with contextlib.ExitStack() as stack:
      manager = stack.enter_context(self.checkpoint_manager(workdir, cleanup=True))
      state, start = self.restore_or_init(manager, iterator, resume)
      if start > num_steps:
        raise ConfigError(f'{workdir} holds a checkpoint at step {start}, beyond the requested {num_steps} steps')
      writer = stack.enter_context(metric_writer.MetricWriter(os.path.join(workdir, TENSORBOARD_DIR), is_writer))
      if start == 0:
        writer.write_hparams(config, HPARAM_METRICS)
      signals = stack.enter_context(StopSignals())
      bar = stack.enter_context(tqdm.tqdm(total=num_steps, initial=start, unit='step', dynamic_ncols=True,
                                          disable=not (progress and is_writer)))

      unsealed: list[int] = []  # Steps saved by this run whose checksums.json is not written yet.

      def seal() -> None:
        """checksums.json of the checkpoints orbax has finished (process 0): what readers check them against."""
        for saved in unsealed if is_writer else ():
          folder = os.path.join(os.fspath(manager.directory), str(saved))
          if os.path.isdir(folder):  # Not when keep_checkpoints removed it already.
            workdir_lib.write_checksums(folder)
        unsealed.clear()

      def last_checkpoint() -> str:
        manager.wait_until_finished()
        seal()
        good = manager.latest_step()
        if good is None:
          return 'No checkpoint was written yet.'
        return f'The last good checkpoint is step {good}: {os.path.join(manager.directory, str(good))}.'

      interval, pending = _Interval(), None
      mark_step, mark_time = start, time.perf_counter()
      done, stopped_by = start, None

      def check_pending():  # The metrics of the step before: checked once the host can read them.
        nonlocal pending
        if pending is not None:
          interval.add(pending[0], _host_scalars(pending[1]), last_checkpoint)
          pending = None

      for step in range(start, num_steps):
        batch = next(iterator)
        state, metrics = self.train_step(state, batch, self.vgg_params, step=step)
        check_pending()  # The step before's metrics are ready by now: reading them does not stall the device.
        done, pending = step + 1, (step + 1, metrics)
        stopped_by = signals.stop_requested()
        final, stop = done == num_steps, stopped_by is not None
        do_log = done % t.log_every == 0 or final or stop
        do_save = done % t.checkpoint_every == 0 or final or stop
        do_image = t.image_every and (done % t.image_every == 0 or final)  # Not when stopping: time is short then.
        due_evals = [ev for ev in evals if ev.due(done, num_steps)]
        if do_log or do_save or do_image or due_evals:
          check_pending()  # Never log or save a step whose metrics were not checked.
        if do_log:
          now = time.perf_counter()
          rate = (done - mark_step) / max(now - mark_time, 1e-9)
          means = interval.means()
          writer.write_scalars(done, {f'train/{k}': v for k, v in means.items()})
          writer.write_scalars(done, {'perf/steps_per_s': rate, 'perf/examples_per_s': rate * t.batch_size})
          bar.set_postfix(g=f"{means['g_total']:.3f}", l1=f"{means['g_l1']:.4f}", d=f"{means['d_total']:.3f}")
          interval, mark_step, mark_time = _Interval(), done, now
        if do_image:
          columns = self.preview_fn(batch, *self.generate_fn(state, batch))
          grid = image_grid([np.asarray(columns[k].addressable_data(0)) for k in PREVIEW_COLUMNS])
          writer.write_images(done, {'images/train': grid})
        for ev in due_evals:
          generate = lambda b: self.generate_fn(state, b)[0]  # noqa: E731
          writer.write_scalars(done, evals_lib.run_eval(ev, generate, eval_sets[ev.name]))
        if do_save:
          manager.wait_until_finished()  # orbax's save waits for the previous one anyway; then it can be sealed.
          seal()
          self.save(manager, done, state, iterator)
          unsealed.append(done)
        elif unsealed and not manager.is_saving_in_progress():  # Sealed as soon as orbax is done: a run killed
          seal()                                                # later leaves it checkable by its checksums.
        bar.update(1)
        if stopped_by is not None:
          break
      check_pending()
      writer.flush()
      manager.wait_until_finished()
      seal()
    return RunResult(state, done, stopped_by)
