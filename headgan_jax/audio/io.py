"""Audio input: decode the sound track of a video or audio file and align it to the video's frames (Section 3.2).

The paper splits the audio signal into T parts a_1:T, part a_t aligned with frame y_t. Here part t covers the time
[t / fps, (t + 1) / fps) measured from the first video frame, so every part lasts exactly 1 / fps; its samples are
`part_bounds(...)[t]:part_bounds(...)[t + 1]` after resampling to `config.audio.sample_rate`.
Audio that ends before the last frame is padded with silence, audio that runs on after it is cut (`clip_to_frames`).

Every failure to read audio raises `AudioError` naming the file: missing or empty file, corrupt header, no audio
stream, a stream that decodes to no samples. A file with several audio streams gives the default one's (said in the
notes); packets damaged mid-stream become silence of their length (counted in the notes).
"""
from __future__ import annotations

import dataclasses
import os
from fractions import Fraction

import av
import librosa
import numpy as np

from headgan_jax.errors import AudioError


@dataclasses.dataclass(frozen=True)
class VideoTiming:
  """Frame rate and frame count of a video stream."""
  fps: float
  num_frames: int


def _open(path: str) -> av.container.InputContainer:
  path = os.fspath(path)
  if not os.path.exists(path):
    raise AudioError(f'{path}: file not found.')
  if os.path.getsize(path) == 0:
    raise AudioError(f'{path}: the file is empty (0 bytes).')
  try:
    return av.open(path)
  except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as e:  # PyAV's errors are OSErrors too.
    raise AudioError(f'{path}: not a readable audio or video file (corrupt or unknown header): {e}') from e


def video_timing(path: str) -> VideoTiming:
  """fps and number of frames of the first video stream of `path` (counts packets when the header has no count)."""
  with _open(path) as container:
    if not container.streams.video:
      raise AudioError(f'{path}: has no video stream, so fps and frame count must be given.')
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    if not rate or float(rate) <= 0:
      raise AudioError(f'{path}: the video stream has no frame rate.')
    num_frames = int(stream.frames or 0)
    if num_frames <= 0:
      try:
        num_frames = sum(1 for p in container.demux(stream) if p.size > 0)
      except av.error.FFmpegError as e:
        raise AudioError(f'{path}: cannot read the video stream: {e}') from e
    return VideoTiming(fps=float(Fraction(rate)), num_frames=num_frames)


def choose_audio_stream(container):
  """The audio stream used: the one marked default when there are several (else the first)."""
  streams = list(container.streams.audio)
  for stream in streams:
    if stream.disposition & av.stream.Disposition.default:
      return stream
  return streams[0]


def _describe_stream(stream) -> str:
  ctx = stream.codec_context
  lang = (stream.metadata or {}).get('language') or (stream.metadata or {}).get('LANGUAGE')
  title = (stream.metadata or {}).get('title')
  bits = [f'stream #{stream.index}', ctx.name, f'{ctx.sample_rate} Hz', f'{ctx.channels} channel(s)']
  bits += [f'language {lang}'] if lang and lang != 'und' else []
  bits += [f'"{title}"'] if title else []
  return ', '.join(bits)


def load_audio(path: str, sample_rate: int, notes: list[str] | None = None) -> np.ndarray:
  """Decodes the audio stream of `path` (the default one when there are several: said in `notes`), downmixed to mono
  (the mean of the channels) and resampled to `sample_rate` (any source rate: 8 to 96 kHz and beyond).

  Returns float32 samples (N,) in [-1, 1] whose sample 0 is at the time of the first video frame when the file has a
  video stream (the audio's start offset, e.g. an AAC priming delay, is compensated) and at the audio start otherwise.
  Packets that do not decode (damaged data) become silence of their length, so what follows stays in step; their
  count is said in `notes`. AudioError naming the file when nothing decodes.
  """
  path = os.fspath(path)
  notes = [] if notes is None else notes
  with _open(path) as container:
    if not container.streams.audio:
      raise AudioError(f'{path}: has no audio stream.')
    stream = choose_audio_stream(container)
    if len(container.streams.audio) > 1:
      others = '; '.join(_describe_stream(s) for s in container.streams.audio if s is not stream)
      notes.append(f'{path}: has {len(container.streams.audio)} audio streams: the sound is taken from '
                   f'{_describe_stream(stream)} (the {"default" if stream.disposition & av.stream.Disposition.default else "first"}'
                   f' one), not from: {others}.')
    # Planar float at the target rate in the source layout; channels are averaged here (ffmpeg's own downmix
    # scales by -3 dB instead of taking the mean).
    resampler = av.AudioResampler(format='fltp', rate=int(sample_rate))
    chunks, count, bad, first_error, t0 = [], 0, 0, '', None
    tb = stream.time_base

    def add(frames):
      nonlocal count
      for out in frames:
        x = out.to_ndarray().mean(axis=0)
        chunks.append(x)
        count += len(x)

    packets = container.demux(stream)
    while True:
      try:
        packet = next(packets)
      except StopIteration:
        break
      except av.error.FFmpegError as e:  # The container breaks off: keep what decoded.
        bad += 1
        first_error = first_error or str(e)
        break
      try:
        frames = stream.decode(packet)
      except (av.error.FFmpegError, ValueError) as e:
        bad += 1
        first_error = first_error or str(e)
        continue
      for frame in frames:
        if frame.pts is not None and tb is not None:
          t = float(frame.pts * tb)
          t0 = t if t0 is None else t0
          gap = int(round((t - t0) * sample_rate)) - count
          if gap > sample_rate // 50 and chunks:  # A hole of > 20 ms (packets lost): silence, to stay in step.
            chunks.append(np.zeros(gap, np.float32))
            count += gap
        add(resampler.resample(frame))
    try:
      add(resampler.resample(None))
    except (av.error.FFmpegError, ValueError):
      pass
    if bad:
      notes.append(f'{path}: {bad} audio packet(s) could not be decoded ({first_error}); their time is silent.')
    offset = _start_offset_s(container, stream)
  # One copy at a time: a 10-minute track at 44.1 kHz is 106 MB of float32.
  samples = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
  chunks.clear()
  if samples.size == 0:
    raise AudioError(f'{path}: the audio stream holds no samples' + (f' that decode ({first_error})' if bad else '')
                     + '.')
  if not np.all(np.isfinite(samples)):
    raise AudioError(f'{path}: the audio stream decodes to NaN or infinite samples.')
  shift = int(round(offset * sample_rate))
  if shift > 0:  # Audio starts after the first frame: silence until it does.
    samples = np.pad(samples, (shift, 0))
  elif shift < 0:
    samples = samples[-shift:]
  return samples


def _start_offset_s(container, audio_stream) -> float:
  """Start time of the audio stream relative to the first video stream, in seconds (0 when unknown)."""
  if not container.streams.video or audio_stream.start_time is None:
    return 0.0
  video = container.streams.video[0]
  if video.start_time is None:
    return 0.0
  return float(audio_stream.start_time * audio_stream.time_base - video.start_time * video.time_base)


def resample(waveform: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
  """Mono float32 waveform at `target_rate`; (N, C) or (C, N) multi-channel input is averaged to mono first."""
  x = np.asarray(waveform, dtype=np.float32)
  if x.ndim == 2:
    # Channels are the short axis: (N, C) from soundfile, (C, N) from librosa.
    x = x.mean(axis=1 if x.shape[1] < x.shape[0] else 0)
  if x.ndim != 1:
    raise AudioError(f'waveform: expected shape (N,) or (N, channels), got {np.shape(waveform)}.')
  if x.size == 0:
    raise AudioError('waveform: has no samples.')
  if not np.all(np.isfinite(x)):
    raise AudioError('waveform: holds NaN or infinite samples.')
  if int(source_rate) != int(target_rate):
    x = librosa.resample(x, orig_sr=int(source_rate), target_sr=int(target_rate), res_type='soxr_hq')
  return x.astype(np.float32)


def part_bounds(fps: float, num_frames: int, sample_rate: int) -> np.ndarray:
  """Sample index where each part a_t starts, plus the end of the last one: (T + 1,) int64.

  Parts have equal duration 1 / fps; boundaries are rounded to the nearest sample, so part lengths differ by at most
  one sample and never drift over a long clip.
  """
  return np.round(np.arange(num_frames + 1) * (sample_rate / fps)).astype(np.int64)


def clip_to_frames(waveform: np.ndarray, fps: float, num_frames: int, sample_rate: int) -> np.ndarray:
  """The samples of parts a_1:T: cut after the last frame, zero-padded when the audio ends earlier."""
  n = int(part_bounds(fps, num_frames, sample_rate)[-1])
  x = np.asarray(waveform, np.float32)[:n]
  return np.pad(x, (0, n - x.size))
