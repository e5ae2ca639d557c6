"""Talking-head clips -> training records: the per-clip work shared by the TFDS builders (datasets/).

One clip (an mp4 with a face and speech) is decoded, tracked (`tracking.track`: square face crops at config.image_size,
detector landmarks, one shared 3DMM identity, per-frame expression and camera, mouth boxes, foreground masks) and its
audio turned into the raw (T, 300) h^(a) vectors (`audio.features`). The result, `ClipResult`, is cached as one file
per clip (written atomically: a temporary name, then a rename), so a build that is killed and started again redoes no
clip that was finished and loses none. A clip that cannot be used is cached too, with the reason, so it is not tried
again either: 'corrupt' (the video does not decode), 'no_audio', 'no_face', 'rejected_crop' (the tracker's clip
rules: the face moves too far, leaves the frame or is lost too long), 'too_few_frames' (fewer usable frames than a
record needs).

A finished clip becomes records (`records_from_clip`): TFDS examples of `features()`. Train records are the clip cut
into sequences of config.train.sequence_length frames (the authors cut clips into 50-frame sequences and drop a shorter
tail: config.data.keep_short_tails); test records are whole (held-out) clips, so that evaluation can generate every
frame. Every record also carries its video's REFERENCE SET (`reference_set`, the authors' `reconstruct.py`): the
config.data.num_references frames of the clip's training frames (of a held-out clip: its own) spread over its head
poses (standardised camera parameters, PCA to one component, sorted, evenly spaced), stored whole (`ref_frames`, `ref_masks`, `ref_<per-frame array>`), so that a
training example of any sequence can take its reference from any of them and the self-reenactment protocol can take
the middle one.
Frames are stored as JPEG bytes and masks as PNG bytes (decoded lazily, only the frames a training example uses);
x_t is NOT stored: it is rendered from (p_id, p_exp, camera) on the device (`data.pipeline`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import tempfile
import time
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from etils import epath
from PIL import Image

from headgan_jax import errors
from headgan_jax.files import write_atomic  # Re-exported: callers write clips.write_atomic.

NUM_POINTS = 468  # The face detector's landmarks (tracking.facemesh.NUM_POINTS; not imported: it loads LiteRT).
REASON_KINDS = ('corrupt', 'no_audio', 'no_face', 'rejected_crop', 'too_few_frames')
CACHE_FORMAT = 2  # Bump when ClipResult's file layout changes (old cache entries are then ignored).


# ----------------------------------------------------------------------------------------------------------------
# Encoding.

def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buf, format='JPEG', quality=int(quality))
  return buf.getvalue()


def encode_png(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buf, format='PNG', compress_level=1)
  return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
  """JPEG / PNG bytes -> (H, W, C) uint8 (C = 3 for colour, 1 for a mask)."""
  with Image.open(io.BytesIO(data)) as im:
    a = np.asarray(im)
  return a[..., None] if a.ndim == 2 else a


def pack_bytes(items: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
  """Byte strings -> (one uint8 blob, offsets (n + 1,) int64), for .npz files without pickles."""
  offsets = np.cumsum([0] + [len(b) for b in items]).astype(np.int64)
  return np.frombuffer(b''.join(items), np.uint8).copy(), offsets


def unpack_bytes(blob: np.ndarray, offsets: np.ndarray) -> list[bytes]:
  raw = blob.tobytes()
  return [raw[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


# ----------------------------------------------------------------------------------------------------------------
# Clips and their results.

@dataclasses.dataclass(frozen=True)
class Clip:
  """One input clip: its path, its id (unique in the dataset, e.g. 'id10001/1zcIwhmdeo4/00001'), the identity (the
  person; splits never share one), the video it was cut from, and how many of its first frames are used (0 = all)."""
  path: str
  clip_id: str
  identity: str
  video: str
  max_frames: int = 0


# Per-frame arrays of a ClipResult, with their dtypes (frame axis first).
FRAME_ARRAYS = {
    'landmarks': np.float32, 'valid': np.bool_, 'p_exp': np.float32, 'rotation': np.float32,
    'translation': np.float32, 'scale': np.float32, 'fit_rms': np.float32, 'mouth': np.int32, 'audio': np.float32,
    # The authors' per-frame fit (each frame's own identity): training frames are rendered from it when
    # config.face3d.train_identity = 'per_frame' (tracking/track.py ClipTrack).
    'frame_p_id': np.float32, 'frame_p_exp': np.float32, 'frame_rotation': np.float32,
    'frame_translation': np.float32, 'frame_scale': np.float32,
}
# The per-frame arrays a reference frame needs (stored as `ref_<name>` in every record of the part).
REFERENCE_ARRAYS = ('landmarks', 'p_exp', 'rotation', 'translation', 'scale', 'frame_p_id', 'frame_p_exp',
                    'frame_rotation', 'frame_translation', 'frame_scale')


@dataclasses.dataclass
class ClipResult:
  """What one clip gave: `status` 'ok' with per-frame data, or a failure kind (REASON_KINDS) and its `reason`."""
  clip: Clip
  status: str
  reason: str = ''
  seconds: float = 0.0
  fps: float = 0.0
  num_source_frames: int = 0
  crop_box: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(4, np.float32))
  p_id: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
  frames: list[bytes] = dataclasses.field(default_factory=list)  # JPEG, one per frame
  masks: list[bytes] = dataclasses.field(default_factory=list)  # PNG (8-bit person probability), one per frame
  arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # FRAME_ARRAYS
  frame_reasons: list[str] = dataclasses.field(default_factory=list)  # '' for valid frames
  notes: tuple[str, ...] = ()
  stage_seconds: dict[str, float] = dataclasses.field(default_factory=dict)  # decode, track, audio, encode

  @property
  def ok(self) -> bool:
    return self.status == 'ok'

  @property
  def num_frames(self) -> int:
    return len(self.frames)

  def to_bytes(self) -> bytes:
    arrays: dict[str, Any] = {f'a_{k}': v for k, v in self.arrays.items()}
    arrays['frames_blob'], arrays['frames_offsets'] = pack_bytes(self.frames)
    arrays['masks_blob'], arrays['masks_offsets'] = pack_bytes(self.masks)
    meta = dict(format=CACHE_FORMAT, clip=dataclasses.asdict(self.clip), status=self.status, reason=self.reason,
                seconds=self.seconds, fps=self.fps, num_source_frames=self.num_source_frames,
                frame_reasons=self.frame_reasons, notes=list(self.notes), stage_seconds=self.stage_seconds)
    arrays['meta'] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    arrays['crop_box'], arrays['p_id'] = self.crop_box, self.p_id
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()

  @classmethod
  def from_bytes(cls, data: bytes, source: str = '<bytes>') -> 'ClipResult':
    try:
      with np.load(io.BytesIO(data), allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
      meta = json.loads(a['meta'].tobytes())
    except (OSError, ValueError, KeyError, EOFError) as e:
      raise errors.DatasetError(f'{source}: not a readable clip cache file: {e}') from e
    if meta.get('format') != CACHE_FORMAT:
      raise errors.DatasetError(f'{source}: clip cache format {meta.get("format")}, expected {CACHE_FORMAT}.')
    return cls(clip=Clip(**meta['clip']), status=meta['status'], reason=meta['reason'], seconds=meta['seconds'],
               fps=meta['fps'], num_source_frames=meta['num_source_frames'], crop_box=a['crop_box'], p_id=a['p_id'],
               frames=unpack_bytes(a['frames_blob'], a['frames_offsets']),
               masks=unpack_bytes(a['masks_blob'], a['masks_offsets']),
               arrays={k[2:]: v for k, v in a.items() if k.startswith('a_')},
               frame_reasons=list(meta['frame_reasons']), notes=tuple(meta['notes']),
               stage_seconds=dict(meta.get('stage_seconds', {})))


def settings_digest(config) -> str:
  """A short hash of every config field that changes what a clip gives (image size, tracking, 3DMM, audio,
  encoding): cache entries of other settings are never reused."""
  d = config.data
  from headgan_jax.tracking import face_model  # Here: clips.py stays importable without jax.
  parts = dict(image_size=int(config.image_size), track=config.track.to_dict(), face3d=config.face3d.to_dict(),
               audio={k: v for k, v in config.audio.to_dict().items() if k != 'standardise'},
               mouth=int(config.disc.mouth_size), jpeg=int(d.jpeg_quality),
               format=CACHE_FORMAT, model=face_model.model_fingerprint(str(config.face3d.model)))
  return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cache_name(clip: Clip) -> str:
  """The clip's cache file name: its id, and its frame limit when it has one (a cut is another result)."""
  key = clip.clip_id + (f'@{clip.max_frames}' if clip.max_frames else '')
  safe = re.sub(r'[^A-Za-z0-9._-]+', '_', clip.clip_id)
  return f'{safe}-{hashlib.sha256(key.encode()).hexdigest()[:8]}.npz'


def read_clip_frames(path: str, max_frames: int = 0) -> tuple[np.ndarray, float]:
  """(frames (T, H, W, 3) uint8, fps) of a video; with max_frames > 0 only its first max_frames frames, decoded no
  further (a 20 s 1080p clip of which 63 frames are used costs 63 decodes)."""
  from headgan_jax.tracking import video as video_lib
  if max_frames <= 0:
    return video_lib.read_video(path)
  fps = video_lib.video_info(path).fps
  chunks, n = [], 0
  for chunk in video_lib.iter_frames(path, min(64, max_frames)):
    chunks.append(chunk[:max_frames - n])
    n += len(chunks[-1])
    if n >= max_frames:
      break
  return np.concatenate(chunks, axis=0), fps


class ClipCache:
  """One file per clip under `root` (a local path or any etils.epath URL, e.g. gs://...)."""

  def __init__(self, root: str | os.PathLike):
    self.root = epath.Path(root)

  def path(self, clip: Clip) -> epath.Path:
    return self.root / cache_name(clip)

  def get(self, clip: Clip) -> ClipResult | None:
    p = self.path(clip)
    if not p.exists():
      return None
    try:
      return ClipResult.from_bytes(p.read_bytes(), os.fspath(p))
    except errors.DatasetError:
      return None  # An old format: the clip is processed again.

  def put(self, result: ClipResult) -> None:
    write_atomic(self.path(result.clip), result.to_bytes())


# ----------------------------------------------------------------------------------------------------------------
# Processing one clip.

class ClipProcessor:
  """The tracker and the speech recogniser, created once per process (they load models), applied clip by clip."""

  def __init__(self, config, default_model_path: str | os.PathLike | None = None):
    """default_model_path: a saved copy of the build's default 3DMM (config.face3d.model == ''), so that every worker
    of a build fits with the driver's model (the cache's copy belongs to the cache's settings digest)."""
    from headgan_jax.audio import asr
    from headgan_jax.tracking import track
    from headgan_jax.face3d import morphable
    self.config = config
    model = points = None
    if default_model_path is not None and not config.face3d.model and epath.Path(default_model_path).exists():
      with tempfile.TemporaryDirectory() as local:  # The cache may be an object store (gs://...).
        copy = os.path.join(local, 'face_model.npz')
        with open(copy, 'wb') as f:
          f.write(epath.Path(default_model_path).read_bytes())
        model = morphable.load(copy)
      points = np.arange(NUM_POINTS, dtype=np.int32)
    self.tracker = track.Tracker(config, model=model, points=points)
    self.asr = asr.make_backend(config)

  @property
  def model(self):
    return self.tracker.model

  def __call__(self, clip: Clip) -> ClipResult:
    start = time.perf_counter()
    self._stages: dict[str, float] = {}
    self._num_frames = 0
    try:
      result = self._process(clip)
    except errors.VideoError as e:
      result = ClipResult(clip, 'corrupt', str(e), num_source_frames=self._num_frames)
    except errors.AudioError as e:
      result = ClipResult(clip, 'no_audio', str(e), num_source_frames=self._num_frames)
    except (errors.NoFaceFoundError, errors.LandmarkError) as e:
      result = ClipResult(clip, 'no_face', str(e), num_source_frames=self._num_frames)
    result.seconds = round(time.perf_counter() - start, 3)
    result.stage_seconds = {k: round(v, 3) for k, v in self._stages.items()}
    return result

  def _lap(self, stage: str, start: float) -> float:
    now = time.perf_counter()
    self._stages[stage] = self._stages.get(stage, 0.0) + now - start
    return now

  def _process(self, clip: Clip) -> ClipResult:
    from headgan_jax.audio import features, io as audio_io
    config = self.config
    t = time.perf_counter()
    frames, fps = read_clip_frames(clip.path, clip.max_frames)  # VideoError: corrupt, no video stream, no frames.
    self._num_frames = len(frames)
    rate = int(config.audio.sample_rate)
    waveform = audio_io.load_audio(clip.path, rate)  # AudioError: no audio stream / undecodable.
    t = self._lap('decode', t)
    track = self.tracker.track_frames(frames, fps, clip.path)
    t = self._lap('track', t)
    del frames
    if track.rejected:
      return ClipResult(clip, 'rejected_crop', track.rejected, fps=fps, num_source_frames=track.num_source_frames,
                        crop_box=track.crop_box)
    try:
      audio = features.features_from_waveform(waveform, rate, fps, track.num_frames, config, self.asr)
    except errors.AudioError as e:
      raise errors.AudioError(f'{clip.path}: {e}') from e
    t = self._lap('audio', t)
    q = int(config.data.jpeg_quality)
    masks = track.masks if len(track.masks) else np.ones(track.crops.shape[:3], np.float32)
    arrays = dict(landmarks=track.landmarks, valid=track.valid, p_exp=track.p_exp, rotation=track.rotation,
                  translation=track.translation, scale=track.scale, fit_rms=track.fit_rms_px, mouth=track.mouth_boxes,
                  audio=audio, frame_p_id=track.frame_p_id, frame_p_exp=track.frame_p_exp,
                  frame_rotation=track.frame_rotation, frame_translation=track.frame_translation,
                  frame_scale=track.frame_scale)
    arrays = {k: np.asarray(v, FRAME_ARRAYS[k]) for k, v in arrays.items()}
    result = ClipResult(
        clip, 'ok', fps=float(fps), num_source_frames=track.num_source_frames,
        crop_box=np.asarray(track.crop_box, np.float32), p_id=np.asarray(track.p_id, np.float32),
        frames=[encode_jpeg(c, q) for c in track.crops],
        masks=[encode_png(np.round(m * 255)) for m in masks], arrays=arrays,
        frame_reasons=[str(r) for r in track.reasons], notes=tuple(track.notes))
    self._lap('encode', t)
    if usable_pairs(result.arrays['valid']).sum() == 0:
      return ClipResult(clip, 'too_few_frames', f'{clip.path}: no two consecutive frames are tracked '
                        f'({int(result.arrays["valid"].sum())} of {result.num_frames} usable)', fps=float(fps),
                        num_source_frames=track.num_source_frames, crop_box=result.crop_box,
                        frame_reasons=result.frame_reasons)
    return result


def process_cached(clip: Clip, cache: ClipCache, make_processor) -> tuple[ClipResult, bool]:
  """(the clip's result, whether it came from the cache): processed (by make_processor(), called only when needed)
  and cached unless the cache has it already."""
  cached = cache.get(clip)
  if cached is not None:
    return cached, True
  result = make_processor()(clip)
  cache.put(result)
  return result, False


# ----------------------------------------------------------------------------------------------------------------
# Records.

def usable_pairs(valid: np.ndarray) -> np.ndarray:
  """(T,) bool: frame t is a usable training target (t and t-1 both tracked)."""
  valid = np.asarray(valid, bool)
  out = np.zeros_like(valid)
  out[1:] = valid[1:] & valid[:-1]
  return out


def reference_set(rotation: np.ndarray, translation: np.ndarray, scale: np.ndarray, valid: np.ndarray,
                  num: int) -> np.ndarray:
  """(num,) int32 indices of `num` tracked frames spread over the head poses, sorted by pose (the authors'
  reference frames): each frame's camera parameters (6-D rotation, translation, log scale) standardised over the
  tracked frames, projected on their first principal component, sorted, `num` evenly spaced picks. Fewer tracked
  frames than `num` repeat some; none tracked -> DatasetError."""
  idx = np.flatnonzero(np.asarray(valid, bool))
  if not len(idx):
    raise errors.DatasetError('reference_set: no tracked frame to take a reference from.')
  cam = np.concatenate([np.asarray(rotation, np.float64)[idx], np.asarray(translation, np.float64)[idx],
                        np.log(np.maximum(np.asarray(scale, np.float64)[idx], 1e-12))[:, None]], axis=1)
  std = cam.std(0)
  z = (cam - cam.mean(0)) / np.where(std > 1e-12, std, 1.0)  # A constant parameter must not divide by 0.
  _, _, vt = np.linalg.svd(z, full_matrices=False)
  axis = vt[0] * np.sign(vt[0][np.argmax(np.abs(vt[0]))])  # SVD's sign is arbitrary: fix it, so the order is too.
  order = idx[np.argsort(z @ axis, kind='stable')]
  return order[np.linspace(0, len(order) - 1, int(num)).round().astype(int)].astype(np.int32)


def middle_reference(ref_index: np.ndarray) -> int:
  """Position in a pose-sorted reference set of the one the self-reenactment protocol uses (the authors': the
  middle one, index num // 2)."""
  return len(ref_index) // 2


def features(audio_dim: int = 300):
  """The TFDS features of one record (import of tensorflow_datasets only here)."""
  import tensorflow_datasets as tfds
  T = tfds.features.Tensor
  f32 = np.float32
  return tfds.features.FeaturesDict({
      'key': tfds.features.Text(),  # '<clip>#<start>' (records are not stored in key order)
      'clip': tfds.features.Text(),
      'identity': tfds.features.Text(),
      'video': tfds.features.Text(),
      'start': np.int32,  # First frame of this record in its clip.
      'fps': f32,
      'crop_box': T(shape=(4,), dtype=f32),  # x0, y0, x1, y1 of the clip's square crop in source pixels
      'frames': T(shape=(None,), dtype=np.object_),  # JPEG bytes of the S x S crops
      'masks': T(shape=(None,), dtype=np.object_),  # PNG bytes, 8-bit person probability (S x S)
      'landmarks': T(shape=(None, NUM_POINTS, 2), dtype=f32),  # crop pixels
      'valid': T(shape=(None,), dtype=np.bool_),
      'p_id': T(shape=(None,), dtype=f32),
      'p_exp': T(shape=(None, None), dtype=f32, encoding='bytes'),  # (T, K_exp) of the dataset's 3DMM
      'rotation': T(shape=(None, 6), dtype=f32),
      'translation': T(shape=(None, 2), dtype=f32),
      'scale': T(shape=(None,), dtype=f32),
      'fit_rms': T(shape=(None,), dtype=f32),  # landmark re-projection RMS, crop pixels
      'mouth': T(shape=(None, 2), dtype=np.int32),  # top-left (row, col) of D_m's mouth box
      'audio': T(shape=(None, audio_dim), dtype=f32),  # RAW h^(a) (T, 300); statistics in the dataset's metadata
      # The per-frame fit (each frame's own identity; config.face3d.train_identity = 'per_frame').
      'frame_p_id': T(shape=(None, None), dtype=f32, encoding='bytes'),
      'frame_p_exp': T(shape=(None, None), dtype=f32, encoding='bytes'),
      'frame_rotation': T(shape=(None, 6), dtype=f32),
      'frame_translation': T(shape=(None, 2), dtype=f32),
      'frame_scale': T(shape=(None,), dtype=f32),
      # The part's reference set (`reference_set`): R frames sorted by pose, the same in every record of the part.
      'ref_index': T(shape=(None,), dtype=np.int32),  # frame numbers in the clip
      'ref_frames': T(shape=(None,), dtype=np.object_),  # JPEG bytes
      'ref_masks': T(shape=(None,), dtype=np.object_),  # PNG bytes
      'ref_landmarks': T(shape=(None, NUM_POINTS, 2), dtype=f32),
      'ref_p_exp': T(shape=(None, None), dtype=f32, encoding='bytes'),
      'ref_rotation': T(shape=(None, 6), dtype=f32),
      'ref_translation': T(shape=(None, 2), dtype=f32),
      'ref_scale': T(shape=(None,), dtype=f32),
      'ref_frame_p_id': T(shape=(None, None), dtype=f32, encoding='bytes'),
      'ref_frame_p_exp': T(shape=(None, None), dtype=f32, encoding='bytes'),
      'ref_frame_rotation': T(shape=(None, 6), dtype=f32),
      'ref_frame_translation': T(shape=(None, 2), dtype=f32),
      'ref_frame_scale': T(shape=(None,), dtype=f32),
  })


def _record(result: ClipResult, lo: int, hi: int, refs: np.ndarray) -> dict[str, Any]:
  c = result.clip
  rec = dict(key=f'{c.clip_id}#{lo:05d}', clip=c.clip_id, identity=c.identity, video=c.video, start=np.int32(lo),
             fps=np.float32(result.fps), crop_box=result.crop_box, p_id=result.p_id,
             frames=np.array(result.frames[lo:hi], dtype=object), masks=np.array(result.masks[lo:hi], dtype=object))
  rec.update({k: v[lo:hi] for k, v in result.arrays.items()})
  rec.update(ref_index=np.asarray(refs, np.int32), ref_frames=np.array([result.frames[i] for i in refs], dtype=object),
             ref_masks=np.array([result.masks[i] for i in refs], dtype=object))
  rec.update({f'ref_{k}': result.arrays[k][refs] for k in REFERENCE_ARRAYS})
  return rec


def cut(num_frames: int, length: int, min_length: int, keep_short_tails: bool = True) -> list[tuple[int, int]]:
  """[lo, hi) sequences of `length` frames covering [0, num_frames). The last piece, when shorter than `length`:
  dropped unless keep_short_tails (the authors drop it); kept, it joins the one before it when shorter than
  `min_length`."""
  bounds = list(range(0, num_frames, length)) + [num_frames]
  pieces = list(zip(bounds[:-1], bounds[1:]))
  if pieces and pieces[-1][1] - pieces[-1][0] < length and not keep_short_tails:
    return pieces[:-1]
  if len(pieces) > 1 and pieces[-1][1] - pieces[-1][0] < min_length:
    pieces[-2:] = [(pieces[-2][0], num_frames)]
  return pieces


def records_from_clip(result: ClipResult, parts: Sequence[tuple[str, int, int]], sequence_length: int,
                      min_length: int, num_references: int = 8, keep_short_tails: bool = False
                      ) -> Iterator[tuple[str, str, dict[str, Any]]]:
  """(split, key, record) for each part (split, lo, hi) of a clip: 'train' parts cut into sequences (`cut`), others
  whole. Every record carries the video's reference set (`reference_set`): over the clip's train frames when it has
  any (so a training example's reference is never a held-out frame, and the held-out frames of a training identity
  are driven from its video's references, as the test protocol of a seen person would be), else over the part's own
  frames (a held-out identity's clip). Records without a usable frame pair are left out (the report counts their
  frames as dropped)."""
  a = result.arrays
  pieces_of = []
  for split, lo, hi in parts:
    pieces = [(lo + s, lo + e) for s, e in cut(hi - lo, sequence_length, min_length, keep_short_tails)
              ] if split == 'train' else [(lo, hi)]
    pieces_of.append((split, [(s, e) for s, e in pieces if usable_pairs(a['valid'][s:e]).any()]))

  def refs_over(pieces: list[tuple[int, int]]) -> np.ndarray:
    valid = np.zeros(len(a['valid']), bool)
    for s, e in pieces:  # References come from the frames the records keep.
      valid[s:e] = a['valid'][s:e]
    return reference_set(a['rotation'], a['translation'], a['scale'], valid, num_references)

  train = [p for split, pieces in pieces_of if split == 'train' for p in pieces]
  train_refs = refs_over(train) if train else None
  for split, pieces in pieces_of:
    if not pieces:
      continue
    refs = train_refs if train_refs is not None else refs_over(pieces)
    for s, e in pieces:
      rec = _record(result, s, e, refs)
      yield split, rec['key'], rec


# ----------------------------------------------------------------------------------------------------------------
# The report.

def report_row(result: ClipResult, parts: Sequence[tuple[str, int, int]], records: Sequence[tuple[str, str, dict]],
               cached: bool) -> dict[str, Any]:
  """One JSONL line: the clip, its split(s), frames kept / dropped and why, fit error, seconds."""
  c = result.clip
  row: dict[str, Any] = dict(clip=c.clip_id, path=c.path, identity=c.identity, status=result.status,
                             reason=result.reason, seconds=result.seconds, stage_seconds=result.stage_seconds,
                             cached=cached,
                             frames=result.num_frames or result.num_source_frames)
  if not result.ok:
    row.update(kept=0, dropped={result.status: row['frames']}, splits={})
    return row
  kept = np.zeros(result.num_frames, bool)
  splits: dict[str, int] = {}
  for split, _, rec in records:
    a = int(rec['start'])
    kept[a:a + len(rec['frames'])] = np.asarray(rec['valid'], bool)
    splits[split] = splits.get(split, 0) + len(rec['frames'])
  dropped: dict[str, int] = {}
  for t in np.flatnonzero(~kept):
    why = result.frame_reasons[t] or 'in a record without two consecutive tracked frames'
    why = re.sub(r'fit RMS [0-9.]+ px', 'fit RMS', why)
    dropped[why] = dropped.get(why, 0) + 1
  rms = result.arrays['fit_rms'][result.arrays['valid']]
  row.update(kept=int(kept.sum()), dropped=dropped, splits=splits, records=len(records),
             fit_rms_px_median=round(float(np.median(rms)), 3) if len(rms) else None, notes=list(result.notes))
  return row


def summary(rows: Iterable[dict[str, Any]], counts: dict[str, dict[str, int]] | None = None) -> str:
  """A one-screen text summary of a build's report rows (and of the split counts, when given)."""
  rows = list(rows)
  by_status: dict[str, int] = {}
  for r in rows:
    by_status[r['status']] = by_status.get(r['status'], 0) + 1
  ok = [r for r in rows if r['status'] == 'ok']
  lines = [f'clips: {len(rows)} ({", ".join(f"{k} {v}" for k, v in sorted(by_status.items()))}); '
           f'{sum(r["cached"] for r in rows)} from the cache']
  frames = sum(r['frames'] for r in rows)
  kept = sum(r['kept'] for r in rows)
  lines.append(f'frames: {frames} read, {kept} kept, {frames - kept} dropped')
  dropped: dict[str, int] = {}
  for r in rows:
    for k, v in r['dropped'].items():
      dropped[k] = dropped.get(k, 0) + v
  for k, v in [kv for kv in sorted(dropped.items(), key=lambda kv: -kv[1]) if kv[1]][:6]:
    lines.append(f'  dropped {v:6d}: {k[:100]}')
  if ok:
    rms = [r['fit_rms_px_median'] for r in ok if r['fit_rms_px_median'] is not None]
    secs = [r['seconds'] for r in rows]
    lines.append(f'fit RMS (median of clip medians): {np.median(rms):.2f} px; seconds per clip: median '
                 f'{np.median(secs):.1f}, total {sum(secs):.1f}')
    stages: dict[str, float] = {}
    for r in rows:
      for k, v in r.get('stage_seconds', {}).items():
        stages[k] = stages.get(k, 0.0) + v
    if stages:
      lines.append('seconds by stage (all clips): ' + ', '.join(f'{k} {v:.1f}' for k, v in stages.items()))
  for r in [r for r in rows if r['status'] != 'ok'][:8]:
    lines.append(f'  {r["status"]:14s} {r["clip"]}: {r["reason"][:110]}')
  if counts:
    for split, c in sorted(counts.items()):
      lines.append(f'split {split}: ' + ', '.join(f'{k} {v}' for k, v in c.items()))
  return '\n'.join(lines)


def split_counts(records: Iterable[tuple[str, str, dict[str, Any]]]) -> dict[str, dict[str, int]]:
  """Per split: clips, records, frames, usable frames, identities."""
  out: dict[str, dict[str, Any]] = {}
  for split, _, rec in records:
    c = out.setdefault(split, dict(clips=set(), records=0, frames=0, usable_frames=0, identities=set()))
    c['clips'].add(rec['clip'])
    c['identities'].add(rec['identity'])
    c['records'] += 1
    c['frames'] += len(rec['frames'])
    c['usable_frames'] += int(np.asarray(rec['valid']).sum())
  return {s: {k: (len(v) if isinstance(v, set) else v) for k, v in c.items()} for s, c in out.items()}
