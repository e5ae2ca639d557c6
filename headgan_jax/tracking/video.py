"""Video input with PyAV: whole clips or chunks of frames, fps and frame count; still images; video output.

Frames are RGB uint8 (T, H, W, 3), C-contiguous (decoders can hand out strided planes, which dlib and LiteRT reject).
Every failure to read raises `VideoError` naming the file: missing or empty file, corrupt or unknown header, no video
stream, a stream that decodes to no frames. Inputs as people have them are read as they are meant to be seen (each
thing done is said in `VideoInfo.notes` / `read_image(notes=...)` / `decode_report`): phone videos upright (their
display matrix), variable frame rates on a constant-rate time line, frames damaged mid-stream replaced by the frame
before and counted; phone photos upright (EXIF orientation), 16-bit, palette, transparent and CMYK images in 8-bit
RGB, very large images reduced (`MAX_IMAGE_SIDE`). docs/reliability.md lists them.
`write_video` / `VideoWriter` (streaming, with AAC audio) write H.264 (yuv420p, even sizes) atomically: a temporary
file in the same folder, then a rename.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from fractions import Fraction
from typing import Iterator

import av
import numpy as np

from headgan_jax.errors import VideoError

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff')


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """What the frames will be: frames/s, frame count and size as `iter_frames` yields them (upright: after the
  stream's display matrix; on a constant-rate time line: see `iter_frames`), and notes on what was done to get there."""
  path: str
  fps: float
  num_frames: int
  height: int
  width: int
  notes: tuple[str, ...] = ()


@dataclasses.dataclass
class DecodeReport:
  """What one pass of `iter_frames` over a file met: packets that did not decode, frames the decoder flagged as
  damaged (kept: decoded with concealment), time-line slots filled by repeating a frame, frames skipped."""
  path: str
  num_frames: int  # Frames yielded (the time line's length).
  packets: int = 0  # Video packets with data (one coded frame each).
  decoded: int = 0  # Frames that came out of the decoder.
  damaged: int = 0  # Of those, frames the decoder flagged as corrupt (decoded with errors, concealed).
  errors: int = 0  # Packets the decoder refused (InvalidData & co.).
  first_error: str = ''
  repeated: int = 0  # Time-line slots without a frame of their own, filled with the frame before (or after).
  first_repeated: int = -1
  skipped: int = 0  # Decoded frames with no slot of their own (variable rate faster than the time line).
  variable_rate: bool = False

  @property
  def undecodable(self) -> int:
    return max(0, self.packets - self.decoded)

  def message(self) -> str | None:
    """One line for the user, None when every frame decoded cleanly."""
    parts = []
    if self.undecodable:
      where = f' (first missing: frame {self.first_repeated})' if (
          self.first_repeated >= 0 and not self.variable_rate) else ''
      parts.append(f'{self.undecodable} of {self.packets} frames could not be decoded{where}'
                   + (f' ({self.first_error})' if self.first_error else '')
                   + '; each was replaced by the decoded frame before it (the first ones: by the first decoded frame)')
    if self.damaged:
      parts.append(f'{self.damaged} frame(s) decoded with errors (damaged data, concealed by the decoder) were kept')
    return f'{self.path}: ' + '; '.join(parts) + '.' if parts else None


_LAST_REPORTS: dict[str, DecodeReport] = {}


def decode_report(path: str | os.PathLike) -> DecodeReport | None:
  """The report of the latest complete `iter_frames` pass over `path` in this process (None when none)."""
  return _LAST_REPORTS.get(os.path.abspath(os.fspath(path)))


def is_image_path(path: str | os.PathLike) -> bool:
  return os.fspath(path).lower().endswith(IMAGE_SUFFIXES)


def _check_file(path: str) -> None:
  if not os.path.exists(path):
    raise VideoError(f'{path}: file not found.')
  if os.path.isdir(path):
    raise VideoError(f'{path}: is a folder, not a video file.')
  if os.path.getsize(path) == 0:
    raise VideoError(f'{path}: the file is empty (0 bytes).')


def _open(path: str):
  _check_file(path)
  try:
    container = av.open(path)
  except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as e:  # PyAV's errors are OSErrors too.
    raise VideoError(f'{path}: not a readable video file (corrupt or unknown header): {e}') from e
  if not container.streams.video:
    container.close()
    raise VideoError(f'{path}: has no video stream.')
  return container


# ----------------------------------------------------------------------------------------------------------------
# Orientation: the display matrix (FFmpeg's AV_FRAME_DATA_DISPLAYMATRIX, from an MP4/MOV track header: how phones
# store portrait or upside-down video) maps a coded pixel (p, q) to the displayed (a p + c q, b p + d q).

def _orientation_ops():
  """{(a, b, c, d): (k, flip)} for the 8 signed permutations: display = np.rot90(coded[:, ::-1] if flip else coded, k),
  found by probing where the coded neighbours of pixel (0, 0) land."""
  probe = np.arange(6).reshape(2, 3)
  table = {}
  for flip in (False, True):
    for k in range(4):
      out = np.rot90(probe[:, ::-1] if flip else probe, k)
      where = {v: np.argwhere(out == v)[0] for v in (0, 1, 3)}  # (row, col) = (q', p').
      dp, dq = where[1] - where[0], where[3] - where[0]
      table[(int(dp[1]), int(dp[0]), int(dq[1]), int(dq[0]))] = (k, flip)
  return table


_ORIENTATION_OPS = _orientation_ops()


def _orientation(frame) -> tuple[tuple[int, bool] | None, str | None]:
  """((k, flip) to show the frame upright, or None for as coded; a note when the matrix cannot be applied)."""
  sd = frame.side_data.get('DISPLAYMATRIX')
  if sd is None:
    return None, None
  m = np.frombuffer(bytes(memoryview(sd)), dtype=np.int32).astype(np.float64)
  if m.size != 9:
    return None, None
  a, b, c, d = m[0], m[1], m[3], m[4]
  scale = max(np.hypot(a, b), 1.0)
  key = tuple(int(round(v / scale)) for v in (a, b, c, d))
  if key not in _ORIENTATION_OPS or max(abs(v / scale - r) for v, r in zip((a, b, c, d), key)) > 1e-3:
    return None, f'its display matrix asks for a rotation of {frame.rotation} degrees, not a multiple of 90: not applied'
  op = _ORIENTATION_OPS[key]
  return (None, None) if op == (0, False) else (op, None)


def _describe_orientation(op: tuple[int, bool]) -> str:
  k, flip = op
  turn = {0: '', 1: 'turned 90 degrees counter-clockwise', 2: 'turned 180 degrees', 3: 'turned 90 degrees clockwise'}[k]
  return ' and '.join(filter(None, ['mirrored' if flip else '', turn]))


def _apply_orientation(image: np.ndarray, op: tuple[int, bool] | None) -> np.ndarray:
  if op is None:
    return image
  k, flip = op
  return np.ascontiguousarray(np.rot90(image[:, ::-1] if flip else image, k))


# ----------------------------------------------------------------------------------------------------------------
# The time line: one slot per frame at a constant rate. A constant-rate stream (every frame within one frame interval
# of where a constant rate puts it) keeps its frame count and the header's average rate, one slot per packet; a
# variable-rate one (phones lower the rate in the dark) is read on a grid at its median rate, so frame t is always
# at t / fps, where the sound is. Slots whose frame did not decode repeat the frame before.

@dataclasses.dataclass(frozen=True)
class _Timeline:
  info: VideoInfo
  pts: np.ndarray | None  # Sorted packet pts (constant rate), or None.
  start: int  # First pts.
  step: Fraction | None  # Variable rate: slot spacing in pts units; None: one slot per packet.
  packets: int
  orientation: tuple[int, bool] | None
  decode_size: tuple[int, int]  # (width, height) every decoded frame is scaled to before `orientation`.

  def slot(self, pts: int | None) -> int | None:
    if pts is None:
      return None
    if self.step is not None:
      return int(round((pts - self.start) / self.step))
    if self.pts is None:
      return None
    i = int(np.searchsorted(self.pts, pts))
    if i < len(self.pts) and self.pts[i] == pts:
      return i
    return None


def _scan(path: str) -> _Timeline:
  """Demuxes the video stream (no decoding) for its presentation times and decodes its first frame for the display
  matrix and the size."""
  with _open(path) as container:
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    notes = []
    pts, first = [], None
    try:
      for packet in container.demux(stream):
        if packet.size > 0 and not packet.is_discard:  # Discarded: pre-roll before an edit list's start.
          pts.append(packet.pts if packet.pts is not None else packet.dts)
        if first is None:
          try:
            frames = stream.decode(packet)
          except (av.error.FFmpegError, ValueError):
            continue
          first = frames[0] if frames else None
    except av.error.FFmpegError as e:
      if not pts:
        raise VideoError(f'{path}: cannot read the video stream: {e}') from e
      notes.append(f'{path}: the file ends early or is damaged after {len(pts)} frames ({e}); the frames before '
                   'are used')
    if not pts:
      raise VideoError(f'{path}: the video stream has no frames.')
    if first is None:
      raise VideoError(f'{path}: the video stream decodes to no frames (empty or corrupt): none of its {len(pts)} '
                       'frames decodes.')
    tb = stream.time_base or Fraction(1, 90000)
    step, sorted_pts, num_frames = None, None, len(pts)
    if all(p is not None for p in pts):
      sorted_pts = np.sort(np.asarray(pts, np.int64))
      uniq = np.unique(sorted_pts)
      deltas = np.diff(uniq)
      if len(deltas) >= 2:
        # Constant rate unless a constant-rate reading (the line through the first and last frame times) puts some
        # frame more than one frame interval away from its own time: then a grid at the median spacing.
        i = np.arange(len(uniq))
        line = uniq[0] + i * (float(uniq[-1] - uniq[0]) / (len(uniq) - 1))
        if np.max(np.abs(uniq - line)) > float(uniq[-1] - uniq[0]) / (len(uniq) - 1):
          step = Fraction(float(np.median(deltas))).limit_denominator(1 << 20)
          num_frames = int(round((int(uniq[-1]) - int(uniq[0])) / step)) + 1
          rate = 1 / (step * tb)
          lo, hi = 1 / float(deltas.max() * tb), 1 / float(deltas.min() * tb)
          notes.append(f'{path}: variable frame rate ({lo:.3g} to {hi:.3g} frames/s): read at a constant '
                       f'{float(rate):.4g} frames/s, its median ({num_frames} frames, from {len(uniq)}: a frame is '
                       'repeated where the rate drops and skipped where it rises), so picture and sound stay in step.')
    if not rate or float(rate) <= 0:
      raise VideoError(f'{path}: the video stream has no frame rate.')
    w, h = int(first.width), int(first.height)
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    if sar and float(sar) > 0 and abs(float(sar) - 1.0) > 1e-3:
      w2 = max(2, int(round(w * float(sar))))
      notes.append(f'{path}: non-square pixels (aspect {sar}): frames are scaled from {w}x{h} to {w2}x{h}.')
      w = w2
    orientation, why = _orientation(first)
    if why:
      notes.append(f'{path}: {why}.')
    dh, dw = (w, h) if orientation and orientation[0] % 2 else (h, w)
    if orientation:
      notes.append(f'{path}: stored {w}x{h} with a display rotation: frames are {_describe_orientation(orientation)} '
                   f'to show them upright ({dw}x{dh}).')
    info = VideoInfo(path=path, fps=float(Fraction(rate)), num_frames=num_frames, height=dh, width=dw,
                     notes=tuple(notes))
    start = int(sorted_pts[0]) if sorted_pts is not None else 0
    return _Timeline(info, sorted_pts, start, step, len(pts), orientation, (w, h))


def video_info(path: str | os.PathLike) -> VideoInfo:
  """fps, frame count and size (upright) of the first video stream of `path`, as `iter_frames` yields its frames."""
  return _scan(os.fspath(path)).info


def iter_frames(path: str | os.PathLike, chunk_size: int = 64, report: DecodeReport | None = None
                ) -> Iterator[np.ndarray]:
  """Yields the frames of `path` in chunks (n <= chunk_size, H, W, 3) uint8, C-contiguous: bounded memory for long
  videos. Frames are upright (the stream's display matrix applied: phone videos), on a constant-rate time line of
  `video_info(path).num_frames` frames (a variable-rate stream is read at its median rate, see `_scan`), all of one
  size (a frame of another size is scaled to the first's). Frames that do not decode (damaged data mid-stream) are
  replaced by the frame before them and counted: `report` (and `decode_report(path)` after the pass) says how many.
  VideoError naming the file when no frame decodes at all."""
  path = os.fspath(path)
  if chunk_size < 1:
    raise VideoError(f'{path}: chunk_size must be >= 1, got {chunk_size}.')
  tl = _scan(path)
  n_total = tl.info.num_frames
  rep = report if report is not None else DecodeReport(path, n_total)
  rep.num_frames, rep.packets, rep.variable_rate = n_total, tl.packets, tl.step is not None
  width, height = tl.decode_size
  chunk: list[np.ndarray] = []
  state = {'next': 0, 'prev': None}

  def emit(image: np.ndarray, copies: int):
    for _ in range(copies):
      chunk.append(image)
      state['next'] += 1

  with _open(path) as container:
    stream = container.streams.video[0]
    stream.thread_type = 'AUTO'  # Frame-parallel decoding: the decoder's own threads.
    packets = container.demux(stream)
    while state['next'] < n_total:
      try:
        packet = next(packets)
      except StopIteration:
        break
      except av.error.FFmpegError as e:  # The file ends early or the container is damaged: keep what decoded.
        rep.errors += 1
        rep.first_error = rep.first_error or str(e)
        break
      try:
        frames = stream.decode(packet)
      except (av.error.FFmpegError, ValueError) as e:
        rep.errors += 1
        rep.first_error = rep.first_error or str(e)
        continue
      for frame in frames:
        rep.decoded += 1
        rep.damaged += bool(frame.is_corrupt)
        s = tl.slot(frame.pts)
        s = state['next'] if s is None else s
        if s < state['next'] or s >= n_total:
          rep.skipped += 1
          continue
        image = _apply_orientation(frame.to_ndarray(format='rgb24', width=width, height=height), tl.orientation)
        image = np.ascontiguousarray(image)
        gap = s - state['next']
        if gap:
          rep.repeated += gap
          rep.first_repeated = state['next'] if rep.first_repeated < 0 else rep.first_repeated
          emit(image if state['prev'] is None else state['prev'], gap)
        emit(image, 1)
        state['prev'] = image
        while len(chunk) >= chunk_size:
          yield np.stack(chunk[:chunk_size])
          del chunk[:chunk_size]
    if state['prev'] is None:
      raise VideoError(f'{path}: the video stream decodes to no frames (empty or corrupt)'
                       + (f': {rep.first_error}' if rep.first_error else '') + '.')
    gap = n_total - state['next']
    if gap:
      rep.repeated += gap
      rep.first_repeated = state['next'] if rep.first_repeated < 0 else rep.first_repeated
      emit(state['prev'], gap)
    while chunk:
      yield np.stack(chunk[:chunk_size])
      del chunk[:chunk_size]
  _LAST_REPORTS[os.path.abspath(path)] = rep


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
  """All frames (T, H, W, 3) uint8 and the fps of `path` (as `iter_frames` gives them)."""
  info = video_info(path)
  frames = np.concatenate(list(iter_frames(path)), axis=0)
  return frames, info.fps


# ----------------------------------------------------------------------------------------------------------------
# Still images.

MAX_IMAGE_SIDE = 4096  # Larger images are decoded (JPEG: at a reduced DCT scale) and resized to this long side.
_EXIF_ORIENTATION = 0x0112
_ALPHA_MODES = ('RGBA', 'LA', 'PA', 'RGBa', 'La')


def _to_rgb(im, path: str, notes: list[str]):
  """A PIL image of any mode -> mode 'RGB' (8 bits a channel)."""
  from PIL import Image
  mode = im.mode
  if mode.startswith('I;16') or mode in ('I', 'F'):
    a = np.asarray(im).astype(np.float64)
    top = float(a.max()) if a.size else 0.0
    if mode == 'F':  # Floats: [0, 1] or [0, 255].
      a = a * 255.0 if top <= 1.0 else a
    elif mode.startswith('I;16') or 255 < top <= 65535:  # 16-bit samples.
      a = a / 257.0
    elif top > 65535:  # 32-bit samples: their range.
      a = a * (255.0 / top)
    notes.append(f'{path}: {mode} image ({"16-bit" if mode.startswith("I;16") else "32-bit"} greyscale) read as 8 '
                 'bits.')
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), 'L').convert('RGB')
  if mode in _ALPHA_MODES or (mode in ('P', 'L', 'RGB') and 'transparency' in im.info):
    rgba = im.convert('RGBA')
    if rgba.getextrema()[3][0] < 255:
      notes.append(f'{path}: transparent pixels are shown over white.')
    white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert('RGB')
  if mode in ('CMYK', 'RGB') and im.info.get('icc_profile'):
    try:
      import io
      from PIL import ImageCms
      src = ImageCms.ImageCmsProfile(io.BytesIO(im.info['icc_profile']))
      out = ImageCms.profileToProfile(im, src, ImageCms.createProfile('sRGB'), outputMode='RGB')
      if out is not None:
        return out
    except Exception:  # noqa: BLE001 -- a profile lcms cannot use: the plain conversion below.
      notes.append(f'{path}: its colour profile cannot be applied; colours are converted without it.')
  if mode == 'RGB':
    return im
  try:
    return im.convert('RGB')
  except ValueError as e:
    raise VideoError(f'{path}: images of colour mode {mode} are not supported ({e}).') from e


def read_image(path: str | os.PathLike, notes: list[str] | None = None, max_side: int = MAX_IMAGE_SIDE
               ) -> np.ndarray:
  """An image file as (H, W, 3) uint8 RGB, upright and 8-bit whatever it was stored as; VideoError naming the file
  otherwise. EXIF orientation (phone photos) is applied; 16-bit / 32-bit greyscale is scaled to 8 bits (not
  clipped); transparency is shown over white; CMYK (and RGB with an ICC profile) go to sRGB through their profile
  when they have one; an image larger than `max_side` on its long side is resized to it (JPEG: decoded at a reduced
  scale first, so memory stays bounded); the first frame of a multi-frame file is used. What was done is appended
  to `notes` (one line each) when given."""
  import warnings
  from PIL import Image, ImageOps
  path = os.fspath(path)
  notes = [] if notes is None else notes
  _check_file(path)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      with Image.open(path) as im:
        w, h = im.size
        if im.format == 'JPEG' and max(w, h) > max_side:
          s = max_side / max(w, h)
          im.draft(None, (int(np.ceil(w * s)), int(np.ceil(h * s))))  # DCT scaling: 1/2, 1/4 or 1/8, >= the size.
        im.load()
        if getattr(im, 'n_frames', 1) > 1:
          notes.append(f'{path}: holds {im.n_frames} frames; the first is used.')
        orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
        upright = ImageOps.exif_transpose(im) if orientation not in (None, 1) else im
        if orientation not in (None, 1):
          notes.append(f'{path}: EXIF orientation {orientation} applied (shown upright).')
        rgb = _to_rgb(upright, path, notes)
        if max(rgb.size) > max_side:
          s = max_side / max(rgb.size)
          size = (max(1, round(rgb.size[0] * s)), max(1, round(rgb.size[1] * s)))
          rgb = rgb.resize(size, Image.LANCZOS)
        if max(w, h) > max_side:
          notes.append(f'{path}: {w}x{h} image reduced to {rgb.size[0]}x{rgb.size[1]} (long side at most {max_side}).')
        out = np.asarray(rgb, dtype=np.uint8)
  except VideoError:
    raise
  except Image.DecompressionBombError as e:
    raise VideoError(f'{path}: image too large to read safely: {e}') from e
  except MemoryError as e:
    raise VideoError(f'{path}: not enough memory to decode this image.') from e
  except Exception as e:  # noqa: BLE001 -- PIL raises OSError, SyntaxError, ValueError, struct.error... on bad files.
    raise VideoError(f'{path}: not a readable image file (corrupt or unknown format): {e}') from e
  if out.ndim != 3 or out.shape[2] != 3:
    raise VideoError(f'{path}: decodes to an array of shape {out.shape}, not an RGB image.')
  if out.shape[0] < 2 or out.shape[1] < 2:
    raise VideoError(f'{path}: image of size {out.shape[1]}x{out.shape[0]} is too small.')
  return np.ascontiguousarray(out)


def _atomic_target(path: str, suffix: str) -> str:
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-', suffix=suffix)
  os.close(fd)
  return tmp


class VideoWriter:
  """Streams frames (and optionally mono audio) into an .mp4, atomically: H.264 (yuv420p, crf) + AAC, written to a
  temporary file in the same folder and renamed to `path` by `close()`; an exception inside `with` removes it.

    with VideoWriter(out, fps, audio_rate=44100) as w:
      w.write(frames, audio)        # (n, H, W, 3) uint8 chunks; the audio samples that go with them (any length)

  Odd sizes are padded by one black row / column. Audio is interleaved with the video chunk by chunk (the muxer
  then buffers one chunk, not the whole video), in AAC frames of the encoder's frame size.
  """

  def __init__(self, path: str | os.PathLike, fps: float, crf: int = 18, audio_rate: int | None = None,
               audio_bitrate: int = 128_000):
    self.path = os.fspath(path)
    self.fps = float(fps)
    self.crf = int(crf)
    self.audio_rate = None if audio_rate is None else int(audio_rate)
    self.audio_bitrate = int(audio_bitrate)
    self.num_frames = 0
    self.num_samples = 0
    self._tmp = None
    self._out = None
    self._video = None
    self._audio = None
    self._pending = np.zeros(0, np.float32)

  def __enter__(self) -> 'VideoWriter':
    self._tmp = _atomic_target(self.path, '.mp4')
    self._out = av.open(self._tmp, mode='w', format='mp4')
    return self

  def _open_streams(self, height: int, width: int) -> None:
    self._video = self._out.add_stream('libx264', rate=Fraction(self.fps).limit_denominator(1001))
    self._video.width, self._video.height = width + width % 2, height + height % 2
    self._video.pix_fmt = 'yuv420p'
    self._video.options = {'crf': str(self.crf)}
    if self.audio_rate is not None:
      self._audio = self._out.add_stream('aac', rate=self.audio_rate)
      self._audio.layout = 'mono'
      self._audio.bit_rate = self.audio_bitrate

  def write(self, frames: np.ndarray, audio: np.ndarray | None = None) -> None:
    """Appends frames (n, H, W, 3) uint8 (every chunk the same size) and the mono float32 samples that follow."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
      raise VideoError(f'{self.path}: frames to write must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}.')
    if self._video is None:
      self._open_streams(frames.shape[1], frames.shape[2])
    pad_h, pad_w = self._video.height - frames.shape[1], self._video.width - frames.shape[2]
    if pad_h not in (0, 1) or pad_w not in (0, 1):
      raise VideoError(f'{self.path}: frames of size {frames.shape[2]}x{frames.shape[1]} after frames of '
                       f'{self._video.width}x{self._video.height}.')
    if pad_h or pad_w:
      frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    for image in frames:
      frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format='rgb24')
      frame.pts = self.num_frames
      for packet in self._video.encode(frame):
        self._out.mux(packet)
      self.num_frames += 1
    if audio is not None and len(audio):
      if self._audio is None:
        raise VideoError(f'{self.path}: audio given to a writer made without audio_rate.')
      self._write_audio(np.asarray(audio, np.float32), final=False)

  def _write_audio(self, samples: np.ndarray, final: bool) -> None:
    x = np.concatenate([self._pending, samples])
    size = self._audio.codec_context.frame_size or 1024
    n = len(x) if final else len(x) - len(x) % size
    for i in range(0, n, size):
      frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[None, i:min(i + size, n)]), format='fltp',
                                         layout='mono')
      frame.sample_rate = self.audio_rate
      frame.pts = self.num_samples
      self.num_samples += frame.samples
      for packet in self._audio.encode(frame):
        self._out.mux(packet)
    self._pending = x[n:]

  def close(self) -> None:
    """Flushes the encoders and renames the temporary file to `path`."""
    if self._video is None:
      raise VideoError(f'{self.path}: no frames were written.')
    for packet in self._video.encode():
      self._out.mux(packet)
    if self._audio is not None:
      self._write_audio(np.zeros(0, np.float32), final=True)
      for packet in self._audio.encode():
        self._out.mux(packet)
    self._out.close()
    self._out = None
    os.replace(self._tmp, self.path)

  def __exit__(self, exc_type, exc, tb) -> None:
    try:
      if exc_type is None:
        self.close()
    finally:
      if self._out is not None:
        self._out.close()
      if self._tmp and os.path.exists(self._tmp):
        os.remove(self._tmp)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, crf: int = 18) -> None:
  """Writes (T, H, W, 3) uint8 frames as H.264 .mp4, atomically. Odd sizes are padded by one black row/column."""
  path = os.fspath(path)
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0 or frames.dtype != np.uint8:
    raise VideoError(f'{path}: frames to write must be (T >= 1, H, W, 3) uint8, got {frames.shape} {frames.dtype}.')
  with VideoWriter(path, fps, crf) as writer:
    writer.write(frames)


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
  """Writes an (H, W, 3) uint8 image (format from the suffix, e.g. .png) atomically."""
  from PIL import Image
  path = os.fspath(path)
  suffix = os.path.splitext(path)[1] or '.png'
  tmp = _atomic_target(path, suffix)
  try:
    Image.fromarray(np.asarray(image, np.uint8)).save(tmp, format=Image.registered_extensions().get(suffix.lower()))
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
