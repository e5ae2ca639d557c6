"""Audio timing: config.audio.lowlevel_offset / chars_offset move the streams exactly as documented
(headgan_jax/audio/features.py), and the lag measurement (headgan_jax/audio/timing.py, bench/audio_lag.py) on a real
clip with speech."""
import ml_collections
import numpy as np
import pytest

from configs import paper
from headgan_jax.audio import asr
from headgan_jax.audio import features
from headgan_jax.audio import io as audio_io
from headgan_jax.audio import lowlevel
from headgan_jax.audio import timing
from headgan_jax.tracking import facemesh as fm
from headgan_jax.tracking import track
from headgan_jax.tracking import video as video_lib
from headgan_jax.errors import ConfigError

L = 4
SR, FPS = 16000, 25
PART = SR // FPS  # 640 samples per part.
ENERGY = lowlevel.LOWLEVEL_NAMES.index('mean_energy')


def _config(low: int, chars: int):
  c = paper.get_config()
  c.audio.lowlevel_offset, c.audio.chars_offset = low, chars
  return c


class _FixedChars:
  """An AsrBackend that returns a given per-part stream (so the tests time the windows, not a recogniser)."""

  def __init__(self, parts: np.ndarray):
    self.parts = parts

  def part_chars(self, waveform, sample_rate, fps, num_frames):
    assert len(self.parts) == num_frames
    return self.parts


def _click(num_frames: int, part: int) -> np.ndarray:
  x = 1e-3 * np.random.default_rng(0).standard_normal(num_frames * PART)
  x[part * PART + 300:part * PART + 340] += 1.0
  return x


def _loud(h_energy: np.ndarray) -> np.ndarray:
  return np.flatnonzero(h_energy > 10 * np.median(h_energy))


@pytest.mark.parametrize('offset', [0, 4, 5, -3])
def test_lowlevel_click_lands_where_documented(offset):
  """A click in part 10 shows in exactly the frames t whose window t-L+o .. t+L-1+o holds part 10."""
  h = lowlevel.lowlevel_features(_click(25, 10), SR, FPS, 25, L, offset=offset)
  np.testing.assert_array_equal(_loud(h[:, ENERGY]), np.arange(10 - L + 1 - offset, 10 + L + 1 - offset))


@pytest.mark.parametrize('offset', [0, 4, 5])
def test_lowlevel_windows_past_the_end_stay_full(offset):
  """Reflect padding as before: a steady tone keeps its energy (1/2 after peak normalisation) in every frame, the
  last ones included, whose windows reach offset + L - 1 parts past the clip."""
  t = np.arange(20 * PART) / SR
  h = lowlevel.lowlevel_features(0.1 * np.sin(2 * np.pi * 1000 * t), SR, FPS, 20, L, offset=offset)
  np.testing.assert_allclose(h[:, ENERGY], 0.5, rtol=0.01)


def test_lowlevel_offset_is_a_shift_of_frames():
  """Frame t at offset o is frame t + o at offset 0 (frame 0 aside: its first short-term window's delta is 0)."""
  x = np.random.default_rng(1).standard_normal(30 * PART) * np.repeat(np.random.default_rng(2).random(30), PART)
  h0 = lowlevel.lowlevel_features(x, SR, FPS, 30, L)
  for o in (4, 5):
    h = lowlevel.lowlevel_features(x, SR, FPS, 30, L, offset=o)
    np.testing.assert_allclose(h[1:30 - o], h0[1 + o:], rtol=1e-4, atol=1e-5)


def _letters_at(windows: np.ndarray, num_frames: int) -> np.ndarray:
  return windows.reshape(num_frames, 2 * L, 27).argmax(-1)


@pytest.mark.parametrize('offset', [0, 4, 5])
def test_letter_lands_where_documented(offset):
  """Letter 'a' in part 10: after shifting by c it sits at part 10 - c, which frame t's window (t-L .. t+L-1)
  holds at index 10 - c - t + L."""
  parts = np.eye(27, dtype=np.float32)[np.full(20, asr.BLANK)]
  parts[10] = np.eye(27)[0]
  got = _letters_at(features.character_windows(parts, L, offset), 20)
  expected = np.full((20, 2 * L), asr.BLANK)
  for t in range(20):
    i = 10 - offset - t + L
    if 0 <= i < 2 * L:
      expected[t, i] = 0
  np.testing.assert_array_equal(got, expected)
  np.testing.assert_array_equal(features.shift_parts(parts, offset).argmax(-1) == 0, np.arange(20) == 10 - offset)


def test_letters_shift_then_window_blank_at_both_ends():
  """Shift first, then window (the authors' order): a letter of part 2 shifted by 5 leaves the clip (it is not seen
  by frame 0's window either); the last 5 shifted parts are BLANK; parts before frame 0 are BLANK."""
  parts = np.eye(27, dtype=np.float32)[np.arange(20) % 26]  # Part n holds letter n.
  shifted = features.shift_parts(parts, 5).argmax(-1)
  np.testing.assert_array_equal(shifted, np.r_[np.arange(5, 20), np.full(5, asr.BLANK)])
  w = _letters_at(features.character_windows(parts, L, 5), 20)
  np.testing.assert_array_equal(w[0], [asr.BLANK] * L + [5, 6, 7, 8])
  np.testing.assert_array_equal(w[12], [13, 14, 15, 16, 17, 18, 19, asr.BLANK])
  np.testing.assert_array_equal(w[19], [asr.BLANK] * 2 * L)  # Shifted parts 15 .. 22: past the clip.
  assert not np.isin([0, 1, 2, 3, 4], w).any()
  np.testing.assert_array_equal(features.shift_parts(parts, -2).argmax(-1), np.r_[[asr.BLANK] * 2, np.arange(18)])


def test_audio_features_reads_both_offsets():
  """Through audio_features: the click's energy and the letter move by the configured offsets, independently."""
  parts = np.eye(27, dtype=np.float32)[np.full(25, asr.BLANK)]
  parts[10] = np.eye(27)[0]
  x = _click(25, 10).astype(np.float32)
  for low, chars in ((0, 0), (4, 5), (2, 4)):
    h = features.audio_features(x, FPS, 25, _config(low, chars), sample_rate=SR, backend=_FixedChars(parts))
    np.testing.assert_array_equal(_loud(h[:, ENERGY]), np.arange(7 - low, 15 - low))
    frames_with_a = np.flatnonzero((_letters_at(h[:, 84:], 25) == 0).any(-1))
    np.testing.assert_array_equal(frames_with_a, np.arange(7 - chars, 15 - chars))


def test_offsets_must_be_whole_frames():
  assert features.offsets(_config(2, 4)) == (2, 4)
  for bad in (1.5, True):
    c = ml_collections.ConfigDict({'audio': {'lowlevel_offset': 2, 'chars_offset': bad}})
    with pytest.raises(ConfigError, match='chars_offset'):
      features.offsets(c)


def test_lagged_pearson_sign():
  """lag k pairs mouth[t] with audio[t + k]: an audio that trails the mouth by 3 frames peaks at +3."""
  rng = np.random.default_rng(0)
  mouth = rng.standard_normal(200)
  audio = np.r_[np.zeros(3), mouth[:-3]] + 0.1 * rng.standard_normal(200)
  lags = np.arange(-10, 11)
  r = timing.lagged_pearson(mouth, audio, lags)
  assert timing.peak_lag(lags, r) == 3 and r[lags == 3][0] > 0.99
  mouth[5] = np.nan  # Frames without a face are left out.
  assert np.isfinite(timing.lagged_pearson(mouth, audio, lags)).all()


# The real clip: driving.mp4 (150 frames, 30 fps, speech throughout).

@pytest.fixture(scope='module')
def driving(fixtures_dir):
  """(mouth opening (T,), mono 16 kHz waveform cut to the frames, fps, per-part characters (T, 27))."""
  if fm._missing_files(fm.default_models_dir()):
    pytest.skip('MediaPipe model files not fetched (scripts/setup.sh)')
  config = paper.get_config()
  path = fixtures_dir / 'driving.mp4'
  frames, fps = video_lib.read_video(path)
  mesh = fm.FaceMesh(fm.FaceMeshSettings.from_config(config))
  det = mesh.detect(frames)
  assert (det.count > 0).all()
  use = track.fill_missing(det.count > 0)
  points, _ = mesh.landmarks(frames, det.boxes[use, 0], det.keypoints[use, 0],
                             refine=bool(config.track.refine_landmarks))
  t = len(frames)
  x = audio_io.clip_to_frames(audio_io.load_audio(str(path), SR), fps, t, SR)
  return timing.mouth_opening(points), x, fps, asr.PocketSphinxBackend().part_chars(x, SR, fps, t)


def test_real_clip_offsets_shift_the_real_streams(driving):
  """On real speech the configured offsets give frame t the zero-offset streams of frame t + offset, so the
  correlation with the mouth that the measurement found at lag k is what frame t now gets at lag 0."""
  mouth, x, fps, chars = driving
  t = len(mouth)
  low, char_off = features.offsets(paper.get_config())
  h0 = features.audio_features(x, fps, t, _config(0, 0), backend=_FixedChars(chars))
  h = features.audio_features(x, fps, t, paper.get_config(), backend=_FixedChars(chars))
  np.testing.assert_allclose(h[1:t - low, :84], h0[1 + low:, :84], rtol=1e-4, atol=1e-5)
  inner = np.arange(L, t - char_off - L + 1)  # Windows wholly inside the clip before and after the shift.
  np.testing.assert_array_equal(h[inner, 84:], h0[inner + char_off, 84:])
  lags = np.arange(-3, 4)
  r0 = timing.lagged_pearson(mouth, h0[:, ENERGY], lags + low)
  r = timing.lagged_pearson(mouth, h[:, ENERGY], lags)
  np.testing.assert_allclose(r[2:-2], r0[2:-2], atol=0.02)  # Only the clip's end frames differ.


def test_real_clip_lag_measurement(driving):
  """The measurement on driving.mp4: the mouth opening follows the speech energy, with a clear peak. This clip's
  sound trails its picture by about 6 frames (200 ms; peak r ~0.45 at +6 vs ~0.06 at 0): the lag of one clip is
  dominated by its own audio-video sync (per-clip peaks over the 36 fixture clips spread over -10 .. +10), which is
  why the configured offsets come from the mean curve over all of them (bench/audio_lag.py), not from one clip."""
  mouth, x, fps, chars = driving
  lags = np.arange(-10, 11)
  r = timing.lagged_pearson(mouth, timing.part_rms(x, SR, fps, len(mouth)), lags)
  k = timing.peak_lag(lags, r)
  assert 5 <= k <= 7 and r.max() >= 0.35, (k, r.round(2))
  assert r[lags == 0][0] < r.max() - 0.2
  letters = timing.letter_presence(chars)
  assert 0.3 < letters.mean() < 1.0  # Speech with pauses: a stream with something to correlate.
