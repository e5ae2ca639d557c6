"""Driving clips the reenactment tests make from the real fixtures, and reading an mp4 back."""
from __future__ import annotations

import pathlib

import av
import numpy as np
from PIL import Image

import dataset_helpers


def small_driving(fixtures: pathlib.Path, dst: pathlib.Path, fps: float = 5.0, size: int = 128, loops: int = 1,
                  black: tuple[int, ...] = (), audio: bool = True) -> pathlib.Path:
  """driving.mp4 (5 s) at `fps` and size x size, looped `loops` times (sound looped with it), frames `black` made
  black (no face); written with AAC sound unless audio is False."""
  from headgan_jax.audio import io as audio_io
  from headgan_jax.tracking import video as video_lib
  frames, src_fps = video_lib.read_video(fixtures / 'driving.mp4')
  step = int(round(src_fps / fps))
  frames = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in frames[::step]])
  frames = np.concatenate([frames] * loops)
  for i in black:
    frames[i] = 0
  speech = None
  if audio:
    wave = audio_io.load_audio(str(fixtures / 'driving.mp4'), 16000)
    wave = audio_io.clip_to_frames(wave, fps, len(frames) // loops, 16000)
    speech = np.concatenate([wave] * loops)
  return dataset_helpers.write_clip(dst, frames, fps, speech, 16000)


def probe(path) -> dict:
  """Frame count (decoded), fps, frame size, and the audio stream's duration and decoded samples (None if none)."""
  with av.open(str(path)) as c:
    v = c.streams.video[0]
    out = dict(fps=float(v.average_rate), width=v.codec_context.width, height=v.codec_context.height,
               video_seconds=float(v.duration * v.time_base) if v.duration else None)
    out['frames'] = sum(1 for _ in c.decode(v))
  with av.open(str(path)) as c:
    if not c.streams.audio:
      out.update(audio_seconds=None, audio=None, audio_rate=None)
      return out
    a = c.streams.audio[0]
    out['audio_rate'] = a.rate
    out['audio_seconds'] = float(a.duration * a.time_base)
    samples = np.concatenate([f.to_ndarray().mean(0) for f in c.decode(a)])
    out['audio'] = samples[:int(round(out['audio_seconds'] * a.rate))]  # Decoded AAC carries padding at the end.
  return out
