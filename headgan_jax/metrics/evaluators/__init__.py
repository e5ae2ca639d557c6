"""Evaluators by name (big_vision's `config.evals` pattern), shared by evaluate.py and the training loop.

`config.evals` is a ConfigDict of named entries, each with a `type` (a key of `REGISTRY`: the module
headgan_jax/metrics/evaluators/<type>.py, one per evaluator) and its settings, e.g.

  config.evals.fid = dict(type='fid', inception_weights='/path/pt_inception-2015-12-05-6726825d.pth', every=0)

This is the ONE evaluator interface of the project: evaluate.py (headgan_jax/evaluate.py) and the training
loop's in-loop evaluation (headgan_jax/train/evals.py, entries with `every` > 0) both build their evaluators here.
`from_config(config.evals)` builds one evaluator per entry. A caller calls `reset()`, streams batches in with
`update(batch)` and reads `result()` at the end, so memory stays bounded over a whole test split (features are folded
into running statistics as they come). `type` is a key of `REGISTRY` (`get(type)` imports only that evaluator's
module) or, for an evaluator of your own, 'package.module:Name' where Name(name, spec) (or
Name.from_config(name, spec)) returns an `Evaluator` (the interface: evaluators/base.py).
A batch is a dict of numpy / jax arrays:

  generated         (B, T, H, W, 3)  generated frames, uint8 or float in [-1, 1]
  target            (B, T, H, W, 3)  ground-truth frames (self-reenactment only)
  driving           (B, T, H, W, 3)  driving frames (real frames for FID / FVD when there is no target)
  reference         (B, H, W, 3)     the reference (source) image
  face_mask         (B, T, H, W)     optional face region for the masked image metrics
  mouth_mask        (B, T, H, W)     optional mouth box (D_m's window, face3d.mouth.box_mask) for l1/psnr/ssim_mouth
  exp_generated, exp_driving          (B, T, K) fitted expression coefficients
  camera_generated, camera_driving    face3d.camera.Camera with (B, T, ...) leaves
  exp_valid         (B, T) bool      optional: frames whose two fits are both valid (AED / APD use only those)

An evaluator whose network has no weight file configured (ArcFace, InceptionV3) is built as `Skipped`, which
says why in the results: never a silent gap. One whose inputs are absent from a protocol (e.g. image metrics
without ground truth) says so in `skipped` too.
"""
from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping
from typing import Any

from headgan_jax.errors import ConfigError
from headgan_jax.metrics.evaluators.base import Evaluator, Skipped, check_batch  # noqa: F401  (the interface)

# type -> 'module:Class', imported on first use (FID's and FVD's networks need packages the others do not).
REGISTRY: dict[str, str] = {
    'csim': 'headgan_jax.metrics.evaluators.csim:CSIMEvaluator',
    'fid': 'headgan_jax.metrics.evaluators.fid:FIDEvaluator',
    'fvd': 'headgan_jax.metrics.evaluators.fvd:FVDEvaluator',
    'image': 'headgan_jax.metrics.evaluators.image:ImageEvaluator',
    'aed': 'headgan_jax.metrics.evaluators.aed:AEDEvaluator',
}


def get(kind: str, name: str | None = None) -> Any:
  """The evaluator class of `config.evals.<name>.type` = `kind`: a REGISTRY key or 'package.module:Name'."""
  name = kind if name is None else name
  module, sep, attr = str(REGISTRY.get(kind, kind)).partition(':')
  if not sep:
    raise ConfigError(f"config.evals.{name}.type is {kind!r}; known types: {sorted(REGISTRY)} or "
                      "'package.module:Name'")
  try:
    return getattr(importlib.import_module(module), attr)
  except (ImportError, AttributeError) as e:
    raise ConfigError(f'config.evals.{name}.type = {kind!r} cannot be loaded: {e}') from e


def from_config(evals_cfg, names=None) -> dict[str, Evaluator]:
  """One evaluator per entry of `config.evals` (or the given names), in the config's order.

  Evaluators whose network has no weight file become `Skipped` with the reason, warned once here.
  """
  out = {}
  for name in (names if names is not None else list(evals_cfg.keys())):
    if name not in evals_cfg:
      raise ConfigError(f'config.evals has no entry {name!r} (it has {sorted(evals_cfg.keys())})')
    cfg = evals_cfg[name]
    factory = get(cfg.get('type', name), name)
    ev = factory.from_config(name, cfg) if hasattr(factory, 'from_config') else factory(name, cfg)
    if not isinstance(ev, Evaluator):
      raise ConfigError(f'config.evals.{name}.type = {cfg.get("type", name)!r} built a {type(ev).__name__}, not a '
                        'headgan_jax.metrics.evaluators.Evaluator')
    if isinstance(ev, Skipped):
      warnings.warn(f'Evaluator {name} is skipped: {ev.skipped}', UserWarning, stacklevel=2)
    out[name] = ev
  return out


def due(evaluator: Evaluator, step: int) -> bool:
  """Whether the training loop runs this evaluator at `step` (`every` > 0 and step a multiple of it)."""
  return evaluator.every > 0 and step > 0 and step % evaluator.every == 0


def results(evaluators: Mapping[str, Evaluator]) -> dict[str, dict]:
  """{name: {'values': {...}, 'network': str | None, 'skipped': reason | None}} for every evaluator."""
  out = {}
  for name, ev in evaluators.items():
    values = ev.result()
    reason = ev.skipped if not values else None
    if not values and reason is None:
      reason = 'no samples were given'
    out[name] = {'type': type(ev).__name__, 'values': values, 'network': ev.network, 'skipped': reason}
  return out
