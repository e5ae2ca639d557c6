"""Video input with PyAV: whole clips or chunks of frames, fps and frame count; still images; video output.

Frames are RGB uint8 (T, H, W, 3), C-contiguous (decoders can hand out strided planes, which dlib and LiteRT reject).
Every failure to read raises `VideoError` naming the file (and the frame where it applies): missing or empty file,
corrupt or unknown header, no video stream, a stream that decodes to no frames, a decode error mid-stream.
`write_video` writes H.264 (yuv420p, even sizes) atomically: a temporary file in the same folder, then a rename.
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


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, crf: int = 18) -> None:
  """Writes (T, H, W, 3) uint8 frames as H.264 .mp4, atomically. Odd sizes are padded by one black row/column."""
  path = os.fspath(path)
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0 or frames.dtype != np.uint8:
    raise VideoError(f'{path}: frames to write must be (T >= 1, H, W, 3) uint8, got {frames.shape} {frames.dtype}.')
  pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
  if pad_h or pad_w:
    frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
  tmp = _atomic_target(path, '.mp4')
  try:
    with av.open(tmp, mode='w', format='mp4') as out:
      stream = out.add_stream('libx264', rate=Fraction(fps).limit_denominator(1001))
      stream.width, stream.height = frames.shape[2], frames.shape[1]
      stream.pix_fmt = 'yuv420p'
      stream.options = {'crf': str(crf)}
      for image in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format='rgb24')):
          out.mux(packet)
      for packet in stream.encode():
        out.mux(packet)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


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
