"""Video input with PyAV: whole clips or chunks of frames, fps and frame count; still images; video output.

Frames are RGB uint8 (T, H, W, 3), C-contiguous (decoders can hand out strided planes, which dlib and LiteRT reject).
Every failure to read raises `VideoError` naming the file (and the frame where it applies): missing or empty file,
corrupt or unknown header, no video stream, a stream that decodes to no frames, a decode error mid-stream.
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
  """What the header says: frames/s, frame count (counted by demuxing when the header has none), size."""
  path: str
  fps: float
  num_frames: int
  height: int
  width: int


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


def video_info(path: str | os.PathLike) -> VideoInfo:
  """fps, frame count and size of the first video stream of `path`."""
  path = os.fspath(path)
  with _open(path) as container:
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    if not rate or float(rate) <= 0:
      raise VideoError(f'{path}: the video stream has no frame rate.')
    num_frames = int(stream.frames or 0)
    if num_frames <= 0:
      try:
        num_frames = sum(1 for p in container.demux(stream) if p.size > 0)
      except av.error.FFmpegError as e:
        raise VideoError(f'{path}: cannot read the video stream: {e}') from e
    if num_frames <= 0:
      raise VideoError(f'{path}: the video stream has no frames.')
    return VideoInfo(path=path, fps=float(Fraction(rate)), num_frames=num_frames,
                     height=int(stream.codec_context.height), width=int(stream.codec_context.width))


def iter_frames(path: str | os.PathLike, chunk_size: int = 64) -> Iterator[np.ndarray]:
  """Yields the frames of `path` in chunks (n <= chunk_size, H, W, 3) uint8, C-contiguous: bounded memory for long
  videos. Raises VideoError naming the file and the frame on a decode error, and when no frame decodes at all."""
  path = os.fspath(path)
  if chunk_size < 1:
    raise VideoError(f'{path}: chunk_size must be >= 1, got {chunk_size}.')
  count = 0
  with _open(path) as container:
    stream = container.streams.video[0]
    stream.thread_type = 'AUTO'  # Frame-parallel decoding: the decoder's own threads.
    chunk: list[np.ndarray] = []
    try:
      for frame in container.decode(stream):
        chunk.append(np.ascontiguousarray(frame.to_ndarray(format='rgb24')))
        count += 1
        if len(chunk) == chunk_size:
          yield np.stack(chunk)
          chunk = []
    except (av.error.FFmpegError, ValueError) as e:
      raise VideoError(f'{path}: decoding failed at frame {count}: {e}') from e
    if chunk:
      yield np.stack(chunk)
  if count == 0:
    raise VideoError(f'{path}: the video stream decodes to no frames (empty or corrupt).')


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
  """All frames (T, H, W, 3) uint8 and the fps of `path`."""
  info = video_info(path)
  frames = np.concatenate(list(iter_frames(path)), axis=0)
  return frames, info.fps


def read_image(path: str | os.PathLike) -> np.ndarray:
  """An image file as (H, W, 3) uint8 RGB (alpha dropped, grey expanded); VideoError naming the file otherwise."""
  from PIL import Image, UnidentifiedImageError
  path = os.fspath(path)
  _check_file(path)
  try:
    with Image.open(path) as im:
      rgb = np.asarray(im.convert('RGB'))
  except (UnidentifiedImageError, OSError, ValueError) as e:
    raise VideoError(f'{path}: not a readable image file (corrupt or unknown format): {e}') from e
  if rgb.shape[0] < 2 or rgb.shape[1] < 2:
    raise VideoError(f'{path}: image of size {rgb.shape[1]}x{rgb.shape[0]} is too small.')
  return np.ascontiguousarray(rgb)


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
