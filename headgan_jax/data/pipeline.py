"""The training input pipeline: TFDS ArrayRecord records (datasets/) -> grain -> global `data.batch.Batch`es.

Host side (grain, per process, numpy): the split's records are sharded over processes (record i goes to process
i mod process_count), shuffled per epoch from config.seed, and each record gives one example per visit, sampled as
the authors do: a target frame t whose frame t-1 is tracked too (the pair of L_F^Temp) and, unless
config.data.pad_past_frames, whose k past frames t-1-k .. t-1 all lie in the sequence; the reference drawn from the
video's reference set (config.data.reference = 'pose_set': one of the config.data.num_references pose-spread frames
the builder stored with every record of the video, whatever sequence they lie in; 'sequence': any tracked frame of
the record). The training frames' coefficients are each frame's own fit (config.face3d.train_identity =
'per_frame', the authors') or the clip's shared identity fit ('per_clip'); held-out frames (evaluation) always use
the shared fit, as reenactment does. Only frames t and ref are decoded (JPEG crop + PNG mask); the rest is
coefficients and landmarks: p_id, p_exp / camera / 2-D landmarks of frames t-1-k..t and ref, audio h_t and h_{t-1}
normalised with the dataset's statistics (`audio.stats.normalise`).

Device side (one jitted function on the train step's mesh, `assemble`): the per-process rows become global arrays
(`jax.make_array_from_process_local_data`, batch axis sharded like the step's batch), then x_{t-1-k..t} and x_ref
are rendered from the coefficients with our rasteriser (config.data.conditioning = 'landmarks', Table 1's
"landmarks" row: drawn sketches of the tracked 2-D landmarks instead, `face3d.landmarks_image`) (x_t is not stored: 200x less data per frame, and it costs
about a millisecond per frame on a GPU), images are scaled to [-1, 1] and, when the dataset was built at a larger
crop size (config.data.stored_size), area-downsampled to config.image_size; the mouth box of D_m is taken from the
rendered mesh; `foreground` is the union of the person masks of y_t and y_ref ((B, H, W, 1) in {0, 1}, for the
flow-mask loss). Batches are assembled config.data.prefetch steps ahead (JAX dispatch is asynchronous).

Host parallelism: config.data.num_workers = 0 reads examples with config.data.num_threads threads in the training
process; at paper size those do not scale (TFDS's record decoding and the sampling hold the GIL: about one core's
worth, 80-120 examples/s, below one H100's appetite), so N > 0 reads them in N grain worker processes
(`host_batches`, docs/accelerators.md section 5).

Determinism and resumption: every random choice comes from grain's per-element generator (seed, epoch, index), so
the same seed gives the same batches on any machine and with any number of worker processes; `get_state()` is the
position of the next batch to hand out ({'next_index': n}, JSON), `set_state` continues exactly there.

Data-source contract (the train loop's, `config.data.source`): `train_iterator(config, mesh)` and
`eval_batches(config, mesh, split, spec)`, registered as 'headgan_demo' and 'headgan_voxceleb'.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
from typing import Any, Iterator

from absl import flags as absl_flags
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding

from headgan_jax import errors
from headgan_jax.audio import stats as stats_lib
from headgan_jax.data import building, clips as clips_lib, records
from headgan_jax.data import batch as batch_lib
from headgan_jax.data.sources import local_rows
from headgan_jax.face3d import camera as cam_lib
from headgan_jax.face3d import landmarks_image, morphable, mouth, render
from headgan_jax.sharding import batch_sharding

VERSION = building.DATASET_VERSION
DATASETS = ('headgan_demo', 'headgan_voxceleb')


# ----------------------------------------------------------------------------------------------------------------
# Opening a built dataset.

@dataclasses.dataclass
class Dataset:
  """A built dataset: its folder, one random-access source per split, the 3DMM of its coefficients, the train
  split's audio statistics and the crop size it was built at."""
  path: str
  sources: dict[str, Any]
  model: morphable.MorphableModel
  audio_stats: stats_lib.FeatureStats | None
  stored_size: int
  metadata: dict[str, Any]

  def split(self, name: str):
    if name not in self.sources:
      raise errors.DatasetError(f'{self.path}: has no split {name!r} (splits: {", ".join(sorted(self.sources))}).')
    return self.sources[name]


def stored_size(config) -> int:
  size = int(config.data.stored_size) or int(config.image_size)
  if size % int(config.image_size):
    raise errors.ConfigError(f'config.data.stored_size = {size} is not a multiple of config.image_size = '
                             f'{config.image_size} (the pipeline downsamples by an integer factor).')
  return size


def dataset_path(config, name: str) -> str:
  from headgan_jax.data import build
  return os.path.join(build.data_dir_of(config), name, f'{stored_size(config)}px', VERSION)


@functools.lru_cache(maxsize=4)
def _open(path: str) -> Dataset:
  import tensorflow_datasets as tfds
  builder = tfds.builder_from_directory(path)
  sources = {split: records.FastSource(source) for split, source in builder.as_data_source().items()}
  meta = dict(builder.info.metadata or {})
  model = morphable.load(os.path.join(path, 'face_model.npz'))
  audio = building.stats_from_json(meta['audio_stats']) if meta.get('audio_stats') else None
  return Dataset(path=path, sources=dict(sources), model=model, audio_stats=audio,
                 stored_size=int(meta['build']['image_size']), metadata=meta)


def open_dataset(config, name: str | None = None) -> Dataset:
  """The built dataset `name` (default config.data.source) at config.data.stored_size; DatasetError with the command
  that builds it when it is missing; ConfigError when it does not fit the config."""
  name = name or config.data.source
  if name not in DATASETS:
    raise errors.ConfigError(f'config.data.source = {name!r} is not a dataset ({", ".join(DATASETS)}).')
  path = dataset_path(config, name)
  if not os.path.isfile(os.path.join(path, 'dataset_info.json')):
    short = name.replace('headgan_', '')
    raise errors.DatasetError(
        f'{path}: dataset {name} is not built at {stored_size(config)}px. Build it with: python -m '
        f'headgan_jax.data.build {short} --image_size {stored_size(config)} --data_dir '
        f'{os.path.dirname(os.path.dirname(os.path.dirname(path)))}'
        + (' --manual_dir VOXCELEB_MP4_TREE' if short == 'voxceleb' else ''))
  ds = _open(path)
  build = ds.metadata.get('build', {})
  if build.get('audio_dim') != int(config.model.audio_dim):
    raise errors.ConfigError(f'{path}: built with audio_dim {build.get("audio_dim")}, config.model.audio_dim = '
                             f'{config.model.audio_dim}.')
  if build.get('num_references') != int(config.data.num_references):
    raise errors.ConfigError(f'{path}: built with {build.get("num_references")} reference frames per video, '
                             f'config.data.num_references = {config.data.num_references} (build it again into '
                             'another --data_dir).')
  return ds


DATA_CHOICES = {'data.reference': ('pose_set', 'sequence'), 'data.test_reference': ('middle', 'first'),
                'face3d.train_identity': ('per_frame', 'per_clip'), 'data.conditioning': ('face3d', 'landmarks')}


def check_data_config(config) -> None:
  """ConfigError naming the field when a choice of the input pipeline has an unknown value."""
  for path, allowed in DATA_CHOICES.items():
    section, field = path.split('.')
    if str(config[section][field]) not in allowed:
      raise errors.ConfigError(f'config.{path} = {config[section][field]!r}: expected one of {", ".join(allowed)}.')


# ----------------------------------------------------------------------------------------------------------------
# Host side: one example from one record.

def decode_record(record: dict[str, Any]) -> dict[str, np.ndarray]:
  """All frames of a record decoded: 'frames' (T, S, S, 3) uint8, 'masks' (T, S, S) float32 in [0, 1], and the
  per-frame arrays as they are (for evaluation and inspection; training decodes only the frames it uses)."""
  out = {k: v for k, v in record.items() if k not in ('frames', 'masks')}
  out['frames'] = np.stack([clips_lib.decode_image(b) for b in record['frames']])
  out['masks'] = np.stack([clips_lib.decode_image(b)[..., 0] for b in record['masks']]).astype(np.float32) / 255.0
  return out


def frame_indices(t: int, k: int) -> np.ndarray:
  """Frames t-1-k .. t (k + 2 of them, oldest first); indices before 0 repeat frame 0."""
  return np.maximum(np.arange(t - 1 - k, t + 1), 0)


COEFFICIENTS = ('p_exp', 'rotation', 'translation', 'scale')


def _coefficient_names(identity: str) -> dict[str, str]:
  """Example field -> record array of one frame's fit: the shared-identity fit ('per_clip') or each frame's own
  ('per_frame', the `frame_*` arrays)."""
  if identity == 'per_frame':
    return {'p_id': 'frame_p_id', **{n: f'frame_{n}' for n in COEFFICIENTS}}
  return {n: n for n in COEFFICIENTS}


def frame_reference(record: dict[str, Any], i: int, identity: str = 'per_clip') -> dict[str, Any]:
  """The reference view of frame i of `record`: its image and mask bytes, identity, fit and 2-D landmarks."""
  names = _coefficient_names(identity)
  ref = dict(frame=record['frames'][i], mask=record['masks'][i], landmarks=np.asarray(record['landmarks'][i]),
             p_id=np.asarray(record[names.get('p_id', 'p_id')][i] if 'p_id' in names else record['p_id']))
  ref.update({n: np.asarray(record[names[n]][i]) for n in COEFFICIENTS})
  return ref


def set_reference(record: dict[str, Any], j: int, identity: str = 'per_clip') -> dict[str, Any]:
  """The reference view of entry j of the record's stored reference set (`clips.reference_set`)."""
  names = _coefficient_names(identity)
  ref = dict(frame=record['ref_frames'][j], mask=record['ref_masks'][j], landmarks=np.asarray(
      record['ref_landmarks'][j]), p_id=np.asarray(record[f'ref_{names["p_id"]}'][j] if 'p_id' in names else
                                                    record['p_id']))
  ref.update({n: np.asarray(record[f'ref_{names[n]}'][j]) for n in COEFFICIENTS})
  return ref


def make_example(record: dict[str, Any], t: int, ref: dict[str, Any], k: int,
                 audio_stats: stats_lib.FeatureStats | None, standardise: str = 'lowlevel',
                 identity: str = 'per_clip') -> dict[str, np.ndarray]:
  """The host arrays of one example: target frame t of a record, driven from frames t-1-k..t, with the reference
  view `ref` (`frame_reference` / `set_reference`); coefficients of the record's frames from the fit `identity`
  names; the audio scaled by `audio.stats.normalise` (config.audio.standardise). Per-frame rows (p_id, p_exp,
  camera, landmarks) are frames t-1-k..t, then the reference."""
  idx = frame_indices(t, k)
  names = _coefficient_names(identity)
  y = clips_lib.decode_image(record['frames'][t])
  y_ref = clips_lib.decode_image(ref['frame'])
  fg = np.maximum(clips_lib.decode_image(record['masks'][t])[..., 0], clips_lib.decode_image(ref['mask'])[..., 0])
  audio = np.asarray(record['audio'][[t, max(t - 1, 0)]], np.float32)
  audio = stats_lib.normalise(audio, audio_stats, standardise)
  rows = lambda a, r: np.concatenate([np.asarray(a)[idx], np.asarray(r)[None]])  # noqa: E731
  p_id = np.asarray(record[names['p_id']])[idx] if 'p_id' in names else np.repeat(
      np.asarray(record['p_id'])[None], len(idx), 0)
  out = dict(y=y, y_ref=y_ref, fg=(fg >= 128).astype(np.uint8),
             p_id=np.concatenate([p_id, np.asarray(ref['p_id'])[None]]).astype(np.float32),
             landmarks=rows(record['landmarks'], ref['landmarks']).astype(np.float32), audio=audio[0],
             audio_prev=audio[1])
  out.update({n: rows(record[names[n]], ref[n]).astype(np.float32) for n in COEFFICIENTS})
  return out


def target_frames(valid: np.ndarray, k: int, pad_past: bool) -> np.ndarray:
  """Training targets of a record: frames t whose t-1 is tracked too, and unless pad_past, t >= k + 1 (frames
  t-1-k .. t-1 inside the sequence: the authors never pad past frames in training)."""
  usable = clips_lib.usable_pairs(valid)
  if not pad_past:
    usable[:k + 1] = False
  return np.flatnonzero(usable)


@dataclasses.dataclass(frozen=True)
class SampleExample:
  """grain random map: (record index, record) -> one self-reenactment example (t, ref drawn by the element's rng;
  see the module docstring for the settings)."""
  k: int
  audio_stats: stats_lib.FeatureStats | None
  standardise: str = 'lowlevel'
  reference: str = 'pose_set'
  identity: str = 'per_frame'
  pad_past: bool = False

  @classmethod
  def from_config(cls, config, audio_stats: stats_lib.FeatureStats | None) -> 'SampleExample':
    return cls(int(config.model.num_past_frames), audio_stats, str(config.audio.standardise),
               str(config.data.reference), str(config.face3d.train_identity), bool(config.data.pad_past_frames))

  def __call__(self, item, rng: np.random.Generator) -> dict[str, np.ndarray]:
    index, record = item
    valid = np.asarray(record['valid'], bool)
    targets = target_frames(valid, self.k, self.pad_past)
    if not len(targets):
      raise errors.DatasetError(
          f'record {record["key"]!r} has no frame t with t-1 tracked' + ('' if self.pad_past else
          f' and {self.k + 1} past frames inside the record (config.data.pad_past_frames = True allows it)') + '.')
    t = int(rng.choice(targets))
    if self.reference == 'pose_set':
      j = int(rng.integers(len(record['ref_index'])))
      ref, ref_frame = set_reference(record, j, self.identity), int(record['ref_index'][j])
    else:
      r = int(rng.choice(np.flatnonzero(valid)))
      ref, ref_frame = frame_reference(record, r, self.identity), int(record['start']) + r
    ex = make_example(record, t, ref, self.k, self.audio_stats, self.standardise, self.identity)
    ex.update(record_index=np.int64(index), t=np.int32(t), ref=np.int32(ref_frame))
    return ex


def host_dataset(source, config, process_index: int, process_count: int, local_batch: int | None,
                 audio_stats: stats_lib.FeatureStats | None, seed: int | None = None) -> grain.MapDataset:
  """The infinite, shuffled, per-process grain dataset of examples (batched by local_batch unless None)."""
  n = len(source)
  if n == 0:
    raise errors.DatasetError('the split has no records.')
  if n < process_count:
    raise errors.DatasetError(f'the split has {n} records, fewer than the {process_count} processes.')
  seed = int(config.seed if seed is None else seed) % 2**32
  ds = grain.MapDataset.range(n)[process_index::process_count]
  ds = ds.seed(seed).shuffle().repeat()
  ds = ds.map(lambda i: (int(i), source[int(i)]))
  check_data_config(config)
  ds = ds.random_map(SampleExample.from_config(config, audio_stats))
  if local_batch is not None:
    ds = ds.batch(local_batch, drop_remainder=True)
  return ds


# ----------------------------------------------------------------------------------------------------------------
# Device side.

def _downsample(x: jax.Array, factor: int) -> jax.Array:
  """Area-average (B, H, W, C) by an integer factor."""
  if factor == 1:
    return x
  b, h, w, c = x.shape
  return x.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


HOST_FIELDS = ('y', 'y_ref', 'fg', 'p_id', 'p_exp', 'rotation', 'translation', 'scale', 'landmarks', 'audio',
               'audio_prev')


def assemble(host: dict[str, jax.Array], model: morphable.MorphableModel, config, stored: int) -> dict[str, jax.Array]:
  """Host rows (global arrays) -> the Batch fields + 'foreground': x rendered from the coefficients (jit this)."""
  size = int(config.image_size)
  k = int(config.model.num_past_frames)
  factor = stored // size
  b, n = host['p_exp'].shape[:2]  # n = k + 3: frames t-1-k .. t, then ref.
  img = lambda u8: _downsample((u8.astype(jnp.float32) - 127.5) / 127.5, factor)  # noqa: E731  exactly [-1, 1]
  px = size / stored  # Cameras are in stored-crop pixels.
  cam = cam_lib.Camera(rotation=host['rotation'].reshape(b * n, 6),
                       translation=host['translation'].reshape(b * n, 2) * px, scale=host['scale'].reshape(b * n) * px)
  p_id = host['p_id'].reshape(b * n, -1)
  verts = cam_lib.project(morphable.identity_adaptation(model, p_id, host['p_exp'].reshape(b * n, -1)), cam)
  if config.data.conditioning == 'landmarks':  # Table 1's "landmarks" row: the tracked 2-D points, drawn.
    points = host['landmarks'].reshape(b * n, -1, 2) * px
    x = landmarks_image.draw_landmarks(points, size, size).reshape(b, n, size, size, 3)
  else:
    x = render.render_face(model, verts, size, size, config.face3d.x_image_mode).reshape(b, n, size, size, 3)
  volume = lambda xs: jnp.moveaxis(xs, 1, 3).reshape(b, size, size, 3 * (k + 1))  # noqa: E731  oldest first
  corner = mouth.mouth_box(verts.reshape(b, n, *verts.shape[1:])[:, k + 1], model.mouth_indices, size,
                           int(config.disc.mouth_size), centre=str(config.disc.mouth_centre))
  fg = _downsample(host['fg'][..., None].astype(jnp.float32), factor) >= 0.5
  return dict(x_drive=volume(x[:, 1:k + 2]), x_drive_prev=volume(x[:, 0:k + 1]), y_ref=img(host['y_ref']),
              x_ref=x[:, k + 2], audio=host['audio'], audio_prev=host['audio_prev'], y=img(host['y']),
              mouth=corner.astype(jnp.int32), foreground=fg.astype(jnp.float32))


def to_batch(fields: dict[str, jax.Array]) -> batch_lib.Batch:
  """The data.batch.Batch of assembled fields (with 'foreground' when Batch has that field)."""
  names = [f.name for f in dataclasses.fields(batch_lib.Batch)]
  return batch_lib.Batch(**{n: fields[n] for n in names})


def assemble_settings(config) -> str:
  """The config fields `assemble` reads, as a key: iterators of configs that differ elsewhere (seed, batch counts)
  share one compiled function."""
  return json.dumps(dict(image_size=int(config.image_size), model=dict(num_past_frames=int(
      config.model.num_past_frames)), data=dict(conditioning=str(config.data.conditioning)), disc=dict(mouth_size=int(
          config.disc.mouth_size), mouth_centre=str(config.disc.mouth_centre)), face3d=dict(x_image_mode=str(config.face3d.x_image_mode))), sort_keys=True)


@functools.lru_cache(maxsize=8)
def _jitted_assemble(settings: str, stored: int, sharding: NamedSharding):
  """One compiled `assemble` per settings, crop size and sharding (iterators made again reuse it)."""
  config = ml_collections.ConfigDict(json.loads(settings))
  return jax.jit(functools.partial(assemble, config=config, stored=stored), out_shardings=sharding)


class Assembler:
  """Host rows of this process -> global arrays on the mesh -> the jitted `assemble` (the 3DMM replicated)."""

  def __init__(self, config, mesh: Mesh, dataset: Dataset, batch_size: int):
    self.sharding = batch_sharding(mesh)
    self.batch_size = batch_size
    self.rows = local_rows(self.sharding, batch_size)
    replicated = NamedSharding(mesh, jax.sharding.PartitionSpec())
    self.model = jax.device_put(dataset.model, replicated)
    stored = dataset.stored_size
    if stored % int(config.image_size):
      raise errors.ConfigError(f'{dataset.path}: crops of {stored}px cannot be downsampled to config.image_size = '
                               f'{config.image_size}.')
    self._fn = _jitted_assemble(assemble_settings(config), stored, self.sharding)

  def __call__(self, host: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    glob = {k: jax.make_array_from_process_local_data(self.sharding, np.asarray(host[k]),
                                                      (self.batch_size,) + tuple(np.shape(host[k])[1:]))
            for k in HOST_FIELDS}
    return self._fn(glob, self.model)


# ----------------------------------------------------------------------------------------------------------------
# The iterators of the data-source contract.

class TrainIterator:
  """Global Batches of a dataset split on `mesh` (see the module docstring); get_state / set_state for checkpoints.
  `next_fields()` gives the assembled fields including 'foreground'. config.data.num_workers = 0 reads examples
  with config.data.num_threads threads in this process; N > 0 in N grain worker processes (`host_batches`), with
  the same batches in the same order. `close()` stops the workers (garbage collection does too)."""

  def __init__(self, config, mesh: Mesh, name: str | None = None, split: str = 'train',
               process_index: int | None = None, process_count: int | None = None):
    self.dataset = open_dataset(config, name)
    batch_size = int(config.train.batch_size)
    self.assembler = Assembler(config, mesh, self.dataset, batch_size)
    lo, hi = self.assembler.rows
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    self._host = host_dataset(self.dataset.split(split), config, pi, pc, hi - lo, self.dataset.audio_stats)
    self._threads = int(config.data.num_threads)
    self._workers = int(config.data.get('num_workers', 0))  # 0 for the config.json of runs saved before the field.
    if self._workers < 0:
      raise errors.ConfigError(f'config.data.num_workers = {self._workers}: expected 0 (read in this process) or '
                               'a number of worker processes.')
    self._prefetch = max(0, int(config.data.prefetch))
    self._iter = None  # Opened on the first batch: a resumed run starts its workers once, at the saved position.
    self._next_index = 0  # Of the next host batch `_iter` hands out.
    self._queue: collections.deque = collections.deque()
    self.num_examples = split_size(self.dataset, split)

  def __iter__(self):
    return self

  def _fill(self) -> None:
    if self._iter is None:
      self._iter = host_batches(self._host, self._next_index, self._threads, self._workers, self._prefetch)
    state = {'next_index': self._next_index}
    host = next(self._iter)
    self._next_index += 1
    self._queue.append((state, self.assembler(host)))

  def next_fields(self) -> dict[str, jax.Array]:
    while len(self._queue) < self._prefetch + 1:
      self._fill()
    return self._queue.popleft()[1]

  def __next__(self) -> batch_lib.Batch:
    return to_batch(self.next_fields())

  def get_state(self) -> dict[str, Any]:
    """{'next_index': n}: the host batch handed out next (batches assembled ahead are not counted). The same with
    and without worker processes (a run may resume with another config.data.num_workers); it is grain's own
    state of the in-process iterator, so checkpoints written before worker processes existed resume too."""
    return dict(self._queue[0][0]) if self._queue else {'next_index': self._next_index}

  def set_state(self, state: dict[str, Any]) -> None:
    index = state.get('next_index') if isinstance(state, dict) else None
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
      raise errors.DatasetError(f'data iterator state {state!r}: expected {{"next_index": n}} with n >= 0.')
    self.close()
    self._queue.clear()
    self._next_index = index

  def close(self) -> None:
    """Stops the worker processes (if any); the next batch opens the iterator again at the same position."""
    if self._iter is not None:
      self._iter.close()
      self._iter = None
      self._next_index -= len(self._queue)
      self._queue.clear()


def host_batches(ds: grain.MapDataset, start: int, threads: int, workers: int,
                 prefetch: int) -> grain.DatasetIterator:
  """An iterator over the host batches ds[start:], read by `threads` threads in this process (workers = 0) or in
  `workers` grain worker processes (each with `threads` threads; grain gives worker i the batches i, i + N, ... and
  hands them out in turn, so the order is the same). Every example's randomness comes from its index in `ds`, which
  slicing keeps: any start, any number of workers, the same batches."""
  ds = ds[start:].to_iter_dataset(grain.ReadOptions(num_threads=max(1, threads),
                                                    prefetch_buffer_size=max(1, prefetch)))
  if workers:
    # grain reads its absl flags when it starts a worker; a caller that parses none (train.py has its own
    # FlagValues, a library user has none) would get UnparsedFlagAccessError: grain's defaults then.
    if not absl_flags.FLAGS.is_parsed():
      absl_flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=max(1, prefetch)))
  return ds.__iter__()


def clip_starts(dataset: Dataset) -> dict[bytes, tuple[dict[str, Any], int]]:
  """clip -> (the record of any split that starts it, its first tracked frame): the reference of the
  'clip_start' protocol (the video's first frame), which for a training identity lies in the train split."""
  first: dict[bytes, tuple[int, dict[str, Any]]] = {}
  for source in dataset.sources.values():
    for i in range(len(source)):
      r = source[i]
      if r['clip'] not in first or int(r['start']) < first[r['clip']][0]:
        first[r['clip']] = (int(r['start']), r)
  out = {}
  for clip, (_, r) in first.items():
    valid = np.flatnonzero(np.asarray(r['valid'], bool))
    if len(valid):
      out[clip] = (r, int(valid[0]))
  return out


REFERENCES = ('middle', 'first', 'clip_start')


def test_reference(record: dict[str, Any], reference: str, starts: dict | None = None) -> dict[str, Any]:
  """The reference view of a held-out record under a self-reenactment protocol: 'middle' (the authors': the middle
  of the video's pose-sorted reference set), 'first' (the record's first tracked frame) or 'clip_start' (the first
  tracked frame of the whole clip, from `clip_starts`). Held-out frames use the clip's shared identity fit."""
  if reference == 'middle':
    return set_reference(record, clips_lib.middle_reference(record['ref_index']))
  if reference == 'first':
    return frame_reference(record, int(np.flatnonzero(np.asarray(record['valid'], bool))[0]))
  if reference == 'clip_start':
    rec, frame = (starts or {})[record['clip']]
    return frame_reference(rec, frame)
  raise errors.ConfigError(f'reference = {reference!r}: expected one of {", ".join(REFERENCES)}.')


def eval_examples(dataset: Dataset, split: str, identities: str = 'all') -> list[tuple[int, int]]:
  """(record index, t) of every held-out frame of `split` in a fixed order (records by key): targets = every frame
  t whose t-1 is tracked. identities: 'all', 'seen' (those with train records, self-reenactment on unseen frames)
  or 'unseen'."""
  source = dataset.split(split)
  train_ids = set()
  if identities != 'all' and 'train' in dataset.sources:
    train_ids = {r['identity'] for r in dataset.sources['train']}
  out = []
  order = sorted(range(len(source)), key=lambda i: source[i]['key'])
  for i in order:
    r = source[i]
    seen = r['identity'] in train_ids
    if (identities == 'seen' and not seen) or (identities == 'unseen' and seen):
      continue
    valid = np.asarray(r['valid'], bool)
    out += [(i, int(t)) for t in np.flatnonzero(clips_lib.usable_pairs(valid))]
  return out


class EvalBatches:
  """Re-iterable global Batches of a held-out split: the same batches, in the same order, every time.
  spec fields: num_batches (0 = every frame; otherwise that many batches of evenly spaced frames), identities,
  reference (`test_reference`; default config.data.test_reference: 'middle', the authors' test reference; 'first';
  'clip_start': the first tracked frame of the whole clip, in the train split for a training identity),
  pad (default False: frames past the last whole batch are left out; True: the last batch is filled up by repeating
  its last frame, and `num_frames` counts only the real ones, the first rows in order)."""

  def __init__(self, config, mesh: Mesh, split: str, spec: ml_collections.ConfigDict | None = None,
               name: str | None = None):
    spec = spec or ml_collections.ConfigDict()
    check_data_config(config)
    self.dataset = open_dataset(config, name)
    self.batch_size = int(config.train.batch_size)
    self.assembler = Assembler(config, mesh, self.dataset, self.batch_size)
    self.k = int(config.model.num_past_frames)
    self.standardise = str(config.audio.standardise)
    items = eval_examples(self.dataset, split, str(spec.get('identities', 'all')))
    want = int(spec.get('num_batches', 2)) * self.batch_size
    if want and want < len(items):
      items = [items[i] for i in np.linspace(0, len(items) - 1, want).round().astype(int)]
    if spec.get('pad', False) and items:
      self.num_frames = len(items)
      items = items + items[-1:] * (-len(items) % self.batch_size)
    n = len(items) - len(items) % self.batch_size
    if n == 0:
      raise errors.DatasetError(f'{self.dataset.path}: split {split!r} has {len(items)} held-out frames '
                                f'({spec.get("identities", "all")} identities), fewer than one batch of '
                                f'{self.batch_size}.')
    self.items = items[:n]
    self.num_frames = min(getattr(self, 'num_frames', n), n)
    self.source = self.dataset.split(split)
    self.reference = str(spec.get('reference', config.data.test_reference))
    if self.reference not in REFERENCES:
      raise errors.ConfigError(f'eval spec reference = {self.reference!r}: expected one of {", ".join(REFERENCES)}')
    starts = clip_starts(self.dataset) if self.reference == 'clip_start' else None
    self.references = {i: test_reference(self.source[i], self.reference, starts) for i in {i for i, _ in self.items}}

  def __len__(self) -> int:
    return len(self.items) // self.batch_size

  def __iter__(self) -> Iterator[batch_lib.Batch]:
    for fields in self.iter_fields():
      yield to_batch(fields)

  def iter_fields(self) -> Iterator[dict[str, jax.Array]]:
    lo, hi = self.assembler.rows
    for b in range(len(self)):
      rows = self.items[b * self.batch_size + lo: b * self.batch_size + hi]
      examples = [make_example(self.source[i], t, self.references[i], self.k, self.dataset.audio_stats,
                               self.standardise) for i, t in rows]
      host = {f: np.stack([e[f] for e in examples]) for f in HOST_FIELDS}
      yield self.assembler(host)


def split_size(dataset: Dataset, split: str = 'train') -> int:
  """The size of a split for the loop's epochs (config.train.steps_per_epoch = 0): its usable target frames."""
  counts = (dataset.metadata.get('counts') or {}).get(split, {})
  return int(counts.get('usable_frames') or len(dataset.split(split)))


def train_size(config) -> int:
  """The data-source contract's `size(config)`: examples in an epoch of the train split."""
  return split_size(open_dataset(config))


def train_iterator(config, mesh: Mesh) -> TrainIterator:
  """The data-source contract's `make(config, mesh)` for config.data.source 'headgan_demo' / 'headgan_voxceleb'."""
  return TrainIterator(config, mesh)


def eval_batches(config, mesh: Mesh, split: str, spec: ml_collections.ConfigDict) -> EvalBatches:
  """The data-source contract's `make_eval(config, mesh, split, spec)`."""
  return EvalBatches(config, mesh, split, spec)


def render_record_x(dataset: Dataset, record: dict[str, Any], size: int | None = None, p_id=None) -> np.ndarray:
  """x_t (T, size, size, 3) of every frame of a record (for evaluation); p_id overrides the identity (eq. 1)."""
  from headgan_jax.tracking import track
  size = size or dataset.stored_size
  px = size / dataset.stored_size
  cam = cam_lib.Camera(np.asarray(record['rotation']), np.asarray(record['translation']) * px,
                       np.asarray(record['scale']) * px)
  return track.render_x(dataset.model, record['p_id'] if p_id is None else p_id, record['p_exp'], cam, size)
