"""Audio decoding, resampling and frame alignment (headgan_jax/audio/io.py)."""
import av
import numpy as np
import pytest
import soundfile as sf

from headgan_jax.audio import io as audio_io
from headgan_jax.errors import AudioError


def _write_video(path, fps=25, frames=5, with_audio=False, sample_rate=44100):
  """A tiny mpeg4 video, optionally with an AAC track holding a 440 Hz tone."""
  with av.open(str(path), 'w') as c:
    v = c.add_stream('mpeg4', rate=fps)
    v.width, v.height, v.pix_fmt = 32, 32, 'yuv420p'
    a = c.add_stream('aac', rate=sample_rate, layout='mono') if with_audio else None
    for i in range(frames):
      img = np.full((32, 32, 3), 10 * i, np.uint8)
      for p in v.encode(av.VideoFrame.from_ndarray(img, format='rgb24')):
        c.mux(p)
    for p in v.encode():
      c.mux(p)
    if a is not None:
      n = int(sample_rate * frames / fps)
      tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / sample_rate)).astype(np.float32)
      frame = av.AudioFrame.from_ndarray(tone[None], format='flt', layout='mono')
      frame.sample_rate = sample_rate
      for p in a.encode(frame):
        c.mux(p)
      for p in a.encode():
        c.mux(p)


def test_wav_any_rate_stereo_is_mono_and_resampled(tmp_path):
  sr = 22050
  t = np.arange(sr) / sr
  left = 0.5 * np.sin(2 * np.pi * 300 * t)
  stereo = np.stack([left, np.zeros_like(left)], axis=1)  # Right channel silent: mono = left / 2.
  path = tmp_path / 'tone.wav'
  sf.write(path, stereo, sr)
  x = audio_io.load_audio(path, 16000)
  assert x.dtype == np.float32 and x.ndim == 1
  assert abs(x.size - 16000) <= 2
  np.testing.assert_allclose(np.sqrt(np.mean(x[1000:-1000] ** 2)), 0.25 / np.sqrt(2), rtol=0.02)
  # Dominant frequency survives resampling.
  spec = np.abs(np.fft.rfft(x[:16000]))
  assert abs(np.argmax(spec) * 16000 / 16000 - 300) <= 2


def test_waveform_resample_and_channel_layouts():
  x = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
  both = np.stack([x, x], axis=1)
  np.testing.assert_allclose(audio_io.resample(both, 8000, 8000), x, atol=1e-7)
  np.testing.assert_allclose(audio_io.resample(both.T, 8000, 8000), x, atol=1e-7)
  assert audio_io.resample(x, 8000, 16000).shape == (16000,)
  with pytest.raises(AudioError, match='NaN'):
    audio_io.resample(np.array([0.0, np.nan, 1.0]), 8000, 8000)
  with pytest.raises(AudioError, match='no samples'):
    audio_io.resample(np.zeros(0), 8000, 8000)


@pytest.mark.parametrize('fps,frames', [(25, 10), (30, 150), (29.97, 7)])
def test_part_bounds_equal_parts_and_clip(fps, frames):
  sr = 16000
  b = audio_io.part_bounds(fps, frames, sr)
  assert b.shape == (frames + 1,) and b[0] == 0
  lengths = np.diff(b)
  assert lengths.max() - lengths.min() <= 1
  assert abs(b[-1] - frames * sr / fps) <= 0.5
  short = np.ones(100, np.float32)
  clipped = audio_io.clip_to_frames(short, fps, frames, sr)
  assert clipped.size == b[-1] and clipped[:100].sum() == 100 and clipped[100:].sum() == 0
  long = np.ones(b[-1] + 500, np.float32)
  assert audio_io.clip_to_frames(long, fps, frames, sr).size == b[-1]


def test_video_with_audio_timing_and_alignment(tmp_path):
  path = tmp_path / 'clip.mp4'
  _write_video(path, fps=25, frames=20, with_audio=True)
  timing = audio_io.video_timing(path)
  assert timing.fps == 25 and timing.num_frames == 20
  x = audio_io.load_audio(path, 16000)
  # 0.8 s of tone; the AAC priming delay is compensated, so the tone starts within a few ms of frame 0.
  assert abs(x.size - 12800) < 16000 * 0.05
  onset = np.argmax(np.abs(x) > 0.1)
  assert onset < 16000 * 0.03


def test_fixture_video(fixtures_dir):
  path = fixtures_dir / 'driving.mp4'
  timing = audio_io.video_timing(path)
  assert timing.fps == 30 and timing.num_frames == 150
  x = audio_io.load_audio(path, 16000)
  assert abs(x.size / 16000 - 5.0) < 0.1
  assert np.abs(x).max() > 0.1  # Speech, not silence.


def test_empty_file(tmp_path):
  path = tmp_path / 'empty.mp4'
  path.write_bytes(b'')
  with pytest.raises(AudioError, match='empty.mp4.*empty'):
    audio_io.load_audio(path, 16000)


def test_no_audio_stream(tmp_path):
  path = tmp_path / 'silent_video.mp4'
  _write_video(path)
  assert audio_io.video_timing(path).num_frames == 5
  with pytest.raises(AudioError, match='silent_video.mp4.*no audio stream'):
    audio_io.load_audio(path, 16000)


@pytest.mark.parametrize('header', [b'RIFF\x24\x00\x00\x00WAVEfmt ', b'\x00\x00\x00\x18ftypmp42'])
def test_corrupt_header(tmp_path, header):
  path = tmp_path / 'corrupt.bin'
  path.write_bytes(header + np.random.default_rng(0).bytes(300))
  with pytest.raises(AudioError, match='corrupt.bin.*corrupt'):
    audio_io.load_audio(path, 16000)


def test_truncated_fixture(tmp_path, fixtures_dir):
  path = tmp_path / 'truncated.mp4'
  path.write_bytes((fixtures_dir / 'driving.mp4').read_bytes()[:2000])
  with pytest.raises(AudioError, match='truncated.mp4'):
    audio_io.load_audio(path, 16000)


def test_missing_file(tmp_path):
  with pytest.raises(AudioError, match='nothing.wav.*not found'):
    audio_io.load_audio(tmp_path / 'nothing.wav', 16000)
