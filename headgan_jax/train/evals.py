"""In-loop evaluation: the entries of `config.evals` with `every` > 0 run every N steps on held-out batches.

There is one evaluator interface in the project, `headgan_jax.metrics.evaluators.Evaluator` (reset / update(batch
dict) / result, built by `evaluators.from_config`); evaluate.py uses the same entries. An entry

  config.evals.<name> = dict(type='image', every=1000, split='test', num_batches=2, ...)

runs in the loop when `every` > 0 (0 = evaluate.py only), on the held-out batches of `split` of config.data.source
(data.sources.make_eval_batches; `num_batches` and `identities` are read there). `type` is a registered metric
('image', 'csim', 'fid', 'fvd', 'aed') or 'package.module:Name' for an evaluator of your own.

The loop owns the data and the generation (G's forward pass); `frames_batch` turns G's frames for one training
`Batch` into the evaluators' batch dict: one frame per example (T = 1), the ground truth y_t as target and driving
frame, y_ref as reference and the face mask of x_t (the training loss's). Metrics that need more than one frame
(FVD) or a face fit (AED) are for evaluate.py; in the loop they report themselves skipped (a warning, no scalar).
Results are written to TensorBoard as eval/<name>/<key>.
"""
from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from headgan_jax.data import batch as batch_lib
from headgan_jax.errors import ConfigError
from headgan_jax.face3d import mouth
from headgan_jax.metrics import evaluators as ev_lib
from headgan_jax.train import losses


@dataclasses.dataclass
class Eval:
  """One entry of config.evals that the loop runs, resolved."""
  name: str
  every: int
  split: str
  spec: ml_collections.ConfigDict
  evaluator: ev_lib.Evaluator
  mouth_box_size: int  # Side of the mouth box (data.batch.mouth_box_size) for the mouth image metrics.
  face_mask_threshold: float = 0.01

  def due(self, step: int, last_step: int) -> bool:
    return step % self.every == 0 or step == last_step


def make_evals(config: ml_collections.ConfigDict) -> list[Eval]:
  """The in-loop evaluators of config.evals (ConfigError naming the entry and field when one is malformed)."""
  evals_cfg = config.get('evals', ml_collections.ConfigDict())
  names = []
  for name, spec in evals_cfg.items():
    if 'every' not in spec:
      raise ConfigError(f'config.evals.{name} has no \'every\' field')
    if int(spec.every) < 0:
      raise ConfigError(f'config.evals.{name}.every = {spec.every} must be >= 0')
    if int(spec.every) > 0:
      names.append(name)
  built = ev_lib.from_config(evals_cfg, names)
  threshold = float(config.loss.get('face_mask_threshold', 0.01))
  box = batch_lib.mouth_box_size(config)
  return [Eval(name, int(evals_cfg[name].every), evals_cfg[name].get('split', 'test'), evals_cfg[name], ev, box,
               threshold) for name, ev in built.items()]


def _host(x: jax.Array) -> np.ndarray:
  """A global array on the host (every process gets all of it)."""
  if getattr(x, 'is_fully_addressable', True):
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def frames_batch(generated: jax.Array, batch: batch_lib.Batch, face_mask_threshold: float = 0.01, *,
                 mouth_box_size: int) -> dict[str, Any]:
  """The evaluators' batch dict of G's frames for a training Batch (T = 1 frame per example); the mouth mask is the
  mouth_box_size square at batch.mouth."""
  mask = losses.face_mask(batch.x_t, face_mask_threshold)[..., 0]
  mouth_mask = mouth.box_mask(batch.mouth, mouth_box_size, *batch.y.shape[1:3])
  y = _host(batch.y)[:, None]
  return {'generated': _host(generated)[:, None], 'target': y, 'driving': y, 'reference': _host(batch.y_ref),
          'face_mask': _host(mask)[:, None], 'mouth_mask': _host(mouth_mask)[:, None]}


def run_eval(ev: Eval, generate: Callable[[batch_lib.Batch], jax.Array],
             batches: Iterable[batch_lib.Batch]) -> dict[str, Any]:
  """{'eval/<name>/<key>': value} of one evaluator over `batches`, with G's frames from `generate`."""
  ev.evaluator.reset()
  count = 0
  for batch in batches:
    ev.evaluator.update(frames_batch(generate(batch), batch, ev.face_mask_threshold, mouth_box_size=ev.mouth_box_size))
    count += 1
  if not count:
    raise ConfigError(f'config.evals.{ev.name}: the {ev.split!r} split gave no batches')
  values = ev.evaluator.result()
  if not values and ev.evaluator.skipped:
    warnings.warn(f'config.evals.{ev.name} measured nothing in the loop: {ev.evaluator.skipped}', UserWarning,
                  stacklevel=2)
  return {f'eval/{ev.name}/{key}': float(value) for key, value in values.items()}
