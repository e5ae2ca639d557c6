"""Reenactment: one image of a person + a driving video (or another audio track) -> a video of that person with the
driver's pose, expression and mouth, with sound (Sec. 3, Fig. 1 of the paper).

  python reenact.py --checkpoint W --reference IMG --driving VIDEO --out OUT.mp4 [--audio FILE] [--side-by-side]
  python -m headgan_jax.reenact ...                                                   (the same)

W is a training work folder (its latest checkpoint and its config.json are used) or one checkpoint's folder
(W/checkpoints/<N>). The pipeline, all of it the training code's own pieces:
  reference image --Tracker.track_image--> p_ref^id, p_ref^exp, camera; y_ref = its crop, x_ref its 3D face image
  driving video --Tracker.iter_video (chunks)--> p_t^exp, camera_t; eq. 1: x_t = render(p_ref^id, p_t^exp, c_t)
    (a run of Table 1's "landmarks" ablation, config.data.conditioning = 'landmarks': x_t and x_ref are drawn
    sketches of the driver's and the reference's tracked 2-D landmarks instead; the driver's landmarks carry the
    driver's face shape, so its cross-identity output takes that shape: there is no eq. 1 for landmarks)
  driving audio (or --audio) --audio.features + the training set's statistics--> h_t^(a)
  G(x_{t-k:t}, y_ref, x_ref, h_t^(a)) --> y~_t, the image_size x image_size crop (nothing is pasted back, as the paper)
  --> H.264 + AAC (PyAV) at the driving fps; --side-by-side writes driving crop | x_t | y~_t.
The first frames' past x are the first frame repeated (as the training pipeline pads). Frames are decoded, tracked,
generated and encoded in chunks of config.track.chunk_frames, so memory does not grow with the video's length (what
does grow: the per-frame detections and audio features, a few hundred bytes a frame, and the audio track, 176 kB
per second at 44.1 kHz). The output is written to a temporary name and renamed when complete.

Frames where no usable face is found keep the last good x_t (the first such frames, before any face, the first good
one) and are counted in the summary; a driving video without sound gives a silent video (said once). The 3DMM and
the audio statistics are the training set's, which train.py copies into W/assets (for a work folder from before it
did, they are read from the dataset the saved config names), so x_t and h^(a) are what G was trained on and W alone,
copied to another machine, is enough. Checkpoints are read by workdir.py (G's variables only).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Callable, Sequence

import numpy as np

from headgan_jax import errors
from headgan_jax import workdir as workdir_lib

OUTPUT_AUDIO_RATE = 44_100  # AAC sample rate of the output's sound track.
NO_AUDIO_NOTE = 'has no audio stream: the output is silent and the mouth is driven by silence.'


# ----------------------------------------------------------------------------------------------------------------
# The checkpoint (config + G's variables) and what G was trained with: workdir.py reads both.

Checkpoint = workdir_lib.Checkpoint
load_checkpoint = workdir_lib.load  # G's variables only, checked against the run's config.json.


def find_checkpoint(path: str | os.PathLike) -> tuple[str, str, int]:
  """(checkpoint folder, config.json, step) for a training work folder (its latest checkpoint) or one checkpoint's
  folder (WORKDIR/checkpoints/<N>, the config two levels up)."""
  found = workdir_lib.find(path, step_flag='--checkpoint')
  return found.folder, found.config_path, found.step


def training_assets(config, workdir: str | os.PathLike | None = None):
  """(3DMM, detector point indices, audio FeatureStats or None) the run trained with: WORKDIR/assets, or for a work
  folder from before train.py wrote them, its training set's. For a run on synthetic data: the tracker's own model
  and no statistics (h^(a) is then given raw)."""
  from headgan_jax.tracking import facemesh as fm
  from headgan_jax.face3d import morphable
  if str(config.data.source) == 'synthetic':
    return None, None, None
  assets = workdir_lib.read_assets(config, workdir)
  if assets.model.num_landmarks != fm.NUM_POINTS and not assets.landmark_map:
    raise errors.FaceModelError(f'{assets.source}/face_model.npz: {assets.model.num_landmarks} landmark vertices, '
                                f'the detector gives {fm.NUM_POINTS} points and config.track.landmark_map is not set.')
  if assets.landmark_map:
    from headgan_jax.tracking import face_model
    table = face_model.read_landmark_map(assets.landmark_map, assets.model.num_vertices)
    model, points = face_model.apply_landmark_map(assets.model, table)
    return model, points, assets.audio_stats
  assert isinstance(assets.model, morphable.MorphableModel)
  return assets.model, np.arange(fm.NUM_POINTS, dtype=np.int32), assets.audio_stats


# ----------------------------------------------------------------------------------------------------------------
# The reenactor.

@dataclasses.dataclass
class Summary:
  out: str
  num_frames: int
  fps: float
  image_size: int
  frame_size: tuple[int, int]  # (height, width) of the written frames.
  audio: str | None  # The file the sound (and h^(a)) came from, None when silent.
  no_face_frames: int  # Frames without a usable face (they kept the last good x_t).
  no_face_first: list[int]  # The first few of them.
  seconds: float
  notes: list[str]

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def to_uint8(images: np.ndarray) -> np.ndarray:
  """[-1, 1] float -> uint8."""
  return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def drive_windows(x: np.ndarray, history: np.ndarray) -> np.ndarray:
  """x_{t-k:t} for every frame of a chunk: x (n, S, S, 3) and the k frames before it (k, S, S, 3) -> (n, S, S, 3(k+1)),
  oldest first along the channels (the training pipeline's order)."""
  k = len(history)
  xs = np.concatenate([history, x])
  return np.concatenate([xs[i:i + len(x)] for i in range(k + 1)], axis=-1)


def keep_last_good(track, last: dict | None) -> tuple[dict, np.ndarray, dict | None]:
  """The driving coefficients of a chunk with every frame without a usable face replaced by the last good frame's
  (carried across chunks in `last`; before the first good frame, the tracker's nearest good frame). Returns
  (p_exp / rotation / translation / scale / landmarks arrays, the replaced frames (n,) bool, the new `last`)."""
  names = ('p_exp', 'rotation', 'translation', 'scale', 'landmarks')
  arrays = {n: np.array(getattr(track, n), np.float32) for n in names}
  bad = ~np.asarray(track.valid, bool)
  good = np.flatnonzero(~bad)
  idx = np.maximum.accumulate(np.where(bad, -1, np.arange(len(bad))))  # Last good frame in this chunk, or -1.
  for n in names:
    a = arrays[n]
    if last is not None:
      a[idx < 0] = last[n]
    elif len(good):  # No good frame yet in the video: the chunk's first good one.
      a[idx < 0] = a[good[0]]
    a[idx >= 0] = a[idx[idx >= 0]]
  new_last = {n: arrays[n][good[-1]].copy() for n in names} if len(good) else last
  return arrays, bad, new_last


class Reenactor:
  """G, the tracker and the audio front end of one run, built once; `run` reenacts one reference with one video."""

  def __init__(self, config, variables, model=None, points=None, audio_stats=None, batch_size: int = 8):
    from headgan_jax.audio import asr
    from headgan_jax.tracking import track as track_lib
    from headgan_jax.nn import generator as gen_lib, inference
    self.config = config.copy_and_resolve_references()
    # Frames without a face are bridged (last good x_t), so a long gap does not reject the driving video.
    self.config.track.max_missing_run = 1 << 30
    self.config.track.masks = False  # The person masks are for training losses only.
    self.size = int(config.image_size)
    self.k = int(config.model.num_past_frames)
    self.batch_size = int(batch_size)
    if self.batch_size < 1:
      raise errors.ConfigError(f'--batch {batch_size}: must be >= 1.')
    self.audio_stats = audio_stats
    self.standardise = str(config.audio.standardise) if audio_stats is not None else 'none'
    self.tracker = track_lib.Tracker(self.config, model, points)
    self.asr = asr.make_backend(self.config)
    self.variables = variables
    generate = inference.make_generate_fn(gen_lib.make_generator(config))  # The reference broadcast on the device.
    # (variables, x_drive, y_ref, x_ref, audio) -> G's frames.
    self._generate = lambda variables, *arrays: generate(variables, inference.Inputs(*arrays))[0]

  def generate(self, x_drive: np.ndarray, y_ref: np.ndarray, x_ref: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """G over n frames in batches of batch_size (the last one padded: one compile): (n, S, S, 3) in [-1, 1]."""
    n, b = len(x_drive), self.batch_size
    out = []
    for i in range(0, n, b):
      xs, hs = x_drive[i:i + b], audio[i:i + b]
      m = len(xs)
      if m < b:
        xs = np.concatenate([xs, np.repeat(xs[-1:], b - m, 0)])
        hs = np.concatenate([hs, np.repeat(hs[-1:], b - m, 0)])
      out.append(np.asarray(self._generate(self.variables, xs, y_ref, x_ref, hs))[:m])
    return np.concatenate(out)

  def conditioning(self, p_id, p_exp, camera, landmarks: np.ndarray, bucket: int) -> np.ndarray:
    """G's conditioning images (n, S, S, 3) in [0, 1]: the 3D face x_t of (p_id, p_exp, camera) (eq. 1), or for
    config.data.conditioning = 'landmarks' the drawn 2-D landmarks (crop pixels), as the training pipeline makes."""
    from headgan_jax.tracking import track as track_lib
    from headgan_jax.face3d import landmarks_image
    if self.config.data.conditioning == 'landmarks':
      return np.asarray(landmarks_image.draw_landmarks(np.asarray(landmarks, np.float32), self.size, self.size))
    return track_lib.render_x(self.tracker.model, p_id, p_exp, camera, self.size, self.config.face3d.x_image_mode,
                              bucket)

  def track_reference(self, reference: str, notes: list[str] | None = None):
    from headgan_jax.tracking import video as video_lib
    from headgan_jax.face3d import camera as cam_lib
    # Upright (EXIF), 8-bit RGB, at most video.MAX_IMAGE_SIDE; what was done goes to `notes`.
    image = video_lib.read_image(reference, notes)
    ref = self.tracker.track_image(image, reference)  # NoFaceFoundError when none.
    if not ref.valid[0]:
      raise errors.NoFaceFoundError(f'{reference} ({ref.reasons[0]})')
    side = float(ref.crop_box[2] - ref.crop_box[0])
    if notes is not None and side < self.size / 2:  # A tiny image or a far face: it is upscaled, so blurry.
      notes.append(f'{reference}: the face crop is only {side:.0f} px wide (upscaled to {self.size} px): expect a '
                   'blurry result.')
    cam = cam_lib.Camera(ref.rotation[:1], ref.translation[:1], ref.scale[:1])
    x_ref = self.conditioning(ref.p_id, ref.p_exp[:1], cam, ref.landmarks[:1], 1)[0]
    y_ref = ref.crops[0].astype(np.float32) / 127.5 - 1.0
    return ref, y_ref, x_ref

  def audio(self, driving: str, audio: str | None, fps: float, num_frames: int, notes: list[str],
            say: Callable[[str], None]):
    """(h^(a) (T, D) as G takes it, the output's mono samples at OUTPUT_AUDIO_RATE cut / padded to the video's
    length or None when silent, the file they came from)."""
    from headgan_jax.audio import features, io as audio_io, stats as stats_lib
    source = audio or driving
    try:
      said: list[str] = []
      wave = audio_io.load_audio(source, OUTPUT_AUDIO_RATE, said)  # Several streams / damaged packets: said.
      for note in said:
        notes.append(note)
        say(f'note: {note}')
    except errors.AudioError as e:
      if audio is not None or 'has no audio stream' not in str(e):
        raise
      note = f'{driving} {NO_AUDIO_NOTE}'
      notes.append(note)
      say(f'note: {note}')
      wave, source = None, None
    silent = np.zeros(int(audio_io.part_bounds(fps, num_frames, OUTPUT_AUDIO_RATE)[-1]), np.float32)
    clipped = silent if wave is None else audio_io.clip_to_frames(wave, fps, num_frames, OUTPUT_AUDIO_RATE)
    h = features.audio_features(clipped, fps, num_frames, self.config, sample_rate=OUTPUT_AUDIO_RATE,
                                backend=self.asr)
    h = stats_lib.normalise(h, self.audio_stats, self.standardise)
    return h, (None if wave is None else clipped), source

  def run(self, reference: str, driving: str, out: str, audio: str | None = None, side_by_side: bool = False,
          progress: bool = True, say: Callable[[str], None] | None = None, side_by_side_out: str | None = None,
          grid_out: str | None = None, grid_rows: int = 4) -> Summary:
    """Writes `out` (and, in the same pass, the side-by-side video `side_by_side_out` and an image grid `grid_out`:
    reference crop | driving crop | x_t | generated, for `grid_rows` evenly spaced frames)."""
    import contextlib
    import tqdm
    from headgan_jax.audio import io as audio_io
    from headgan_jax.tracking import video as video_lib
    from headgan_jax.face3d import camera as cam_lib
    say = say or (lambda m: print(m, file=sys.stderr))
    start = time.perf_counter()
    notes: list[str] = []
    for extra_out in filter(None, (side_by_side_out, grid_out)):
      check_out(extra_out, (reference, driving, audio), suffixes=None)
    created = check_out(out, (reference, driving, audio))
    for folder in created:
      say(f'note: created the folder {folder} for the output.')
    ref_notes: list[str] = []
    ref, y_ref, x_ref = self.track_reference(reference, ref_notes)
    info = video_lib.video_info(driving)
    for note in ref_notes + list(info.notes):
      say(f'note: {note}')
    notes += ref_notes + list(ref.notes) + list(info.notes)
    fps, total = info.fps, info.num_frames
    h, wave, audio_source = self.audio(driving, audio, fps, total, notes, say)
    bounds = audio_io.part_bounds(fps, total, OUTPUT_AUDIO_RATE)
    history, last, done, bad_count, bad_first = None, None, 0, 0, []
    rate = None if wave is None else OUTPUT_AUDIO_RATE
    picks = set(np.linspace(0, total - 1, min(grid_rows, total)).round().astype(int).tolist()) if grid_out else set()
    grid_rows_got: list[np.ndarray] = []
    y_ref_u8 = to_uint8(y_ref)
    with contextlib.ExitStack() as stack:
      writer = stack.enter_context(video_lib.VideoWriter(out, fps, audio_rate=rate))
      extra = stack.enter_context(video_lib.VideoWriter(side_by_side_out, fps, audio_rate=rate)) if (
          side_by_side_out) else None
      bar = stack.enter_context(tqdm.tqdm(total=total, unit='frame', dynamic_ncols=True, disable=not progress,
                                          desc='reenact'))
      for track in self.tracker.iter_video(driving):
        if track.rejected:
          raise errors.VideoError(track.rejected)
        n = track.num_frames
        coeffs, bad, last = keep_last_good(track, last)
        bad_count += int(bad.sum())
        bad_first += [done + int(i) for i in np.flatnonzero(bad)[:10 - len(bad_first)]]
        cam = cam_lib.Camera(coeffs['rotation'], coeffs['translation'], coeffs['scale'])
        x = self.conditioning(ref.p_id, coeffs['p_exp'], cam, coeffs['landmarks'], int(self.config.track.chunk_frames))
        if history is None:  # Before the first frame: the first frame repeated, as in training.
          history = np.repeat(x[:1], self.k, 0)
        rows = np.minimum(np.arange(done, done + n), len(h) - 1)  # The header's count may be a frame short.
        y = to_uint8(self.generate(drive_windows(x, history), y_ref, x_ref, h[rows]))
        history = np.concatenate([history, x])[len(history) + n - self.k:]
        both = np.concatenate([track.crops, to_uint8(x * 2 - 1), y], axis=2) if (
            side_by_side or extra is not None or picks) else None
        samples = None
        if wave is not None:
          lo, hi = (bounds[min(v, total)] for v in (done, done + n))
          samples = wave[lo:hi]
        writer.write(both if side_by_side else y, samples)
        if extra is not None:
          extra.write(both, samples)
        for i in sorted(p - done for p in picks if done <= p < done + n):
          grid_rows_got.append(np.concatenate([y_ref_u8, both[i]], axis=1))
        done += n
        bar.update(n)
      if grid_out:
        video_lib.write_image(grid_out, np.concatenate(grid_rows_got, axis=0))
    report = video_lib.decode_report(driving)
    if report is not None and report.message():
      notes.append(report.message())
      say(f'note: {report.message()}')
    summary = Summary(out=os.path.abspath(out), num_frames=done, fps=fps, image_size=self.size,
                      frame_size=(self.size, self.size * (3 if side_by_side else 1)), audio=audio_source,
                      no_face_frames=bad_count, no_face_first=bad_first,
                      seconds=round(time.perf_counter() - start, 2), notes=notes)
    return summary


def check_out(out: str | os.PathLike, inputs: Sequence[str | None] = (), suffixes: tuple[str, ...] | None = ('.mp4',),
              create: bool = True) -> list[str]:
  """Refuses an output path that cannot be written (one line naming it: wrong suffix, a folder, an input file, a
  file in the way of its folder, a folder without write permission); creates its missing folders (the chosen answer
  to `--out` inside a folder that does not exist) and returns them, outermost first (create=False: only checks)."""
  out = os.fspath(out)
  if os.path.isdir(out):
    raise errors.VideoError(f'{out}: is a folder; the output must be a file path (e.g. {os.path.join(out, "out.mp4")}).')
  if suffixes and not out.lower().endswith(suffixes):
    raise errors.VideoError(f'{out}: the output must be an {" or ".join(suffixes)} file.')
  for given in filter(None, inputs):
    if os.path.exists(given) and os.path.exists(out) and os.path.samefile(given, out):
      raise errors.VideoError(f'{out}: is also an input ({given}); writing it would destroy the input.')
  folder = os.path.dirname(os.path.abspath(out))
  missing, f = [], folder
  while not os.path.exists(f):
    missing.append(f)
    f = os.path.dirname(f)
  if not os.path.isdir(f):
    raise errors.VideoError(f'{out}: cannot create its folder {folder}: {f} is a file, not a folder.')
  if not create:
    if not os.access(f, os.W_OK | os.X_OK):
      raise errors.VideoError(f'{out}: the folder {f} is not writable.')
    return missing[::-1]
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    raise errors.VideoError(f'{out}: cannot create its folder {folder}: {e.strerror or e}.') from e
  if not os.access(folder, os.W_OK | os.X_OK):
    raise errors.VideoError(f'{out}: the folder {folder} is not writable.')
  return missing[::-1]


def reenactor_from_checkpoint(checkpoint: str, batch_size: int = 8) -> tuple[Reenactor, Checkpoint]:
  ckpt = workdir_lib.load(checkpoint, step_flag='--checkpoint')
  model, points, stats = training_assets(ckpt.config, ckpt.workdir)
  return Reenactor(ckpt.config, ckpt.variables, model, points, stats, batch_size), ckpt


def reenact(checkpoint: str, reference: str, driving: str, out: str, audio: str | None = None,
            side_by_side: bool = False, batch_size: int = 8, progress: bool = True, **kwargs) -> Summary:
  """The command as a function (see the module docstring); kwargs go to `Reenactor.run`."""
  reenactor, _ = reenactor_from_checkpoint(checkpoint, batch_size)
  return reenactor.run(reference, driving, out, audio, side_by_side, progress, **kwargs)


def describe(summary: Summary) -> str:
  h, w = summary.frame_size
  text = (f'wrote {summary.out}: {summary.num_frames} frames of {w}x{h} at {summary.fps:g} fps, '
          + (f'sound from {summary.audio}' if summary.audio else 'silent') + f', in {summary.seconds:.1f} s')
  if summary.no_face_frames:
    text += (f'\n{summary.no_face_frames} driving frame(s) had no usable face and kept the last good x_t (first: '
             + ', '.join(map(str, summary.no_face_first)) + ').')
  return text


if __name__ == '__main__':  # The command moved (headgan_jax/commands/reenact.py); this spelling still runs it.
  import runpy
  runpy.run_module('headgan_jax.commands.reenact', run_name='__main__', alter_sys=True)
