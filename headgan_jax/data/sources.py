"""Training data sources by name (`config.data.source`): each name maps to a function that builds a train iterator.

The iterator contract (the training loop, headgan_jax/train/loop.py, relies on exactly this):

  make(config, mesh) -> iterator, with
    next(iterator) -> data.batch.Batch: the GLOBAL batch of the next train step (config.train.batch_size examples),
        every field a jax.Array sharded along its first axis with `sharding.batch_sharding(mesh)`. Each process
        loads only the rows its own devices hold and assembles the global array with
        `jax.make_array_from_process_local_data` (see `local_rows` and `make_global_batch`), so the same code runs on
        one host and on a pod. Every process calls next() once per step, in lockstep.
    iterator.get_state() -> a JSON-serialisable value: this process's position (e.g. grain's DatasetIterator state).
    iterator.set_state(state): continue from a state get_state() returned, so that the next batch is exactly the
        one an uninterrupted run would have seen. The loop saves every process's state with every checkpoint.
    iterator.num_examples (optional attribute): the size of the training set, which defines an epoch when
        config.train.steps_per_epoch is 0.

  size(config) -> int (optional): the training set's size (examples in an epoch), read without building the
    iterator, so that the learning-rate schedule can be built before training starts when
    config.train.steps_per_epoch is 0.

  make_eval(config, mesh, split, spec) -> a re-iterable of global Batches (sharded as above): the held-out frames of
    `split` for in-loop evaluation (train/evals.py), the same batches, in the same order, each time it is iterated.
    `spec` is the config.evals entry asking (it may carry options such as a batch count).

A source registers itself here under its name, as a function or as a lazily imported 'module:function' string (so
that a heavy input pipeline is imported only when it is used). 'synthetic' is built in; the dataset code registers
'headgan_demo' and 'headgan_voxceleb'.
"""
from __future__ import annotations

import functools
import importlib
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding

from headgan_jax.data import batch as batch_lib
from headgan_jax.errors import ConfigError
from headgan_jax.sharding import batch_sharding


class TrainIterator(Protocol):
  """What a data source returns (see the module docstring)."""

  def __next__(self) -> batch_lib.Batch: ...

  def get_state(self) -> Any: ...

  def set_state(self, state: Any) -> None: ...


SourceFn = Callable[[ml_collections.ConfigDict, Mesh], TrainIterator]
EvalFn = Callable[[ml_collections.ConfigDict, Mesh, str, ml_collections.ConfigDict], Iterable[batch_lib.Batch]]

# Name -> builder or 'module:function', for training and for held-out evaluation. Filled here, at import time.
SOURCES: dict[str, SourceFn | str] = {
    'synthetic': 'headgan_jax.data.sources:synthetic',
    'headgan_demo': 'headgan_jax.data.pipeline:train_iterator',
    'headgan_voxceleb': 'headgan_jax.data.pipeline:train_iterator',
}
EVAL_SOURCES: dict[str, EvalFn | str] = {
    'synthetic': 'headgan_jax.data.sources:synthetic_eval',
    'headgan_demo': 'headgan_jax.data.pipeline:eval_batches',
    'headgan_voxceleb': 'headgan_jax.data.pipeline:eval_batches',
}

SIZES: dict[str, Callable[[ml_collections.ConfigDict], int] | str] = {
    'headgan_demo': 'headgan_jax.data.pipeline:train_size',
    'headgan_voxceleb': 'headgan_jax.data.pipeline:train_size',
}


def _resolve(fn: Any) -> Callable[..., Any]:
  if isinstance(fn, str):
    module, attr = fn.split(':')
    fn = getattr(importlib.import_module(module), attr)
  return fn


def train_size(config: ml_collections.ConfigDict) -> int | None:
  """The training set's size of source `config.data.source`, or None when the source has none (synthetic)."""
  fn = SIZES.get(config.data.source)
  return None if fn is None else int(_resolve(fn)(config))


def _lookup(table: dict[str, Any], config: ml_collections.ConfigDict, mesh: Mesh, what: str) -> Callable[..., Any]:
  name = config.data.source
  if name not in table:
    raise ConfigError(f'config.data.source = {name!r} has no {what} (known sources: {", ".join(sorted(table))}); '
                      '--config.data.source=synthetic trains on synthetic batches')
  fn = _resolve(table[name])
  if config.train.batch_size % mesh.devices.size:
    raise ConfigError(f'config.train.batch_size = {config.train.batch_size} is not a multiple of the '
                      f'{mesh.devices.size} devices of the mesh')
  return fn


def make_train_iterator(config: ml_collections.ConfigDict, mesh: Mesh) -> TrainIterator:
  """The train iterator of source `config.data.source` on `mesh` (ConfigError naming the known sources)."""
  return _lookup(SOURCES, config, mesh, 'train iterator')(config, mesh)


def make_eval_batches(config: ml_collections.ConfigDict, mesh: Mesh, split: str,
                      spec: ml_collections.ConfigDict) -> Iterable[batch_lib.Batch]:
  """The held-out batches of `split` of source `config.data.source` (see the module docstring)."""
  return _lookup(EVAL_SOURCES, config, mesh, 'held-out split')(config, mesh, split, spec)


def local_rows(sharding: NamedSharding, batch_size: int) -> tuple[int, int]:
  """[start, stop) of the global batch rows that this process's devices hold under `sharding` (must be one block)."""
  index_map = sharding.addressable_devices_indices_map((batch_size,))
  starts = sorted({idx[0].indices(batch_size)[:2] for idx in index_map.values()})
  lo, hi = starts[0][0], starts[-1][1]
  covered = sum(stop - start for start, stop in starts)
  if covered != hi - lo:  # A process's devices are one contiguous block of a 1-D mesh over jax.devices().
    raise ConfigError(f'process {jax.process_index()} holds batch rows {starts}, not one contiguous block; build the '
                      'mesh over jax.devices() in their default order')
  return lo, hi


def make_global_batch(local: batch_lib.Batch, sharding: NamedSharding, batch_size: int) -> batch_lib.Batch:
  """The global Batch whose rows local_rows(sharding, batch_size) are `local` (host or device arrays)."""
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x, (batch_size,) + tuple(x.shape[1:])), local)


@functools.lru_cache(maxsize=4)
def _synthetic_rows_fn(config: ml_collections.FrozenConfigDict) -> Callable[..., batch_lib.Batch]:
  """jitted (key, step, rows) -> the synthetic examples `rows` of step `step` (one compilation per config)."""

  def make(key, step, rows):
    step_key = jax.random.fold_in(key, step)
    one = lambda r: batch_lib.synthetic_batch(jax.random.fold_in(step_key, r), config, 1)  # noqa: E731
    return jax.tree.map(lambda x: x[:, 0], jax.vmap(one)(rows))

  return jax.jit(make)


class SyntheticIterator:
  """Synthetic batches (data/batch.py's moving-ellipse faces): example i of step s is a pure function of
  (config.seed, s, i), so every process makes only its own rows, any device layout gives the same global batches,
  and the state is just the step."""

  def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh, stream: int = 0x5EED):
    self._batch_size = config.train.batch_size
    self._sharding = batch_sharding(mesh)
    lo, hi = local_rows(self._sharding, self._batch_size)
    self._rows = np.arange(lo, hi, dtype=np.uint32)
    # A stream of its own, apart from the parameters' initialisation key (and from the held-out batches).
    self._key = jax.random.fold_in(jax.random.key(config.seed, impl='threefry2x32'), stream)
    self._make = _synthetic_rows_fn(ml_collections.FrozenConfigDict(config))
    self._step = 0

  def __iter__(self):
    return self

  def __next__(self) -> batch_lib.Batch:
    local = self._make(self._key, np.uint32(self._step), self._rows)
    self._step += 1
    return make_global_batch(local, self._sharding, self._batch_size)

  def get_state(self) -> dict[str, int]:
    return {'step': self._step}

  def set_state(self, state: dict[str, int]) -> None:
    self._step = int(state['step'])


def synthetic(config: ml_collections.ConfigDict, mesh: Mesh) -> SyntheticIterator:
  return SyntheticIterator(config, mesh)


class SyntheticEvalSet:
  """`num_batches` (spec field, default 2) synthetic batches of a stream of their own per split name."""

  def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh, split: str, spec: ml_collections.ConfigDict):
    self._iterator = SyntheticIterator(config, mesh, stream=zlib.crc32(f'eval/{split}'.encode()) & 0x7FFFFFFF)
    self._num_batches = int(spec.get('num_batches', 2))

  def __iter__(self) -> Iterator[batch_lib.Batch]:
    self._iterator.set_state({'step': 0})
    for _ in range(self._num_batches):
      yield next(self._iterator)


def synthetic_eval(config: ml_collections.ConfigDict, mesh: Mesh, split: str,
                   spec: ml_collections.ConfigDict) -> SyntheticEvalSet:
  return SyntheticEvalSet(config, mesh, split, spec)
