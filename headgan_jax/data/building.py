"""What the two TFDS builders of datasets/ share: the builder base class, split rules, the Beam transforms.

  headgan_demo      the real talking-head clips of a folder and its demo/ and extra/ subfolders (../shared/fixtures:
                    driving.mp4, demo/talk-*.mp4, extra/*.mp4: 39 people), each cut to its first DEMO_MAX_FRAMES
                    frames, built in-process (a plain generator; no Beam). The identities of DEMO_HELD_OUT (and
                    config.data.demo_test_identity) that the folder holds are held out whole for test (unseen and
                    cross-identity figures); of every other clip the last config.data.test_fraction of the frames
                    are held-out test frames.
  headgan_voxceleb  a VoxCeleb1 / VoxCeleb2 mp4 tree (--manual_dir) through Apache Beam (DirectRunner here, Dataflow /
                    Flink / Spark for the full set), the official identity splits.

Both write ArrayRecord files (no TensorFlow needed), the same record features (`clips.features()`), and beside them in
the dataset folder: `face_model.npz` (the 3DMM the coefficients belong to: x_t is rendered from them), the audio
statistics of the train split (metadata 'audio_stats', for `audio.stats.normalise`), `report.jsonl` (one line per
clip) and `summary.txt`. Per-clip work is cached (`clips.ClipCache`) under `<data_dir>/headgan_cache/<builder>/
<settings>/`: a killed build started again redoes no finished clip.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import tempfile
from typing import Any, Sequence

import numpy as np
from etils import epath

from headgan_jax import errors
from headgan_jax.audio import stats as stats_lib
from headgan_jax.data import clips as clips_lib

IMAGE_SIZES = (64, 128, 256)
DATASET_VERSION = '2.1.0'  # Of both builders (their folders are <name>/<size>px/<version>).
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOXCELEB1_TEST_IDS = frozenset(f'id{n}' for n in range(10270, 10310))  # The 40 identities of VoxCeleb1's test set.
VIDEO_SUFFIXES = ('.mp4', '.avi', '.mov', '.mkv', '.webm')
# headgan_demo's held-out identities (file stems): never trained on, their whole (cut) clip is 'test'. The one source
# of truth of the demo split (README, scripts/learn_face_model.py and the tests read it here). One person from each
# kind of footage: video-retalking's camera clip, a VoxCeleb2 crop, a GRID studio clip, an HDTF-style address.
DEMO_HELD_OUT = ('talk-05', 'pcavs-00473-bald-older-man', 'grid-woman-pink-top', 'may')
# headgan_demo: frames kept of each clip (its first ones). 63 = the fewest whose first 1 - test_fraction (0.8) make
# one whole 50-frame training sequence (round(50.4) = 50; the authors drop shorter tails) and 13 held-out frames.
# Measured: a build costs ~33 ms per frame on 2 cores (decode 3, track 15, audio 15), so 39 x 63 frames build in
# ~86 s (2026-12-03, warm compile cache), within the main job's budget; longer cuts cost in proportion.
DEMO_MAX_FRAMES = 63
DEMO_SUBFOLDERS = ('demo', 'extra')  # Scanned besides the folder itself (../shared/fixtures' layout).


def default_project_config():
  """configs/paper.py's config (the builders' default)."""
  from headgan_jax import config_files  # pylint: disable=import-outside-toplevel
  return config_files.load(os.path.join(REPO, 'configs', 'paper.py'))


def build_config(project_config, image_size: int):
  """The project config with image_size set to the builder config's size (the crops are stored at this size)."""
  c = project_config.copy_and_resolve_references()
  c.image_size = int(image_size)
  return c


# ----------------------------------------------------------------------------------------------------------------
# Listing clips and splitting them.

def list_demo_clips(folder: str | os.PathLike, max_frames: int = DEMO_MAX_FRAMES) -> list[clips_lib.Clip]:
  """Every video in `folder` and in its DEMO_SUBFOLDERS (those present); one person per file, the identity is the
  file's stem; each clip cut to its first `max_frames` frames (0 = all)."""
  folder = os.fspath(folder)
  if not os.path.isdir(folder):
    raise errors.DatasetError(f'{folder}: the demo clip folder does not exist (set config.data.demo_dir or pass '
                              '--clips_dir a folder of short talking-head clips, one person per file).')
  if max_frames < 0:
    raise errors.DatasetError(f'max_frames = {max_frames}: the frames kept per demo clip must be >= 0 (0 = all).')
  paths = []
  for sub in (folder,) + tuple(os.path.join(folder, d) for d in DEMO_SUBFOLDERS):
    if os.path.isdir(sub):
      paths += [os.path.join(sub, n) for n in sorted(os.listdir(sub)) if n.lower().endswith(VIDEO_SUFFIXES)]
  if len(paths) < 2:
    raise errors.DatasetError(f'{folder}: found {len(paths)} video(s); the demo set needs at least two (one test '
                              'identity and one to train on).')
  out = []
  for p in paths:
    stem = os.path.splitext(os.path.basename(p))[0]
    out.append(clips_lib.Clip(path=p, clip_id=stem, identity=stem, video=stem, max_frames=int(max_frames)))
  ids = [c.identity for c in out]
  if len(set(ids)) != len(ids):
    raise errors.DatasetError(f'{folder}: two clips share a file name ({sorted(ids)}); identities must be unique.')
  return out


def demo_held_out(identities: Sequence[str], test_identity: str, folder: str = '') -> frozenset[str]:
  """The identities of the demo set held out whole: DEMO_HELD_OUT and config.data.demo_test_identity, of those the
  folder holds. DatasetError when test_identity is not a clip of it or no identity is left to train on."""
  present = set(identities)
  if test_identity not in present:
    raise errors.DatasetError(f'config.data.demo_test_identity = {test_identity!r} is not a clip of {folder} '
                              f'({", ".join(identities)}).')
  held = frozenset(present & (set(DEMO_HELD_OUT) | {test_identity}))
  if held == present:
    raise errors.DatasetError(f'{folder}: every clip ({", ".join(identities)}) is a held-out identity '
                              '(building.DEMO_HELD_OUT, config.data.demo_test_identity): none is left to train on.')
  return held


def demo_items(folder: str | os.PathLike, test_identity: str, test_fraction: float,
               max_frames: int = DEMO_MAX_FRAMES) -> list[tuple[clips_lib.Clip, 'Parts']]:
  """The demo set's plan: (clip, how it is split) for every clip of `folder` (`list_demo_clips`), the held-out
  identities (`demo_held_out`) whole in 'test'."""
  clips = list_demo_clips(folder, max_frames)
  held = demo_held_out([c.identity for c in clips], test_identity, os.fspath(folder))
  return [(c, Parts('demo', c.identity in held, float(test_fraction))) for c in clips]


def demo_parts(num_frames: int, is_test_identity: bool, test_fraction: float) -> list[tuple[str, int, int]]:
  """The demo's held-out protocol: the test identity's whole clip is 'test'; a training identity's first
  1 - test_fraction of frames are 'train', the rest 'test' (unseen frames for self-reenactment)."""
  if is_test_identity:
    return [('test', 0, num_frames)]
  cut = int(round(num_frames * (1.0 - test_fraction)))
  parts = [('train', 0, cut)]
  if cut < num_frames:
    parts.append(('test', cut, num_frames))
  return parts


@dataclasses.dataclass(frozen=True)
class Parts:
  """How a finished clip is split (picklable, for Beam): split 'train' / 'test' = the whole clip; split 'demo' =
  `demo_parts` with the clip's test-identity flag."""
  split: str
  test_identity: bool = False
  test_fraction: float = 0.2

  def __call__(self, result: clips_lib.ClipResult) -> list[tuple[str, int, int]]:
    if self.split == 'demo':
      return demo_parts(result.num_frames, self.test_identity, self.test_fraction)
    return [(self.split, 0, result.num_frames)]


def list_voxceleb_clips(manual_dir: str | os.PathLike) -> list[tuple[str, clips_lib.Clip]]:
  """(split, clip) for every video of a VoxCeleb tree, identity/video/clip.mp4, in one of two layouts:
  VoxCeleb2's `dev/mp4/...` and `test/mp4/...` (the official split by folder; `mp4/` may be left out), or one tree of
  identities (VoxCeleb1) where id10270-id10309 are the official test identities."""
  root = epath.Path(manual_dir)
  if not root.is_dir():
    raise errors.DatasetError(f'{root}: the VoxCeleb folder (--manual_dir) does not exist.')
  found: list[tuple[str, clips_lib.Clip]] = []

  def walk(base: epath.Path, split_of) -> None:
    for ident in sorted(p for p in base.iterdir() if p.is_dir()):
      for video in sorted(p for p in ident.iterdir() if p.is_dir()):
        for f in sorted(video.iterdir()):
          if f.name.lower().endswith(VIDEO_SUFFIXES):
            clip = clips_lib.Clip(path=os.fspath(f), clip_id=f'{ident.name}/{video.name}/{f.stem}',
                                  identity=ident.name, video=f'{ident.name}/{video.name}')
            found.append((split_of(ident.name), clip))

  named = {s: root / s for s in ('dev', 'test') if (root / s).is_dir()}
  if named:
    for s, base in named.items():
      base = base / 'mp4' if (base / 'mp4').is_dir() else base
      walk(base, lambda _, s=s: 'train' if s == 'dev' else 'test')
  else:
    walk(root, lambda ident: 'test' if ident in VOXCELEB1_TEST_IDS else 'train')
  if not found:
    raise errors.DatasetError(f'{root}: no identity/video/clip video files found (expected e.g. '
                              'id10001/1zcIwhmdeo4/00001.mp4, or dev/mp4/... and test/mp4/...).')
  clash = {c.identity for s, c in found if s == 'train'} & {c.identity for s, c in found if s == 'test'}
  if clash:
    raise errors.DatasetError(f'{root}: identities in both dev and test: {sorted(clash)[:5]}.')
  return found


# ----------------------------------------------------------------------------------------------------------------
# Per-process state and the work on one clip.

_PROCESSORS: dict[str, clips_lib.ClipProcessor] = {}


def _processor(config_json_: str, cache_root: str | None = None) -> clips_lib.ClipProcessor:
  """One ClipProcessor per process and clip settings: a Beam worker (or a test session) runs many clips and loads
  the detector, segmentation and speech models once (and the build's 3DMM from the cache when it is there)."""
  import ml_collections
  config = ml_collections.ConfigDict(json.loads(config_json_))
  key = clips_lib.settings_digest(config)
  if key not in _PROCESSORS:
    _PROCESSORS.clear()  # At most one set of models per process.
    saved = os.path.join(cache_root, 'face_model.npz') if cache_root else None
    _PROCESSORS[key] = clips_lib.ClipProcessor(config, saved)
  return _PROCESSORS[key]


def config_json(config) -> str:
  return config.to_json_best_effort(sort_keys=True)


def clip_outputs(clip: clips_lib.Clip, parts_of, config_json_: str, cache_root: str
                 ) -> tuple[list[tuple[str, str, dict]], dict[str, Any]]:
  """(records (split, key, record), report row) of one clip, through the cache."""
  import ml_collections
  config = ml_collections.ConfigDict(json.loads(config_json_))
  cache = clips_lib.ClipCache(cache_root)
  result, cached = clips_lib.process_cached(clip, cache, lambda: _processor(config_json_, cache_root))
  parts = parts_of(result) if result.ok else []
  records = list(clips_lib.records_from_clip(
      result, parts, int(config.train.sequence_length), int(config.data.min_sequence_length),
      int(config.data.num_references), bool(config.data.keep_short_tails))) if result.ok else []
  row = clips_lib.report_row(result, parts, records, cached)
  if result.ok and not records:
    row.update(status='too_few_frames', reason=f'{clip.path}: no record has two consecutive tracked frames')
  return records, row


def save_face_model(config, cache_root: str, out_dir: epath.Path | None) -> None:
  """The 3DMM the tracker fitted, into the dataset folder (cached: building it runs the detector once)."""
  from headgan_jax.face3d import morphable
  cached = epath.Path(cache_root) / 'face_model.npz'
  if not cached.exists():
    model = _processor(config_json(config), cache_root).model
    with tempfile.TemporaryDirectory() as local:  # The cache may be an object store (gs://...).
      morphable.save(model, os.path.join(local, 'face_model.npz'))
      clips_lib.write_atomic(cached, pathlib.Path(local, 'face_model.npz').read_bytes())
  if out_dir is not None:
    (epath.Path(out_dir) / 'face_model.npz').write_bytes(cached.read_bytes())


def stats_to_json(s: stats_lib.FeatureStats) -> dict[str, Any]:
  return dict(mean=[float(v) for v in s.mean], std=[float(v) for v in s.std], count=int(s.count))


def stats_from_json(d: dict[str, Any]) -> stats_lib.FeatureStats:
  return stats_lib.FeatureStats(mean=np.asarray(d['mean'], np.float64), std=np.asarray(d['std'], np.float64),
                                count=int(d['count']))


def write_text(path: epath.Path, text: str) -> None:
  clips_lib.write_atomic(epath.Path(path), text.encode())


# ----------------------------------------------------------------------------------------------------------------
# Beam pieces (apache_beam imported lazily: the demo builder and readers never need it).

def _moments(x: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
  x = np.asarray(x, np.float64)
  mu = x.mean(0)
  return len(x), mu, ((x - mu) ** 2).sum(0)


def merge_moments(a, b):
  """Chan et al.'s merge of (count, mean, M2) - the same arithmetic as audio.stats.compute_stats, across workers."""
  if a is None or a[0] == 0:
    return b
  if b is None or b[0] == 0:
    return a
  n = a[0] + b[0]
  delta = b[1] - a[1]
  return n, a[1] + delta * b[0] / n, a[2] + b[2] + delta ** 2 * a[0] * b[0] / n


def beam_transforms():
  """The Beam DoFn / CombineFns, defined on first use."""
  import apache_beam as beam

  class ProcessClip(beam.DoFn):
    """clip -> records tagged by split, a 'report' row and a 'counts' summary per split."""

    def __init__(self, config_json_: str, cache_root: str):
      self._config, self._cache = config_json_, cache_root

    def process(self, item):
      clip, parts_of = item
      records, row = clip_outputs(clip, parts_of, self._config, self._cache)
      for split, key, rec in records:
        yield beam.pvalue.TaggedOutput(split, (key, rec))
      yield beam.pvalue.TaggedOutput('report', row)
      for split, c in clips_lib.split_counts(records).items():
        yield beam.pvalue.TaggedOutput('counts', (split, c, sorted({rec['identity'] for _, _, rec in records})))

  class AudioMoments(beam.CombineFn):
    def create_accumulator(self):
      return None

    def add_input(self, acc, record):
      return merge_moments(acc, _moments(record['audio']))

    def merge_accumulators(self, accs):
      out = None
      for a in accs:
        out = merge_moments(out, a)
      return out

    def extract_output(self, acc):
      if acc is None:
        return None
      n, mean, m2 = acc
      return stats_to_json(stats_lib.FeatureStats(mean=mean, std=np.sqrt(m2 / n), count=int(n)))

  class Counts(beam.CombineFn):
    def create_accumulator(self):
      return {}

    def add_input(self, acc, item):
      split, c, idents = item
      d = acc.setdefault(split, dict(clips=0, records=0, frames=0, usable_frames=0, identities=set()))
      for k in ('records', 'frames', 'usable_frames'):
        d[k] += c[k]
      d['clips'] += c['clips']
      d['identities'] |= set(idents)
      return acc

    def merge_accumulators(self, accs):
      out: dict = {}
      for a in accs:
        for split, d in a.items():
          o = out.setdefault(split, dict(clips=0, records=0, frames=0, usable_frames=0, identities=set()))
          for k in ('clips', 'records', 'frames', 'usable_frames'):
            o[k] += d[k]
          o['identities'] |= d['identities']
      return out

    def extract_output(self, acc):
      return {s: {**{k: v for k, v in d.items() if k != 'identities'}, 'identities': len(d['identities'])}
              for s, d in acc.items()}

  return ProcessClip, AudioMoments, Counts


# ----------------------------------------------------------------------------------------------------------------
# The builder base.

@functools.cache
def builder_base():
  """The TFDS base class (tensorflow_datasets imported on first use)."""
  import tensorflow_datasets as tfds

  class HeadganBuilderConfig(tfds.core.BuilderConfig):
    def __init__(self, *, image_size: int, **kwargs):
      super().__init__(name=f'{image_size}px', description=f'{image_size}x{image_size} crops', **kwargs)
      self.image_size = int(image_size)

  class HeadganBuilder(tfds.core.GeneratorBasedBuilder):
    """Records of `clips.features()`; subclasses list the clips and say how each is split."""

    VERSION = tfds.core.Version(DATASET_VERSION)
    RELEASE_NOTES = {'1.0.0': 'First release: crops, landmarks, 3DMM coefficients, masks, raw audio features.',
                     '2.0.0': 'Per-video reference sets (ref_*), the per-frame fit (frame_*), short tails dropped, '
                              'audio offsets.',
                     '2.1.0': 'The learned 3DMM (data/learned_face_model.npz) is the tracker\'s default; the demo '
                              'set adds extra/ (39 people, DEMO_HELD_OUT held out), clips cut to DEMO_MAX_FRAMES.'}
    BUILDER_CONFIGS = [HeadganBuilderConfig(image_size=s) for s in IMAGE_SIZES]
    USE_BEAM = False

    def __init__(self, *, project_config=None, cache_dir: str | None = None, **kwargs):
      self._project_config = project_config
      self._cache_dir = cache_dir
      kwargs.setdefault('file_format', 'array_record')  # Random access; written and read without TensorFlow.
      super().__init__(**kwargs)

    @property
    def project_config(self):
      base = self._project_config if self._project_config is not None else default_project_config()
      return build_config(base, self.builder_config.image_size)

    def cache_root(self) -> str:
      root = self._cache_dir or os.path.join(os.fspath(self._data_dir_root), 'headgan_cache')
      return os.path.join(root, self.name, clips_lib.settings_digest(self.project_config))

    def _info(self):
      metadata = tfds.core.BeamMetadataDict() if self.USE_BEAM else tfds.core.MetadataDict()
      features = clips_lib.features(int(self.project_config.model.audio_dim))
      return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=features,
                                   metadata=metadata)

    def _finish(self, rows: list[dict], counts: dict, audio_stats: dict | None) -> None:
      """Files beside the records (the generator path; the Beam path sets them in its pipeline)."""
      self.info.metadata['counts'] = counts
      self.info.metadata['audio_stats'] = audio_stats
      self.info.metadata['build'] = build_metadata(self.project_config)
      out = epath.Path(self.data_dir)
      write_text(out / 'report.jsonl', ''.join(json.dumps(r) + '\n' for r in rows))
      text = clips_lib.summary(rows, counts)
      write_text(out / 'summary.txt', text + '\n')
      print(text)

  return HeadganBuilderConfig, HeadganBuilder


def build_metadata(config) -> dict[str, Any]:
  return dict(image_size=int(config.image_size), settings=clips_lib.settings_digest(config),
              sequence_length=int(config.train.sequence_length), audio_dim=int(config.model.audio_dim),
              num_references=int(config.data.num_references), keep_short_tails=bool(config.data.keep_short_tails),
              min_sequence_length=int(config.data.min_sequence_length),
              num_past_frames=int(config.model.num_past_frames), x_image_mode=str(config.face3d.x_image_mode))


def generate_in_process(builder, clips_and_parts: Sequence[tuple[clips_lib.Clip, Any]]) -> dict[str, list]:
  """The generator path: every clip through the cache in this process; finishes the metadata; split -> records."""
  config = builder.project_config
  cfg_json = config_json(config)
  cache_root = builder.cache_root()
  save_face_model(config, cache_root, None)  # First: the clips' processes then all fit with this one model.
  by_split: dict[str, list] = {'train': [], 'test': []}
  rows = []
  all_records = []
  for clip, parts_of in clips_and_parts:
    records, row = clip_outputs(clip, parts_of, cfg_json, cache_root)
    rows.append(row)
    all_records += records
    for split, key, rec in records:
      by_split.setdefault(split, []).append((key, rec))
  counts = clips_lib.split_counts(all_records)
  train_audio = [rec['audio'] for _, rec in by_split['train']]
  audio_stats = stats_to_json(stats_lib.compute_stats(train_audio)) if train_audio else None
  save_face_model(config, cache_root, epath.Path(builder.data_dir))
  builder._finish(rows, counts, audio_stats)
  return by_split


