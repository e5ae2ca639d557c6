"""Face tracking on real video: frames -> square face crops, detector landmarks, 3DMM fit, x_t (Sec. 3.1, 4.1).

Per clip, as the authors' preprocessing: detect the face in every frame, take the median box, make it square with a
margin (config.track.crop_margin) and crop every frame to it, resized to config.image_size; a clip whose boxes move
too far (config.track.max_box_distance), whose face leaves the frame or is lost for too long is rejected with the
reason. Then, per frame: the detector's 468 landmarks (in crop pixels), one video-mode fit (shared identity,
per-frame expression and camera; `face3d.fitting`), a per-frame fit of the same points (each frame its own
identity, expression and camera: what the authors render training frames with), x_t rendered by our rasteriser, the
mouth box of D_m (centred as config.disc.mouth_centre says) and a foreground (person) mask. Frames where no face is
found or the fit is rejected are flagged with the reason.

Stages are separate methods of `Tracker` (created once: it holds the detector, landmark and segmentation models and
the 3DMM), so reenactment can stream a long video in chunks with bounded memory (`Tracker.iter_video`: a first pass
detects, the second crops, fits with the identity of the first chunk held fixed, and renders). `track_clip` /
`track_image` are the one-call forms. `render_x` is the jitted, batched x_t renderer; `adapt_identity` is eq. 1.

  python -m headgan_jax.tracking.track VIDEO_OR_IMAGE --out DIR     # DIR/report.json + DIR/overlay.mp4 (.png)
  python -m headgan_jax.tracking.track learn CLIP... --out model.npz # a 3DMM on the detector's mesh, from clips

The 3DMM fitted by default is the learned one committed beside tracking/face_model.py (--model data_free: the data-free
one, --model FILE: another).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import tempfile
import time
from typing import Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from headgan_jax import errors
from headgan_jax.tracking import face_model
from headgan_jax.tracking import facemesh as fm
from headgan_jax.tracking import video as video_lib
from headgan_jax.face3d import camera as cam_lib
from headgan_jax.face3d import fitting, morphable, mouth, render


# ----------------------------------------------------------------------------------------------------------------
# The result.

@dataclasses.dataclass
class ClipTrack:
  """A tracked clip (T frames, frame axis first) or image (T = 1). All arrays are numpy.

  When `rejected` is a reason, the per-frame arrays are empty (T = 0) and `num_source_frames` tells the clip length.
  Invalid frames (valid False, reasons[t] says why) carry the parameters of the fit to the nearest valid frame's
  points, so x_t is defined for every frame; datasets should skip them.

  Two fits of the same points: the video-mode fit (p_id shared by the clip, p_exp, rotation, translation, scale:
  evaluation, reenactment and eq. 1 use it) and the per-frame fit (frame_*: each frame's own identity, expression
  and camera, `fitting.fit_frames`), with which the authors render the 3D face of every training frame
  (their reconstruct.py / helpers/reconstruction.py). Built without the frame_* arrays (or loaded from a file
  written before they existed), they are filled from the shared fit.
  """
  source: str
  fps: float
  num_source_frames: int
  crop_box: np.ndarray  # (4,) float32 x0, y0, x1, y1 in source pixels (may extend outside: padded black).
  rejected: str | None
  crops: np.ndarray  # (T, S, S, 3) uint8
  landmarks: np.ndarray  # (T, 468, 2) float32 crop pixels (pixel (i, j) centred at (j + .5, i + .5))
  depth: np.ndarray  # (T, 468) float32 the detector's z, crop pixels, larger towards the camera
  valid: np.ndarray  # (T,) bool: face found AND fit accepted
  reasons: np.ndarray  # (T,) str: '' for valid frames
  num_faces: np.ndarray  # (T,) int32 faces detected per frame
  p_id: np.ndarray  # (K_id,) float32, shared by the clip
  p_exp: np.ndarray  # (T, K_exp) float32
  rotation: np.ndarray  # (T, 6) camera.Camera.rotation
  translation: np.ndarray  # (T, 2) camera.Camera.translation, crop pixels
  scale: np.ndarray  # (T,) camera.Camera.scale, crop pixels per model unit
  fit_rms_px: np.ndarray  # (T,) float32 landmark re-projection RMS, crop pixels
  mouth_boxes: np.ndarray  # (T, 2) int32 top-left (row, col) of D_m's mouth window (face3d.mouth)
  masks: np.ndarray  # (T, S, S) float32 in [0, 1], 1 = person (empty (0, ...) when config.track.masks is False)
  notes: tuple[str, ...] = ()
  frame_p_id: np.ndarray | None = None  # (T, K_id) float32, each frame's own identity
  frame_p_exp: np.ndarray | None = None  # (T, K_exp) float32
  frame_rotation: np.ndarray | None = None  # (T, 6)
  frame_translation: np.ndarray | None = None  # (T, 2) crop pixels
  frame_scale: np.ndarray | None = None  # (T,) crop pixels per model unit

  def __post_init__(self):
    shared = shared_as_frame_fit(self.p_id, self.p_exp, self.rotation, self.translation, self.scale)
    for name, value in shared.items():
      if getattr(self, name) is None:
        setattr(self, name, value)

  @property
  def num_frames(self) -> int:
    return int(self.crops.shape[0])

  @property
  def camera(self) -> cam_lib.Camera:
    return cam_lib.Camera(rotation=self.rotation, translation=self.translation, scale=self.scale)

  @property
  def frame_camera(self) -> cam_lib.Camera:
    """The per-frame fit's cameras (frame_rotation, frame_translation, frame_scale)."""
    return cam_lib.Camera(rotation=self.frame_rotation, translation=self.frame_translation, scale=self.frame_scale)

  @property
  def points3d(self) -> np.ndarray:
    """(T, 468, 3) landmarks with depth (what `face_model.learn_model` takes)."""
    return np.concatenate([self.landmarks, self.depth[..., None]], -1)

  def save(self, path: str | os.PathLike) -> None:
    """Writes a compressed .npz atomically (temporary file in the same folder, then a rename)."""
    path = os.fspath(path)
    arrays = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    arrays['rejected'] = np.asarray('' if self.rejected is None else self.rejected)
    arrays['notes'] = np.asarray(self.notes, dtype=str)
    arrays['masks'] = np.round(self.masks * 255).astype(np.uint8)  # 8 bits are plenty for a probability.
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-', suffix='.npz')
    try:
      with os.fdopen(fd, 'wb') as f:
        np.savez_compressed(f, **{k: np.asarray(v) for k, v in arrays.items()})
      os.replace(tmp, path)
    except BaseException:
      if os.path.exists(tmp):
        os.remove(tmp)
      raise

  @classmethod
  def load(cls, path: str | os.PathLike) -> 'ClipTrack':
    path = os.fspath(path)
    try:
      with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
      raise errors.VideoError(f'{path}: not a readable ClipTrack .npz file: {e}') from e
    names = [f.name for f in dataclasses.fields(cls)]
    missing = [n for n in names if n not in arrays and n not in FRAME_FIT_FIELDS]
    if missing:
      raise errors.VideoError(f'{path}: not a ClipTrack file (missing {", ".join(missing)}).')
    kw = {n: arrays[n] for n in names if n in arrays}  # Older files lack frame_*: __post_init__ fills them.
    kw['source'], kw['fps'] = str(kw['source']), float(kw['fps'])
    kw['num_source_frames'] = int(kw['num_source_frames'])
    kw['rejected'] = str(kw['rejected']) or None
    kw['notes'] = tuple(str(n) for n in kw['notes'])
    kw['masks'] = kw['masks'].astype(np.float32) / 255.0
    return cls(**kw)


FRAME_FIT_FIELDS = ('frame_p_id', 'frame_p_exp', 'frame_rotation', 'frame_translation', 'frame_scale')


# ----------------------------------------------------------------------------------------------------------------
# Pure pieces (numpy / jit).

def shared_as_frame_fit(p_id, p_exp, rotation, translation, scale) -> dict[str, np.ndarray]:
  """The shared fit written as a per-frame one (FRAME_FIT_FIELDS): p_id repeated over the T frames, copies of the
  rest, float32."""
  p_exp = np.asarray(p_exp, np.float32)
  p_id = np.asarray(p_id, np.float32)
  frame_id = np.array(np.broadcast_to(p_id, (p_exp.shape[0],) + p_id.shape[-1:]))
  copies = (np.array(a, np.float32) for a in (p_exp, rotation, translation, scale))
  return dict(zip(FRAME_FIT_FIELDS, (frame_id, *copies)))


def _padding(t: int, bucket: int) -> int:
  """Frames to add so that T becomes a multiple of bucket (a single frame stays single): one compile per bucket."""
  return 0 if t == 1 else (-t) % max(1, bucket)


def fill_missing(found: np.ndarray) -> np.ndarray:
  """For each frame the index of the frame whose detection it uses: itself if found, else the next frame with a
  face, else the previous one (the authors' rule). found (T,) bool with at least one True."""
  t = np.arange(len(found))
  idx = np.where(found, t, len(found))
  nxt = np.minimum.accumulate(idx[::-1])[::-1]
  prev = np.maximum.accumulate(np.where(found, t, -1))
  return np.where(nxt < len(found), nxt, prev)


def longest_run(mask: np.ndarray) -> tuple[int, int]:
  """(length, start) of the longest run of True in mask (T,); (0, 0) when there is none."""
  d = np.diff(np.concatenate([[0], np.asarray(mask, np.int8), [0]]))
  starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
  if not len(starts):
    return 0, 0
  i = int(np.argmax(ends - starts))
  return int(ends[i] - starts[i]), int(starts[i])


def square_box(box: np.ndarray, margin: float, recentre: float = 0.0) -> np.ndarray:
  """The authors' crop box from a face box (x0, y0, x1, y1): square on its long side, moved down by `recentre` box
  heights, then grown so that the face box is (1 - margin) of the side."""
  centre = (box[:2] + box[2:]) / 2 + np.array([0.0, recentre * (box[3] - box[1])])
  side = max(box[2] - box[0], box[3] - box[1]) / (1.0 - margin)
  return np.concatenate([centre - side / 2, centre + side / 2]).astype(np.float32)


def crop_frame(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
  """frame (H, W, 3) uint8 cut to box (x0, y0, x1, y1) (black outside the frame) and resized to size x size."""
  h, w = frame.shape[:2]
  pad = [int(np.ceil(max(0.0, v))) for v in (-box[1], box[3] - h, -box[0], box[2] - w)]  # top, bottom, left, right
  if any(pad):
    frame = np.pad(frame, ((pad[0], pad[1]), (pad[2], pad[3]), (0, 0)))
  shifted = (box[0] + pad[2], box[1] + pad[0], box[2] + pad[2], box[3] + pad[0])
  return fm.resize(frame, size, box=tuple(float(v) for v in shifted))


def lip_gap(landmarks: np.ndarray, upper: int, lower: int) -> np.ndarray:
  """Mouth opening measured on the detector's points: inner-lip gap over the outer-eye-corner distance (T,)."""
  gap = np.linalg.norm(landmarks[:, upper, :2] - landmarks[:, lower, :2], axis=-1)
  eyes = np.linalg.norm(landmarks[:, fm.EYE_CORNERS[0], :2] - landmarks[:, fm.EYE_CORNERS[1], :2], axis=-1)
  return gap / np.maximum(eyes, 1e-6)


def choose_crop_box(boxes: np.ndarray, found: np.ndarray, frame_hw: tuple[int, int], source: str, config
                    ) -> tuple[np.ndarray, str | None]:
  """(square crop box, None) or (its value anyway, the reason to reject the clip) from the largest face box of
  each frame (T, 4) and whether one was found (T,). NoFaceFoundError when no frame has a face."""
  t = config.track
  if not found.any():
    raise errors.NoFaceFoundError(source)
  h, w = frame_hw
  filled = boxes[fill_missing(found)]
  box = square_box(np.median(boxes[found], axis=0), float(t.crop_margin), float(t.height_recentre))
  run, start = longest_run(~found)
  if run > t.max_missing_run:
    return box, (f'no face in frames {start}-{start + run - 1} ({run} consecutive frames, more than '
                 f'config.track.max_missing_run = {t.max_missing_run}): the face leaves the frame or is hidden.')
  inside = (np.clip(filled[:, 2], 0, w) - np.clip(filled[:, 0], 0, w)) * (
      np.clip(filled[:, 3], 0, h) - np.clip(filled[:, 1], 0, h))
  area = np.maximum((filled[:, 2] - filled[:, 0]) * (filled[:, 3] - filled[:, 1]), 1e-6)
  outside = 1.0 - inside / area
  if outside.max() > t.max_outside_fraction:
    f = int(np.argmax(outside > t.max_outside_fraction))
    return box, (f'the face leaves the frame at frame {f}: {outside[f]:.0%} of its box is outside the {w}x{h} '
                 f'frame (limit config.track.max_outside_fraction = {t.max_outside_fraction:.0%}).')
  spread = (filled.max(0) - filled.min(0)) / ((h + w) / 2)  # Max L_inf distance between any two boxes.
  c = int(np.argmax(spread))
  if spread[c] > t.max_box_distance:
    a, b = int(np.argmin(filled[:, c])), int(np.argmax(filled[:, c]))
    return box, (f'the face moves too far: its box moves by {spread[c]:.2f} of the frame size between frames '
                 f'{min(a, b)} and {max(a, b)} (limit config.track.max_box_distance = {t.max_box_distance}).')
  return box, None


@functools.partial(jax.jit, static_argnames=('size', 'mode'))
def _render_x(model: morphable.MorphableModel, p_id, p_exp, camera: cam_lib.Camera, size: int, mode: str):
  vertices = cam_lib.project(morphable.identity_adaptation(model, p_id, p_exp), camera)
  return render.render_face(model, vertices, size, size, mode)


def render_x(model: morphable.MorphableModel, p_id, p_exp, camera: cam_lib.Camera, size: int,
             mode: str = 'triangle_centre', bucket: int = 64) -> np.ndarray:
  """x_t (T, size, size, 3) float32 in [0, 1], background 0 (face3d.render's convention), of the shapes
  s_t = mean + U_id p_id + U_exp p_exp[t] seen by camera[t]. p_id (K_id,) or (T, K_id), p_exp (T, K_exp), camera
  batched over T in `size` pixels. Jit-compiled and batched; T is padded to a multiple of `bucket` (one compile per
  bucket)."""
  p_exp = np.asarray(p_exp, np.float32)
  t = p_exp.shape[0]
  pad = _padding(t, bucket)
  grow = lambda a: np.concatenate([a, np.repeat(a[-1:], pad, 0)]) if pad else a
  p_id = np.asarray(p_id, np.float32)
  p_id = grow(np.broadcast_to(p_id, (t,) + p_id.shape[-1:]))
  cam = cam_lib.Camera(*(grow(np.asarray(a, np.float32)) for a in (camera.rotation, camera.translation,
                                                                   camera.scale)))
  return np.asarray(_render_x(model, jnp.asarray(p_id), jnp.asarray(grow(p_exp)), cam, int(size), mode))[:t]


def adapt_identity(model: morphable.MorphableModel, reference: ClipTrack, driving: ClipTrack, size: int,
                   mode: str = 'triangle_centre', reference_frame: int = 0):
  """Eq. 1 between two tracks: (x_t (T, size, size, 3) of the reference's identity with the driving frames'
  expression and camera, x_ref (size, size, 3) of the reference frame, its own identity, expression and camera)."""
  for name, track in (('reference', reference), ('driving', driving)):
    if track.rejected or track.num_frames == 0:
      raise errors.VideoError(f'{track.source}: the {name} track is rejected or empty ({track.rejected}).')
  x_t = render_x(model, reference.p_id, driving.p_exp, driving.camera, size, mode)
  r = reference_frame
  ref_cam = cam_lib.Camera(reference.rotation[r:r + 1], reference.translation[r:r + 1], reference.scale[r:r + 1])
  x_ref = render_x(model, reference.p_id, reference.p_exp[r:r + 1], ref_cam, size, mode, bucket=1)[0]
  return x_t, x_ref


# ----------------------------------------------------------------------------------------------------------------
# The tracker.

def load_tracking_model(config, mesh: fm.FaceMesh | None) -> tuple[morphable.MorphableModel, np.ndarray]:
  """(3DMM, indices of the detector points it fits): config.face3d.model = '' the learned default
  (face_model.LEARNED_MODEL), 'data_free' the data-free model on the detector's points (needs `mesh`), else a model
  file (+ config.track.landmark_map for a model on another topology)."""
  path = str(config.face3d.model)
  every_point = np.arange(fm.NUM_POINTS, dtype=np.int32)
  if path == face_model.DATA_FREE:
    return face_model.detector_default_model(mesh), every_point
  model = morphable.load(path) if path else face_model.load_learned_default()
  if path and config.track.landmark_map:
    table = face_model.read_landmark_map(config.track.landmark_map, model.num_vertices)
    return face_model.apply_landmark_map(model, table)
  if model.num_landmarks != fm.NUM_POINTS:
    raise errors.FaceModelError(
        f'{path}: the model has {model.num_landmarks} landmark vertices, the face detector gives {fm.NUM_POINTS} '
        f'points: set config.track.landmark_map to a file mapping each detector point to a model vertex.')
  return model, every_point


class Tracker:
  """Detector, landmark and segmentation models and the 3DMM, created once from the config; one method per stage."""

  def __init__(self, config, model: morphable.MorphableModel | None = None, points: np.ndarray | None = None):
    self.config = config
    self.size = int(config.image_size)
    self.mesh = fm.FaceMesh(fm.FaceMeshSettings.from_config(config))
    if model is None:
      model, points = load_tracking_model(config, self.mesh)
    self.model = model
    self.points = np.arange(model.num_landmarks, dtype=np.int32) if points is None else np.asarray(points)
    if len(self.points) != model.num_landmarks:
      raise errors.FaceModelError(f'the tracker was given {len(self.points)} detector points for a model with '
                                  f'{model.num_landmarks} landmark vertices.')
    mouth.check_centre(str(config.disc.mouth_centre))  # A bad value fails now, not after a clip is tracked.
    self.bases = fitting.LandmarkBases.from_model(model)
    self.fit_settings = fitting.FitSettings.from_config(config)
    # Inner-lip mid points, for lip_gap (decided on the model's mean, seen from the front).
    mean_img = np.asarray(model.mean)[np.asarray(model.landmark_indices)] * np.array([1.0, -1.0, 1.0])
    full = np.zeros((fm.NUM_POINTS, 2), np.float32)
    full[self.points] = mean_img[:, :2]
    _, _, self.upper_lip, self.lower_lip = face_model.lip_sides(self.mesh.topology, full)

  # Stage 1: detection and the clip's crop box.
  def detect(self, frames: np.ndarray) -> fm.Detections:
    """Faces per frame (largest first), source pixels."""
    return self.mesh.detect(frames)

  def crop_box(self, boxes: np.ndarray, found: np.ndarray, frame_hw: tuple[int, int], source: str
               ) -> tuple[np.ndarray, str | None]:
    return choose_crop_box(boxes, found, frame_hw, source, self.config)

  # Stage 2: crops and landmarks.
  def crop(self, frames: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(T, S, S, 3) uint8 crops of frames (T, H, W, 3) to the clip's box (antialiased, black outside)."""
    return np.stack([crop_frame(f, box, self.size) for f in frames])

  def to_crop(self, points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Source pixels (..., 2 or 3) -> crop pixels (x, y and a z column all scale alike)."""
    k = self.size / (box[2] - box[0])
    out = points * k
    out[..., 0] -= box[0] * k
    out[..., 1] -= box[1] * k
    return out.astype(np.float32)

  def landmarks(self, frames: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray):
    """(T, 468, 3) source-pixel points (z towards the camera) and face-presence (T,) on full-resolution frames, the
    ROI from one detection per frame (boxes (T, 4), keypoints (T, 6, 2))."""
    return self.mesh.landmarks(frames, boxes, keypoints, refine=bool(self.config.track.refine_landmarks))

  # Stage 3: the fit.
  def fit(self, landmarks: np.ndarray, usable: np.ndarray, p_id: np.ndarray | None = None) -> dict:
    """Video-mode fit of (T, 468, 2+) crop-pixel landmarks; frames with usable False weigh 0 (they follow the nearest
    usable frame's points). p_id given: identity held fixed. Returns numpy p_id, p_exp, camera arrays, rms."""
    t = len(landmarks)
    if not usable.any():
      raise errors.LandmarkError('fit: no frame has usable landmarks.')
    src = fill_missing(usable)
    points = landmarks[src][:, self.points, :2]
    weights = usable.astype(np.float32)
    pad = _padding(t, int(self.config.track.fit_bucket))
    if pad:
      points = np.concatenate([points, np.repeat(points[-1:], pad, 0)])
      weights = np.concatenate([weights, np.zeros(pad, np.float32)])
    points = fitting.validate_landmarks(points, self.model.num_landmarks)
    state, sq = fitting.fit_clip(self.bases, jnp.asarray(points), self.fit_settings, weights,
                                 None if p_id is None else jnp.asarray(p_id, jnp.float32))
    rot6 = cam_lib.matrix_to_rotation_6d(state.rot)
    out = dict(p_id=state.p_id, p_exp=state.p_exp, rotation=rot6, translation=state.trans,
               scale=jnp.exp(state.log_scale), rms=jnp.sqrt(sq / self.model.num_landmarks))
    return {k: np.asarray(v, np.float32)[:t] if k != 'p_id' else np.asarray(v, np.float32) for k, v in out.items()}

  def fit_each_frame(self, landmarks: np.ndarray, usable: np.ndarray, shared: dict) -> dict:
    """Per-frame fit of (T, 468, 2+) crop-pixel landmarks (`fitting.fit_each_frame`: every frame its own identity,
    expression and camera, as the authors render training frames), each frame started from `shared`, the video fit
    of the same frames (`fit`'s dict). Why start there: the bounded LM from the closed-form start needs far more
    than config.face3d.fit_iterations steps on one frame (on driving.mp4, 46 of 150 frames ended worse than the
    shared fit after 10); from the shared fit no frame can end worse (E never increases). Frames with usable False
    take the nearest usable frame's points, as in `fit`. Returns numpy FRAME_FIT_FIELDS arrays and 'rms' (T,)."""
    t = len(landmarks)
    src = fill_missing(usable) if usable.any() else np.arange(t)
    pad = _padding(t, int(self.config.track.fit_bucket))  # Same buckets as `fit`: one compile per bucket.
    grow = lambda a: np.concatenate([a, np.repeat(a[-1:], pad, 0)]) if pad else a  # noqa: E731
    points = fitting.validate_landmarks(grow(landmarks[src][:, self.points, :2]), self.model.num_landmarks)
    start = fitting.start_state(shared['p_id'], grow(shared['p_exp']), cam_lib.Camera(
        *(grow(shared[k]) for k in ('rotation', 'translation', 'scale'))))
    state, sq = fitting.fit_each_frame(self.bases, jnp.asarray(points), self.fit_settings, start)
    values = (state.p_id, state.p_exp, cam_lib.matrix_to_rotation_6d(state.rot), state.trans,
              jnp.exp(state.log_scale), jnp.sqrt(sq / self.model.num_landmarks))
    return {k: np.asarray(v, np.float32)[:t] for k, v in zip(FRAME_FIT_FIELDS + ('rms',), values)}

  # Stage 4: what is drawn from the fit.
  def render(self, p_id, p_exp, camera: cam_lib.Camera) -> np.ndarray:
    return render_x(self.model, p_id, p_exp, camera, self.size, self.config.face3d.x_image_mode,
                    int(self.config.track.fit_bucket))

  def mouth_boxes(self, p_id, p_exp, camera: cam_lib.Camera) -> np.ndarray:
    vertices = cam_lib.project(morphable.identity_adaptation(self.model, jnp.asarray(p_id), jnp.asarray(p_exp)),
                               cam_lib.Camera(*(jnp.asarray(a) for a in (camera.rotation, camera.translation,
                                                                          camera.scale))))
    return np.asarray(mouth.mouth_box(vertices, self.model.mouth_indices, self.size, int(self.config.disc.mouth_size),
                                      centre=str(self.config.disc.mouth_centre)), np.int32)

  def masks(self, crops: np.ndarray) -> np.ndarray:
    if not self.config.track.masks:
      return np.zeros((0,) + crops.shape[1:3], np.float32)
    return self.mesh.segment(crops)

  # Stages 1-2 together: where the face is.
  def locate(self, frames: np.ndarray, source: str, det: fm.Detections | None = None, box=None) -> Located:
    """Detections, the crop box (or the reason to reject the clip) and, unless rejected, the landmarks in crop
    pixels. `det` / `box` skip detection / the box choice (a chunk of a streamed video, a still image)."""
    det = self.detect(frames) if det is None else det
    found = det.count > 0
    notes = tuple(_multi_face_notes(det.count, source))
    reason = None
    if box is None:
      box, reason = self.crop_box(det.boxes[:, 0], found, frames.shape[1:3], source)
    if reason:
      return Located(det, found, box, f'{source}: {reason}', None, None, notes)
    use = fill_missing(found) if found.any() else np.zeros(len(found), np.int64)
    points, presence = self.landmarks(frames, det.boxes[use, 0], det.keypoints[use, 0])
    return Located(det, found, box, None, self.to_crop(points, box), presence, notes)

  # All stages.
  def finish(self, frames: np.ndarray, loc: Located, source: str, fps: float, num_source: int, p_id=None
             ) -> ClipTrack:
    """Stages 3-4 on located frames: crops, fit, mouth boxes, masks -> ClipTrack."""
    if loc.rejected:
      return self._rejected(source, fps, num_source, loc.box, loc.rejected, loc.notes)
    crops = self.crop(frames, loc.box)
    points = loc.points
    usable = loc.found & (loc.presence >= self.config.track.min_presence)
    if usable.any():
      fit = self.fit(points, usable, p_id)
    else:  # A chunk of a streamed video without any face: parameters from its (borrowed) points, all invalid.
      fit = self.fit(points, np.ones_like(usable), p_id)
    frame = self.fit_each_frame(points, usable, fit)
    cam = cam_lib.Camera(fit['rotation'], fit['translation'], fit['scale'])
    limit = self.fit_settings.max_residual_px
    accepted = fit['rms'] <= limit
    reasons = np.where(~loc.found, 'no face detected', np.where(
        ~usable, 'landmarks rejected (face-presence below config.track.min_presence)',
        np.where(~accepted, np.char.add(np.char.add('fit RMS ', np.char.mod('%.2f', fit['rms'])),
                                        f' px > config.face3d.max_residual_px = {limit}'), '')))
    return ClipTrack(
        source=source, fps=float(fps), num_source_frames=int(num_source), crop_box=loc.box, rejected=None,
        crops=crops, landmarks=points[..., :2], depth=points[..., 2], valid=usable & accepted,
        reasons=reasons.astype(str), num_faces=loc.det.count.astype(np.int32), p_id=fit['p_id'], p_exp=fit['p_exp'],
        rotation=fit['rotation'], translation=fit['translation'], scale=fit['scale'], fit_rms_px=fit['rms'],
        mouth_boxes=self.mouth_boxes(fit['p_id'], fit['p_exp'], cam), masks=self.masks(crops), notes=loc.notes,
        **{k: frame[k] for k in FRAME_FIT_FIELDS})

  def _rejected(self, source, fps, num_source, box, reason, notes) -> ClipTrack:
    s = self.size
    empty = lambda *shape, dtype=np.float32: np.zeros((0,) + shape, dtype)
    return ClipTrack(source=source, fps=float(fps), num_source_frames=int(num_source), crop_box=box, rejected=reason,
                     crops=empty(s, s, 3, dtype=np.uint8), landmarks=empty(fm.NUM_POINTS, 2),
                     depth=empty(fm.NUM_POINTS), valid=empty(dtype=bool), reasons=empty(dtype=str),
                     num_faces=empty(dtype=np.int32), p_id=np.zeros(self.model.num_id, np.float32),
                     p_exp=empty(self.model.num_exp), rotation=empty(6), translation=empty(2), scale=empty(),
                     fit_rms_px=empty(), mouth_boxes=empty(2, dtype=np.int32), masks=empty(s, s), notes=tuple(notes),
                     frame_p_id=empty(self.model.num_id), frame_p_exp=empty(self.model.num_exp),
                     frame_rotation=empty(6), frame_translation=empty(2), frame_scale=empty())

  def track_frames(self, frames: np.ndarray, fps: float, source: str = '<frames>', p_id=None) -> ClipTrack:
    """Tracks a clip held in memory: frames (T, H, W, 3) uint8."""
    frames = _check_frames(frames, source, int(self.config.track.min_frames))
    return self.finish(frames, self.locate(frames, source), source, fps, len(frames), p_id)

  def track_image(self, image: np.ndarray, source: str = '<image>', p_id=None) -> ClipTrack:
    """Tracks one image (H, W, 3) uint8 (a reference): T = 1, the largest face if there are several (noted)."""
    frames = _check_frames(np.asarray(image)[None], source, 1)
    det = self.detect(frames)
    if det.count[0] == 0:
      raise errors.NoFaceFoundError(source)
    box = square_box(det.boxes[0, 0], float(self.config.track.crop_margin), float(self.config.track.height_recentre))
    return self.finish(frames, self.locate(frames, source, det, box), source, 0.0, 1, p_id)

  def iter_video(self, path: str | os.PathLike, p_id=None) -> Iterator[ClipTrack]:
    """Streams a long video as ClipTracks of config.track.chunk_frames frames, memory bounded by a chunk: pass 1
    detects in every frame and chooses the crop box (or yields one rejected track); pass 2 tracks chunk by chunk,
    the identity of the first chunk (or the given p_id) held fixed for the rest."""
    path = os.fspath(path)
    info = video_lib.video_info(path)
    chunk = int(self.config.track.chunk_frames)
    if info.num_frames < self.config.track.min_frames:
      _check_frames(np.zeros((info.num_frames, 2, 2, 3), np.uint8), path, int(self.config.track.min_frames))
    det = fm.Detections(*(np.concatenate(a) for a in zip(*(self.detect(f) for f in video_lib.iter_frames(path, chunk)))))
    found = det.count > 0
    box, reason = self.crop_box(det.boxes[:, 0], found, (info.height, info.width), path)
    if reason:
      yield self._rejected(path, info.fps, len(found), box, f'{path}: {reason}', _multi_face_notes(det.count, path))
      return
    near = fill_missing(found)
    start = 0
    for frames in video_lib.iter_frames(path, chunk):
      sl = slice(start, start + len(frames))
      # Frames without a face take the nearest detection of the whole clip (stays invalid: count 0).
      part = fm.Detections(det.boxes[near[sl]], det.keypoints[near[sl]], det.scores[sl], det.count[sl])
      loc = self.locate(frames, path, part, box)
      track = self.finish(frames, loc._replace(found=det.count[sl] > 0), path, info.fps, len(found), p_id)
      p_id = track.p_id if p_id is None else p_id
      start += len(frames)
      yield track


class Located(NamedTuple):
  """What `Tracker.locate` finds: detections, found (T,), crop box, rejection reason or None, landmarks (T, 468, 3)
  in crop pixels (z towards the camera) and face-presence (T,) (both None when rejected), notes."""
  det: fm.Detections
  found: np.ndarray
  box: np.ndarray
  rejected: str | None
  points: np.ndarray | None
  presence: np.ndarray | None
  notes: tuple[str, ...]


def _check_frames(frames: np.ndarray, source: str, min_frames: int) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise errors.VideoError(f'{source}: frames must be (T, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}.')
  if len(frames) < min_frames:
    raise errors.VideoError(f'{source}: has {len(frames)} frame(s); a clip needs at least config.track.min_frames = '
                            f'{min_frames} (track a still image with track_image).')
  return np.ascontiguousarray(frames)


def _multi_face_notes(count: np.ndarray, source: str) -> list[str]:
  many = np.flatnonzero(count > 1)
  if not len(many):
    return []
  where = 'the image' if len(count) == 1 else f'{len(many)} frame(s) (first: frame {many[0]})'
  return [f'{source}: {int(count[many].max())} faces found in {where}; the largest was tracked.']


def track_clip(video_path_or_frames, config, tracker: Tracker | None = None, fps: float = 25.0) -> ClipTrack:
  """Tracks a whole clip: a video path, or frames (T, H, W, 3) uint8 (then `fps` is recorded as given)."""
  tracker = tracker or Tracker(config)
  if isinstance(video_path_or_frames, (str, os.PathLike)):
    path = os.fspath(video_path_or_frames)
    info = video_lib.video_info(path)
    if info.num_frames < config.track.min_frames:
      _check_frames(np.zeros((info.num_frames, 2, 2, 3), np.uint8), path, int(config.track.min_frames))
    frames, fps = video_lib.read_video(path)
    return tracker.track_frames(frames, fps, path)
  return tracker.track_frames(np.asarray(video_path_or_frames), fps, '<frames>')


def track_image(path_or_array, config, tracker: Tracker | None = None) -> ClipTrack:
  """Tracks one image (a path or an (H, W, 3) uint8 array): a ClipTrack with T = 1."""
  tracker = tracker or Tracker(config)
  if isinstance(path_or_array, (str, os.PathLike)):
    path = os.fspath(path_or_array)
    return tracker.track_image(video_lib.read_image(path), path)
  return tracker.track_image(np.asarray(path_or_array), '<image>')


# ----------------------------------------------------------------------------------------------------------------
# Overlay and the command.

def overlay_frames(track: ClipTrack, x_t: np.ndarray) -> np.ndarray:
  """(T, S, 3 S, 3) uint8: crop | crop with the landmarks | x_t blended over the crop."""
  from headgan_jax.face3d import landmarks_image
  crops = track.crops.astype(np.float32) / 255.0
  s = crops.shape[1]
  dots = np.asarray(landmarks_image.draw_landmarks(track.landmarks, s, s, radius=max(1, s // 256)))
  lit = dots.sum(-1, keepdims=True) > 0
  with_points = np.where(lit, dots, crops)
  face = x_t.sum(-1, keepdims=True) > 0.01
  blend = np.where(face, 0.35 * crops + 0.65 * x_t, crops)
  return np.round(np.concatenate([crops, with_points, blend], axis=2) * 255).astype(np.uint8)


def report(track: ClipTrack, seconds: float | None = None) -> dict:
  tracked = track.valid
  out = dict(source=track.source, num_frames=int(track.num_source_frames), num_tracked=int(tracked.sum()),
             fit_rms_px_median=float(np.median(track.fit_rms_px[tracked])) if tracked.any() else None,
             crop_box=[round(float(v), 2) for v in track.crop_box], rejected=track.rejected, fps=track.fps,
             image_size=int(track.crops.shape[1]) if track.num_frames else None, notes=list(track.notes))
  bad = np.flatnonzero(~tracked)
  out['invalid_frames'] = {int(t): str(track.reasons[t]) for t in bad[:50]}
  if seconds is not None:
    out['seconds'] = round(seconds, 2)
  return out


def _write_json(path: str, data: dict) -> None:
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-', suffix='.json')
  try:
    with os.fdopen(fd, 'w') as f:
      json.dump(data, f, indent=2)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def run_command(source: str, out_dir: str, config, save_track: bool = False) -> dict:
  """Tracks `source` (video or image) and writes DIR/report.json and DIR/overlay.mp4 (.png for an image)."""
  start = time.perf_counter()
  tracker = Tracker(config)
  image = video_lib.is_image_path(source)
  track = track_image(source, config, tracker) if image else track_clip(source, config, tracker)
  os.makedirs(out_dir, exist_ok=True)
  if not track.rejected:
    x_t = tracker.render(track.p_id, track.p_exp, track.camera)
    frames = overlay_frames(track, x_t)
    if image:
      video_lib.write_image(os.path.join(out_dir, 'overlay.png'), frames[0])
    else:
      video_lib.write_video(os.path.join(out_dir, 'overlay.mp4'), frames, track.fps)
    if save_track:
      track.save(os.path.join(out_dir, 'track.npz'))
  data = report(track, time.perf_counter() - start)
  _write_json(os.path.join(out_dir, 'report.json'), data)
  return data


def learn_command(sources: Sequence[str], out: str, config, num_exp: int) -> morphable.MorphableModel:
  """Tracks the clips' landmarks (no fit needed) and learns a 3DMM on the detector's mesh from them."""
  tracker = Tracker(config)
  clips = []
  for source in sources:
    frames, _ = video_lib.read_video(source)
    loc = tracker.locate(frames, source)
    if loc.rejected:
      print(f'skipping {loc.rejected}', file=sys.stderr)
      continue
    clips.append(loc.points[loc.found & (loc.presence >= config.track.min_presence)])
  model = face_model.learn_model(clips, tracker.mesh.topology, num_exp=num_exp)
  morphable.save(model, out)
  return model


if __name__ == '__main__':  # The command moved (headgan_jax/commands/track.py); this spelling still runs it.
  import runpy
  runpy.run_module('headgan_jax.commands.track', run_name='__main__', alter_sys=True)
