"""In-loop evaluation: the evaluators named in `config.evals` run every N steps on held-out batches.

  config.evals.<name> = ml_collections.ConfigDict(dict(type='package.module:factory', every=1000, split='test', ...))

`type` names a factory `factory(config, spec) -> FrameEvaluator` (spec is the entry's ConfigDict, so an evaluator
reads its own options from it). A FrameEvaluator consumes generated and ground-truth frames batch by batch:

  reset()                                   before each evaluation
  update(generated, batch)                  generated: (B, H, W, 3) float32 in [-1, 1], G's output for `batch`
                                            (a train.data.Batch; batch.y is the ground truth, batch.x_t the 3D face
                                            for face masks); global arrays sharded over the mesh, as in training
  result() -> Mapping[str, float]           the scalars, written to TensorBoard as eval/<name>/<key>

The loop owns the data (the held-out split of config.data.source, see data.sources.make_eval_batches) and the
generation (G's forward pass with its spectral-norm statistics read only), so an evaluator sees frames only and the
same evaluator can serve evaluate.py. On several hosts every process calls update() with the same global arrays:
compute with jax on them (jit inserts the collectives), or gather with jax.experimental.multihost_utils.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import jax
import ml_collections

from headgan_jax.errors import ConfigError
from headgan_jax.train import data


class FrameEvaluator(Protocol):

  def reset(self) -> None: ...

  def update(self, generated: jax.Array, batch: data.Batch) -> None: ...

  def result(self) -> Mapping[str, float]: ...


@dataclasses.dataclass
class Eval:
  """One entry of config.evals, resolved."""
  name: str
  every: int
  split: str
  spec: ml_collections.ConfigDict
  evaluator: FrameEvaluator

  def due(self, step: int, last_step: int) -> bool:
    return step % self.every == 0 or step == last_step


def _resolve(type_name: str, name: str) -> Callable[..., FrameEvaluator]:
  module, sep, attr = type_name.partition(':')
  if not sep:
    raise ConfigError(f"config.evals.{name}.type = {type_name!r}: expected 'package.module:factory'")
  try:
    return getattr(importlib.import_module(module), attr)
  except (ImportError, AttributeError) as e:
    raise ConfigError(f'config.evals.{name}.type = {type_name!r} cannot be loaded: {e}') from e


def make_evals(config: ml_collections.ConfigDict) -> list[Eval]:
  """The evaluators of config.evals (ConfigError naming the entry and field when one is malformed)."""
  out = []
  for name, spec in config.get('evals', ml_collections.ConfigDict()).items():
    for field in ('type', 'every'):
      if field not in spec:
        raise ConfigError(f'config.evals.{name} has no {field!r} field')
    if int(spec.every) < 0:
      raise ConfigError(f'config.evals.{name}.every = {spec.every} must be >= 0')
    if int(spec.every) == 0:  # evaluate.py only.
      continue
    factory = _resolve(spec.type, name)
    out.append(Eval(name, int(spec.every), spec.get('split', 'test'), spec, factory(config, spec)))
  return out


def run_eval(ev: Eval, generate: Callable[[data.Batch], jax.Array], batches: Iterable[data.Batch]) -> dict[str, Any]:
  """{'eval/<name>/<key>': value} of one evaluator over `batches`, with G's frames from `generate`."""
  ev.evaluator.reset()
  count = 0
  for batch in batches:
    ev.evaluator.update(generate(batch), batch)
    count += 1
  if not count:
    raise ConfigError(f'config.evals.{ev.name}: the {ev.split!r} split gave no batches')
  return {f'eval/{ev.name}/{key}': float(value) for key, value in ev.evaluator.result().items()}
