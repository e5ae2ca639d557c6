"""evaluate.py: a trained checkpoint on the test split of its dataset, under the paper's two protocols.

  python evaluate.py --workdir W                                   # config W/config.json, latest checkpoint
  python evaluate.py --config W/config.json --workdir W --out W/eval.json [--checkpoint STEP]
                     [--max_clips N] [--max_frames N] [--protocols self,cross] [--track_size 256]

Protocols (Sec. 4.2-4.3; metrics/protocols.py): every record (sequence) of the test split of config.data.source is
a clip.
- self: the reference is the middle frame of the clip's pose-sorted reference set (the authors' test reference;
  config.data.test_reference = 'first': the clip's first tracked frame), every tracked frame drives G (x_{t-k:t} rendered from the
  stored fit, frames before the clip's start repeat its first, as in training; the clip's own audio), and the clip is
  the ground truth.
- cross: each clip drives once with the reference (as in self) of a clip of another identity (seeded
  choice); x_t is rendered with the REFERENCE's identity and the driver's expression and camera (eq. 1).
The evaluators are the entries of config.evals (all of them, whatever their `every`; metrics/evaluators/). For
AED / APD both the generated and the driving frames are tracked with the project's tracker (tracking/track.py), each
clip as a video, after upsampling to --track_size px (BlazeFace + the landmark model need faces larger than the
demo's 64 px crops); only frames fitted on both sides count.

Writes eval.json atomically (metrics/report.py: every metric per protocol, sample counts, networks, skipped
evaluators with their reason, the checkpoint) and prints the paper's Table 1 layout. Exit status 2 with one message
(no traceback) for a missing work folder / checkpoint, a config that differs from the run's, a source that is not a
dataset or an empty split.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from headgan_jax import config_files
from headgan_jax import workdir as workdir_lib
from headgan_jax.errors import ConfigError, DatasetError, HeadGANError

DEFAULT_TRACK_SIZE = 256


# --- Config and checkpoint -------------------------------------------------------------------------------------


def resolve_config(config_spec: str | None, workdir: str):
  """The config to evaluate with: --config, or WORKDIR/config.json; ConfigError when --config differs from the
  run's saved config in a field that changes what was trained (loop.RESUMABLE_FIELDS may differ, evals included)."""
  from headgan_jax.train import loop  # pylint: disable=import-outside-toplevel
  if not os.path.isdir(workdir):
    raise ConfigError(f'--workdir {workdir} does not exist (train.py --workdir {workdir} makes it)')
  saved_path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
  if config_spec is None:
    if not os.path.isfile(saved_path):
      raise ConfigError(f'{saved_path} does not exist: give --config, or a --workdir that train.py wrote')
    return config_files.load_json(saved_path)
  config = config_files.load(config_spec)
  if os.path.isfile(saved_path) and os.path.abspath(config_spec) != os.path.abspath(saved_path):
    diff = config_files.differences(config_files.load_json(saved_path), config, ignore=loop.RESUMABLE_FIELDS)
    if diff:
      raise ConfigError(f'--config {config_spec} does not match the run in {workdir} ({saved_path}):\n  ' +
                        '\n  '.join(diff))
  return config


@dataclasses.dataclass
class Restored:
  """G of one checkpoint, ready to run on the evaluation mesh."""
  mesh: Any  # jax.sharding.Mesh over the devices the evaluation batch splits evenly over.
  variables: dict  # G's variables, replicated on `mesh`.
  generate_fn: Any  # nn/inference.py: jitted (variables, Batch) -> (frames, warped references), sharded like the batch.
  step: int


def restore_generator(config, workdir: str, step: int | None) -> Restored:
  """G of checkpoint `step` (default the latest) of WORKDIR, alone (workdir.py: a partial restore, never
  D, D_m or the optimisers), replicated on a mesh over the devices that config.train.batch_size splits over."""
  import jax  # pylint: disable=import-outside-toplevel
  from headgan_jax import sharding as sharding_lib  # pylint: disable=import-outside-toplevel
  from headgan_jax.nn import generator as gen_lib, inference  # pylint: disable=import-outside-toplevel
  n = math.gcd(int(config.train.batch_size), jax.device_count())  # The eval batch splits evenly over the mesh.
  mesh = sharding_lib.make_mesh(jax.devices()[:n])
  ckpt = workdir_lib.load(workdir, step, config=config, sharding=sharding_lib.replicated(mesh),
                          step_flag='--checkpoint')
  return Restored(mesh, ckpt.variables, inference.make_generate_fn(gen_lib.make_generator(config), mesh), ckpt.step)


# --- Clips of the test split -----------------------------------------------------------------------------------


def test_clips(dataset, split: str = 'test', max_clips: int = 0, max_frames: int = 0,
               reference: str = 'middle') -> list[dict[str, Any]]:
  """The split's records in key order, each with 'frames_used' (tracked frames, at most max_frames) and 'ref' (the
  reference view, `pipeline.test_reference`: 'middle' or 'first'); records with fewer than 2 tracked frames are left
  out."""
  from headgan_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  source = dataset.split(split)
  if len(source) == 0:
    raise DatasetError(f'{dataset.path}: split {split!r} has no records')
  order = sorted(range(len(source)), key=lambda i: source[i]['key'])
  out = []
  for i in order:
    rec = dict(source[i])
    for field in ('key', 'identity', 'clip'):  # TFDS text features come back as bytes.
      if isinstance(rec.get(field), bytes):
        rec[field] = rec[field].decode()
    used = np.flatnonzero(np.asarray(rec['valid'], bool))
    if len(used) < 2:
      continue
    rec['ref'] = pipeline.test_reference(rec, reference)
    rec['frames_used'] = used[:max_frames] if max_frames else used
    out.append(rec)
  if not out:
    raise DatasetError(f'{dataset.path}: split {split!r} has no record with 2 or more tracked frames')
  return out[:max_clips] if max_clips else out


def cross_example(ref_rec, drv_rec, t: int, k: int, stats, standardise: str) -> dict[str, np.ndarray]:
  """One cross-identity example: the driver's frame t (expression, camera, audio, 2-D landmarks, ground-truth-free
  image y) with the reference's image, identity (for x_{t-k:t} too, eq. 1) and its reference frame's fit."""
  from headgan_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  ex = pipeline.make_example(drv_rec, t, ref_rec['ref'], k, stats, standardise)
  ex['p_id'] = np.broadcast_to(np.asarray(ref_rec['ref']['p_id'], np.float32), ex['p_id'].shape).copy()
  return ex


class GeneratedFrames:
  """G's frames for lists of examples: host rows -> pipeline.Assembler (x rendered on the device) -> G, in batches
  of config.train.batch_size (the last one padded by repetition)."""

  def __init__(self, config, restored: Restored, dataset):
    from headgan_jax.data import batch as batch_lib, pipeline  # pylint: disable=import-outside-toplevel
    from headgan_jax.face3d import mouth  # pylint: disable=import-outside-toplevel
    from headgan_jax.metrics import image as image_lib  # pylint: disable=import-outside-toplevel
    self._pipeline, self._image, self._mouth = pipeline, image_lib, mouth
    self.batch_size = int(config.train.batch_size)
    self.assembler = pipeline.Assembler(config, restored.mesh, dataset, self.batch_size)
    self.restored = restored
    self.threshold = float(config.loss.face_mask_threshold)
    self.mouth_box_size = batch_lib.mouth_box_size(config)

  def __call__(self, examples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """{'generated', 'y', 'y_ref', 'face_mask', 'mouth_mask'} (N, ...) numpy arrays of N examples; images in [-1, 1];
    the mouth mask is D_m's window of frame t (the fit's mouth box in y's pixels)."""
    outs: dict[str, list[np.ndarray]] = {'generated': [], 'y': [], 'y_ref': [], 'face_mask': [], 'mouth_mask': []}
    b = self.batch_size
    for i in range(0, len(examples), b):
      chunk = examples[i:i + b]
      n = len(chunk)
      chunk = chunk + [chunk[-1]] * (b - n)
      host = {f: np.stack([e[f] for e in chunk]) for f in self._pipeline.HOST_FIELDS}
      fields = self.assembler(host)
      generated, _ = self.restored.generate_fn(self.restored.variables, self._pipeline.to_batch(fields))
      mask = self._image.face_mask(fields['x_drive'][..., -3:], self.threshold)
      height, width = fields['y'].shape[1:3]
      mouth_mask = self._mouth.box_mask(fields['mouth'], self.mouth_box_size, height, width)
      for key, value in (('generated', generated), ('y', fields['y']), ('y_ref', fields['y_ref']),
                         ('face_mask', mask), ('mouth_mask', mouth_mask)):
        outs[key].append(np.asarray(value)[:n])
    return {k: np.concatenate(v) for k, v in outs.items()}


# --- Tracking for AED / APD ------------------------------------------------------------------------------------


class FrameTracker:
  """Expression and camera fits of frames with the project's tracker (tracking/track.py), each clip as one video, the
  frames upsampled to `size` px first (the detector misses faces in 64 px crops)."""

  def __init__(self, config, size: int = DEFAULT_TRACK_SIZE):
    from headgan_jax.tracking import track  # pylint: disable=import-outside-toplevel
    cfg = config.copy_and_resolve_references()
    cfg.image_size = int(size)
    self.size = int(size)
    self.tracker = track.Tracker(cfg)
    self.num_exp = self.tracker.model.num_exp

  def __call__(self, frames: np.ndarray, source: str) -> dict[str, Any]:
    """{'exp' (T, K), 'camera' (T, ...) Camera, 'valid' (T,)} of uint8 frames (T, H, W, 3)."""
    from headgan_jax.face3d import camera as cam_lib  # pylint: disable=import-outside-toplevel
    from headgan_jax.metrics import image as image_lib  # pylint: disable=import-outside-toplevel
    t = len(frames)
    empty = {'exp': np.zeros((t, self.num_exp), np.float32),
             'camera': cam_lib.Camera(np.tile(np.float32([1, 0, 0, 0, 1, 0]), (t, 1)), np.zeros((t, 2), np.float32),
                                      np.ones((t,), np.float32)),
             'valid': np.zeros((t,), bool)}
    if t < 2:
      return empty
    frames = image_lib.upsample_uint8(frames, self.size)
    # The tracker's stages 1-3 (detection, landmarks, video-mode fit) and its acceptance rule; the crops, masks and
    # mouth boxes of Tracker.finish are not needed here.
    try:
      loc = self.tracker.locate(frames, source)
    except HeadGANError:  # NoFaceFoundError: no face in any frame (e.g. an early generator's): nothing fitted.
      return empty
    if loc.rejected:  # No face, or boxes that jump: nothing fitted.
      return empty
    usable = loc.found & (loc.presence >= self.tracker.config.track.min_presence)
    if not usable.any():
      return empty
    fit = self.tracker.fit(loc.points, usable)
    accepted = fit['rms'] <= self.tracker.fit_settings.max_residual_px
    return {'exp': fit['p_exp'], 'camera': cam_lib.Camera(fit['rotation'], fit['translation'], fit['scale']),
            'valid': usable & accepted}


# --- The protocols ---------------------------------------------------------------------------------------------


def _u8(x: np.ndarray) -> np.ndarray:
  from headgan_jax.metrics import image as image_lib  # pylint: disable=import-outside-toplevel
  return image_lib.to_uint8(x)


def protocol_batches(protocol: str, clips: list[dict], generator: GeneratedFrames, tracker: FrameTracker | None, config,
                     dataset, seed: int = 0) -> Iterator[dict[str, Any]]:
  """The evaluators' batch of each clip (B = 1, T = the clip's frames used) under `protocol` ('self' / 'cross')."""
  import jax  # pylint: disable=import-outside-toplevel
  from headgan_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  from headgan_jax.metrics import protocols  # pylint: disable=import-outside-toplevel
  k = int(config.model.num_past_frames)
  standardise = str(config.audio.standardise)
  if protocol == 'self':
    pairs = [(i, i) for i in range(len(clips))]
  else:
    pairs = protocols.cross_pairs([c['identity'] for c in clips], seed)
  for ref_i, drv_i in pairs:
    ref, drv = clips[ref_i], clips[drv_i]
    ts = [int(t) for t in drv['frames_used']]
    if protocol == 'self':
      examples = [pipeline.make_example(drv, t, drv['ref'], k, dataset.audio_stats, standardise) for t in ts]
    else:
      examples = [cross_example(ref, drv, t, k, dataset.audio_stats, standardise) for t in ts]
    out = generator(examples)
    fits: dict[str, Any] = {}
    if tracker is not None:
      gen_fit = tracker(_u8(out['generated']), f'generated frames of {drv["key"]}')
      drv_fit = tracker(_u8(out['y']), f'test clip {drv["key"]}')
      add_b = lambda x: jax.tree.map(lambda a: np.asarray(a)[None], x)  # noqa: E731
      fits = dict(exp_generated=gen_fit['exp'][None], exp_driving=drv_fit['exp'][None],
                  camera_generated=add_b(gen_fit['camera']), camera_driving=add_b(drv_fit['camera']))
      valid = (gen_fit['valid'] & drv_fit['valid'])[None]
    if protocol == 'self':
      batch = protocols.self_reenactment_batch(out['y'][None], out['generated'][None],
                                               face_mask=out['face_mask'][None],
                                               mouth_mask=out['mouth_mask'][None], **fits)
    else:
      batch = protocols.cross_reenactment_batch(out['y_ref'][:1], out['y'][None], out['generated'][None], **fits)
    if tracker is not None:
      batch['exp_valid'] = valid
    yield batch


def evaluate(config, restored: Restored, *, protocols_to_run: Sequence[str] = ('self', 'cross'), max_clips: int = 0,
             max_frames: int = 0, track_size: int = DEFAULT_TRACK_SIZE, seed: int = 0,
             progress: bool = True) -> tuple[dict[str, dict], dict[str, Any]]:
  """({protocol: evaluators.results(...)}, meta) of the evaluators of config.evals on the test split."""
  import tqdm  # pylint: disable=import-outside-toplevel
  from headgan_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  from headgan_jax.metrics import evaluators as ev_lib  # pylint: disable=import-outside-toplevel
  from headgan_jax.metrics import protocols  # pylint: disable=import-outside-toplevel
  if config.data.source not in pipeline.DATASETS:
    raise ConfigError(f'config.data.source = {config.data.source!r}: evaluate.py needs a dataset with a test split '
                      f'({", ".join(pipeline.DATASETS)})')
  dataset = pipeline.open_dataset(config)
  pipeline.check_data_config(config)
  clips = test_clips(dataset, 'test', max_clips, max_frames, str(config.data.test_reference))
  for p in protocols_to_run:
    if p not in protocols.PROTOCOLS:
      raise ConfigError(f'--protocols: unknown protocol {p!r} (known: {", ".join(protocols.PROTOCOLS)})')
  evaluators = ev_lib.from_config(config.evals)  # Built once (network weights load once), reset per protocol.
  needs_fits = any(isinstance(e, ev_lib.get('aed')) for e in evaluators.values())
  tracker = FrameTracker(config, track_size) if needs_fits else None
  generator = GeneratedFrames(config, restored, dataset)
  results, counts = {}, {}
  for p in protocols_to_run:
    if p == 'cross' and len({c['identity'] for c in clips}) < 2:
      results[p] = {name: {'type': type(e).__name__, 'values': {}, 'network': e.network,
                           'skipped': 'the test clips evaluated hold only one identity'}
                    for name, e in evaluators.items()}
      continue
    for e in evaluators.values():
      e.reset()
    frames = 0
    with tqdm.tqdm(total=len(clips), desc=f'{p}-reenactment', unit='clip', disable=not progress) as bar:
      def batches():
        nonlocal frames
        for batch in protocol_batches(p, clips, generator, tracker, config, dataset, seed):
          frames += int(np.shape(batch['generated'])[1])
          yield batch
      results[p] = protocols.run(evaluators, batches(), bar.update)
    counts[p] = {'clips': len(clips), 'frames': frames}
  meta = {'dataset': dataset.path, 'split': 'test', 'counts': counts,
          'identities': sorted({c['identity'] for c in clips}), 'image_size': int(config.image_size),
          'tracking': (f'tracking/track.py Tracker on frames upsampled to {track_size} px' if tracker else None),
          'max_clips': max_clips, 'max_frames': max_frames, 'cross_seed': seed}
  return results, meta


# --- What the command line runs ----------------------------------------------------------------------------------------------


def run(workdir: str, config: str | None = None, checkpoint: int | None = None, out: str | None = None,
        protocols: str = 'self,cross', max_clips: int = 0, max_frames: int = 0,
        track_size: int = DEFAULT_TRACK_SIZE, seed: int = 0, progress: bool = True) -> tuple[str, str]:
  """Evaluates the run in `workdir` as evaluate.py's flags of the same names say (config: WORKDIR/config.json when
  None; checkpoint: the latest when None; out: WORKDIR/eval.json when None); returns (eval.json path, the table)."""
  from headgan_jax.metrics import report  # pylint: disable=import-outside-toplevel
  workdir = os.path.abspath(workdir)
  config_dict = resolve_config(config, workdir)
  for flag, value in (('max_clips', max_clips), ('max_frames', max_frames)):
    if value < 0:
      raise ConfigError(f'--{flag} = {value} must be >= 0')
  start = time.perf_counter()
  restored = restore_generator(config_dict, workdir, checkpoint)
  step = restored.step
  protocols_to_run = [p.strip() for p in protocols.split(',') if p.strip()]
  results, meta = evaluate(config_dict, restored, protocols_to_run=protocols_to_run, max_clips=max_clips,
                           max_frames=max_frames, track_size=track_size, seed=seed, progress=progress)
  variant = str(config_dict.get('variant', 'full'))  # The row of Table 1 the run trained (configs/paper.py ABLATIONS).
  meta.update(workdir=workdir, checkpoint_step=step, variant=variant, seconds=round(time.perf_counter() - start, 1))
  path = report.write_eval_json(out or os.path.join(workdir, workdir_lib.EVAL_FILE), results, meta)
  table = report.format_table1(results, label=f'ours ({variant}), step {step}')
  return path, table
