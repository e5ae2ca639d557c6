"""Clips the dataset tests make from the real fixtures: short cuts (stream copy, with or without sound), a corrupt
file, a video without a face (noise) with espeak-ng speech, and the tiny VoxCeleb-layout tree built from them."""
from __future__ import annotations

import pathlib
from fractions import Fraction

import av
import numpy as np


def cut_clip(src: pathlib.Path, dst: pathlib.Path, seconds: float, audio: bool = True) -> pathlib.Path:
  """The first `seconds` of src (video and, when audio, sound) copied packet by packet (no re-encoding)."""
  dst.parent.mkdir(parents=True, exist_ok=True)
  with av.open(str(src)) as inp, av.open(str(dst), 'w', format='mp4') as out:
    streams = [inp.streams.video[0]] + ([inp.streams.audio[0]] if audio and inp.streams.audio else [])
    outs = {s.index: out.add_stream_from_template(s) for s in streams}
    for packet in inp.demux(streams):
      if packet.dts is None or packet.pts is None:
        continue
      if float(packet.pts * packet.time_base) >= seconds:
        continue
      packet.stream = outs[packet.stream.index]
      out.mux(packet)
  return dst


def write_clip(dst: pathlib.Path, frames: np.ndarray, fps: float, speech: np.ndarray | None = None,
               rate: int = 22050) -> pathlib.Path:
  """frames (T, H, W, 3) uint8 as H.264, plus `speech` (mono float32 at `rate`) as AAC when given."""
  dst.parent.mkdir(parents=True, exist_ok=True)
  with av.open(str(dst), 'w', format='mp4') as out:
    v = out.add_stream('libx264', rate=Fraction(fps).limit_denominator(1001))
    v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], 'yuv420p'
    a = None
    if speech is not None:
      a = out.add_stream('aac', rate=rate)
      a.layout = 'mono'
    for image in frames:
      for p in v.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format='rgb24')):
        out.mux(p)
    for p in v.encode():
      out.mux(p)
    if a is not None:
      n = int(len(frames) / fps * rate)
      x = np.zeros(n, np.float32)
      x[:min(n, len(speech))] = speech[:n]
      for i in range(0, n, 1024):
        frame = av.AudioFrame.from_ndarray(x[None, i:i + 1024], format='fltp', layout='mono')
        frame.sample_rate = rate
        for p in a.encode(frame):
          out.mux(p)
      for p in a.encode():
        out.mux(p)
  return dst


def voxceleb_tree(root: pathlib.Path, fixtures: pathlib.Path, speech: tuple[np.ndarray, int],
                  seconds: float = 0.5) -> dict[str, str]:
  """Two identities, four clips: id10001 (train) has a good clip and a corrupt one; id10002 (VoxCeleb1's test
  identities) a clip without a face (noise, with speech) and one without sound. Returns clip id -> expected status."""
  cut_clip(fixtures / 'driving.mp4', root / 'id10001' / 'vidA' / '00001.mp4', seconds)
  corrupt = root / 'id10001' / 'vidA' / '00002.mp4'
  corrupt.write_bytes(b'\x00\x00\x00\x18ftypmp42' + np.random.default_rng(0).bytes(3000))
  rng = np.random.default_rng(1)
  noise = rng.integers(0, 256, (12, 96, 96, 3), dtype=np.uint8)
  write_clip(root / 'id10002' / 'vidB' / '00001.mp4', noise, 25.0, speech[0], speech[1])
  cut_clip(fixtures / 'demo' / 'talk-05.mp4', root / 'id10002' / 'vidB' / '00002.mp4', seconds, audio=False)
  return {'id10001/vidA/00001': 'ok', 'id10001/vidA/00002': 'corrupt', 'id10002/vidB/00001': 'no_face',
          'id10002/vidB/00002': 'no_audio'}
