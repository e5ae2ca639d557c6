"""The 300-d per-frame audio vector h_t^(a) (headgan_jax/audio/features.py, lowlevel.py, stats.py)."""
import os

import numpy as np
import pytest
import soundfile as sf

from configs import paper
from headgan_jax.audio import asr
from headgan_jax.audio import features
from headgan_jax.audio import io as audio_io
from headgan_jax.audio import lowlevel
from headgan_jax.audio import stats as stats_lib
from headgan_jax.errors import AudioError, ConfigError

L = 4


@pytest.fixture(scope='module')
def config():
  return paper.get_config()


@pytest.fixture(scope='module')
def backend():
  return asr.PocketSphinxBackend()


@pytest.fixture(scope='module')
def speech(make_speech):
  return make_speech('the quick brown fox')


@pytest.mark.parametrize('fps', [25, 30])
def test_speech_shape_and_content(speech, config, backend, fps):
  x, sr = speech  # 22.05 kHz, resampled to 16 kHz inside.
  num_frames = int(len(x) / sr * fps) + 5  # The video runs a little past the audio.
  h = features.audio_features(x, fps, num_frames, config, sample_rate=sr, backend=backend)
  assert h.shape == (num_frames, 300) and h.dtype == np.float32
  assert np.all(np.isfinite(h))
  chars = h[:, 84:].reshape(num_frames, 2 * L, 27)
  np.testing.assert_array_equal(chars.sum(-1), 1)  # One class per part.
  centre = chars[:, L].argmax(-1)  # Index L of the window: part t + config.audio.chars_offset.
  assert np.sum(centre != asr.BLANK) >= 5
  np.testing.assert_array_equal(centre[-5:], asr.BLANK)  # Parts after the audio ends are silence.
  # Low-level part: energy follows speech and silence.
  energy = h[:, 1]
  assert energy.max() > 10 * energy[-1]


def test_silence(config, backend):
  h = features.audio_features(np.zeros(16000, np.float32), 25, 25, config, backend=backend)
  assert h.shape == (25, 300) and np.all(np.isfinite(h))
  chars = h[:, 84:].reshape(25, 2 * L, 27)
  np.testing.assert_array_equal(chars.argmax(-1), asr.BLANK)
  np.testing.assert_array_equal(h[:, :3], 0)  # zcr, energy, energy entropy of silence.


@pytest.mark.parametrize('fps', [25, 30])
def test_pure_tone_lowlevel(fps):
  sr, f, num_frames = 16000, 1000.0, 20
  t = np.arange(int(sr * num_frames / fps)) / sr
  x = 0.1 * np.sin(2 * np.pi * f * t)  # Peak-normalised inside: energy of a unit sine = 1/2.
  h = lowlevel.lowlevel_features(x, sr, fps, num_frames, L)
  assert h.shape == (num_frames, 84) and h.dtype == np.float32
  idx = {n: i for i, n in enumerate(lowlevel.LOWLEVEL_NAMES)}
  np.testing.assert_allclose(h[:, idx['mean_energy']], 0.5, rtol=0.01)
  np.testing.assert_allclose(h[:, idx['mean_zcr']], 2 * f / sr, rtol=0.02)
  bin_hz = sr / round(0.5 * sr / fps)  # Short-term window W: bins are sr / W apart.
  np.testing.assert_allclose(h[:, idx['mean_spectral_rolloff']] * sr / 2, f, atol=bin_hz)
  assert np.all(h[:, idx['std_energy']] < 0.01)  # A steady tone.
  if fps == 25:  # 1 kHz is on a bin of the 320-sample window: no leakage, centroid within a bin (pyAudioAnalysis
    # puts bin k at (k + 1) sr / W).
    centroid = h[:, idx['mean_spectral_centroid']] * sr / 2
    np.testing.assert_allclose(centroid[L:-L], f + bin_hz, atol=1.0)  # Frames away from the padded ends.
    np.testing.assert_allclose(centroid, f, atol=1.5 * bin_hz)
    assert np.all(h[L:-L, idx['mean_spectral_spread']] * sr / 2 < 1.0)  # One line: no spread.


def test_character_windows_order():
  parts = np.eye(27, dtype=np.float32)[np.arange(6)]  # Part t holds letter t.
  w = features.character_windows(parts, 2).reshape(6, 4, 27).argmax(-1)
  blank = asr.BLANK
  np.testing.assert_array_equal(w[0], [blank, blank, 0, 1])  # Parts t-2, t-1, t, t+1.
  np.testing.assert_array_equal(w[3], [1, 2, 3, 4])
  np.testing.assert_array_equal(w[5], [3, 4, 5, blank])


def test_lowlevel_window_is_centred():
  """A click in part 10 shows in the windows of frames 7 .. 14 (parts t-4 .. t+3) and nowhere else."""
  sr, fps, num_frames = 16000, 25, 25
  rng = np.random.default_rng(0)
  x = 1e-3 * rng.standard_normal(sr)
  x[10 * 640 + 300:10 * 640 + 340] += 1.0
  h = lowlevel.lowlevel_features(x, sr, fps, num_frames, L)
  loud = h[:, 1] > 10 * np.median(h[:, 1])
  np.testing.assert_array_equal(np.nonzero(loud)[0], np.arange(7, 15))


def test_fixture_clip(fixtures_dir, config, backend):
  h = features.audio_features(fixtures_dir / 'driving.mp4', None, None, config, backend=backend)
  assert h.shape == (150, 300) and h.dtype == np.float32
  assert np.all(np.isfinite(h))
  centre = h[:, 84:].reshape(150, 2 * L, 27)[:, L].argmax(-1)
  assert np.sum(centre != asr.BLANK) >= 30  # Speech through most of the clip.
  assert len(set(centre.tolist()) - {asr.BLANK}) >= 8  # Many different letters.


def test_config_checks(config):
  c = paper.get_config()
  c.audio.window_half = 3
  with pytest.raises(ConfigError, match='audio_dim'):
    features.feature_dim(c)
  c.model.audio_dim = 84 + 6 * 27
  assert features.feature_dim(c) == 246
  with pytest.raises(AudioError, match='fps'):
    features.audio_features(np.zeros(100), 0, 10, config)
  with pytest.raises(AudioError, match='fps and num_frames'):
    features.audio_features(np.zeros(100), None, None, config)


def test_bad_file_names_the_file(tmp_path, config):
  path = tmp_path / 'broken.mp4'
  path.write_bytes(b'\x00\x00\x00\x18ftypmp42' + b'\x01' * 100)
  with pytest.raises(AudioError, match='broken.mp4'):
    features.audio_features(path, 25, 10, config)


def test_stats_roundtrip_and_normalise(tmp_path):
  rng = np.random.default_rng(0)
  clips = [rng.normal(3.0, 2.0, (n, 300)).astype(np.float32) for n in (40, 7, 100)]
  clips[1][:, 5] = np.nan
  with pytest.raises(AudioError, match='clip 1'):
    stats_lib.compute_stats(clips)
  clips[1][:, 5] = 1.0
  for c in clips:
    c[:, 299] = 1.0  # A constant dimension (a letter never heard).
  s = stats_lib.compute_stats(iter(clips))
  allx = np.concatenate(clips).astype(np.float64)
  np.testing.assert_allclose(s.mean, allx.mean(0), rtol=1e-10)
  np.testing.assert_allclose(s.std, allx.std(0), rtol=1e-8, atol=1e-12)
  assert s.count == 147
  path = tmp_path / 'sub' / 'audio_stats.npz'
  stats_lib.save_stats(s, path)
  assert os.listdir(path.parent) == ['audio_stats.npz']  # No temp file left behind.
  loaded = stats_lib.load_stats(path)
  np.testing.assert_array_equal(loaded.mean, s.mean)
  np.testing.assert_array_equal(loaded.std, s.std)
  z = stats_lib.normalise(allx, loaded, 'all')
  assert z.dtype == np.float32 and np.all(np.isfinite(z))
  np.testing.assert_allclose(z[:, :299].mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(z[:, :299].std(0), 1, rtol=1e-5)
  np.testing.assert_array_equal(z[:, 299], 0)
  with pytest.raises(AudioError, match='dimensions'):
    stats_lib.normalise(np.zeros((2, 84)), loaded)


def test_standardise_only_the_lowlevel_values():
  """Default: the 84 low-level values standardised, the 216 one-hot characters fed as 0/1 (a rare letter would
  otherwise become ~30); 'none' feeds everything raw, as the authors."""
  rng = np.random.default_rng(1)
  n = 2000
  low = rng.normal(5.0, 3.0, (n, 84))
  chars = np.zeros((n, 216))
  chars[np.arange(n), rng.choice(216, n, p=np.r_[0.001, np.full(215, 0.999 / 215)])] = 1
  x = np.concatenate([low, chars], axis=1)
  stats = stats_lib.compute_stats([x])
  assert np.abs(stats_lib.normalise(x, stats, 'all')[:, 84:]).max() > 20  # Why not 'all'.
  z = stats_lib.normalise(x, stats)
  np.testing.assert_allclose(z[:, :84].mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(z[:, :84].std(0), 1, rtol=1e-4)
  np.testing.assert_array_equal(z[:, 84:], chars)
  np.testing.assert_array_equal(stats_lib.normalise(x, None, 'none'), x.astype(np.float32))
  with pytest.raises(AudioError, match='statistics'):
    stats_lib.normalise(x, None, 'lowlevel')
  with pytest.raises(ConfigError, match='standardise'):
    stats_lib.normalise(x, stats, 'chars')
  assert paper.get_config().audio.standardise == 'lowlevel'


def test_stats_bad_files(tmp_path):
  with pytest.raises(AudioError, match='missing.npz.*not found'):
    stats_lib.load_stats(tmp_path / 'missing.npz')
  bad = tmp_path / 'bad.npz'
  bad.write_bytes(b'garbage')
  with pytest.raises(AudioError, match='bad.npz'):
    stats_lib.load_stats(bad)
  wrong = tmp_path / 'wrong.npz'
  np.savez(wrong, mean=np.zeros(3))
  with pytest.raises(AudioError, match='wrong.npz'):
    stats_lib.load_stats(wrong)
  with pytest.raises(AudioError, match='no frames'):
    stats_lib.compute_stats([])


@pytest.mark.slow
def test_agrees_with_pyaudioanalysis(speech, monkeypatch):
  try:
    from pyAudioAnalysis import ShortTermFeatures  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    pytest.skip(f'pyAudioAnalysis cannot be imported ({e}); pip install pyAudioAnalysis matplotlib')
  # The authors' copy of pyAudioAnalysis (and this project) use eps = 1e-8; the released library uses machine
  # epsilon, which only changes log10(eps) in MFCCs of digital silence.
  monkeypatch.setattr(ShortTermFeatures, 'eps', lowlevel.EPS)
  x, sr = speech
  rate, fps = 16000, 25  # 640 samples per part: short-term step 40, window 320, the same on both sides.
  y = audio_io.resample(x, sr, rate)
  num_frames = len(y) // 640
  y = audio_io.clip_to_frames(y, fps, num_frames, rate)
  ref, names = ShortTermFeatures.feature_extraction(y * 2 ** 15, rate, 320, 40)
  keep = [names.index(n) for n in lowlevel.FEATURE_NAMES] + [names.index('delta ' + n)
                                                              for n in lowlevel.FEATURE_NAMES]
  ref = ref[keep]  # (42, S): no chroma.
  ours = lowlevel.short_term_features(y, rate, 320, 40)
  assert ours.shape == ref.shape
  for i in range(42):
    assert np.corrcoef(ours[i], ref[i])[0, 1] >= 0.99, f'short-term feature {i}'
  # The 84 per-frame values: mean / std over the 128 short-term windows of parts t-4 .. t+3, for frames whose
  # window lies inside the signal.
  h = lowlevel.lowlevel_features(y, rate, fps, num_frames, L)
  frames = np.arange(L + 1, num_frames - L - 1)
  win = np.lib.stride_tricks.sliding_window_view(ref, 128, axis=1)[:, (frames - L) * 16]  # (42, F, 128)
  expected = np.concatenate([win.mean(-1), win.std(-1)]).T
  for i in range(84):
    assert np.corrcoef(h[frames, i], expected[:, i])[0, 1] >= 0.99, lowlevel.LOWLEVEL_NAMES[i]
  np.testing.assert_allclose(h[frames], expected, rtol=1e-3, atol=1e-4)


def test_audio_file_path_needs_fps(tmp_path, config, backend):
  sr = 44100
  t = np.arange(sr // 2) / sr
  path = tmp_path / 'tone.wav'
  sf.write(path, np.stack([0.3 * np.sin(2 * np.pi * 500 * t)] * 2, axis=1), sr)  # Stereo, 44.1 kHz.
  with pytest.raises(AudioError, match='tone.wav.*no video stream'):
    features.audio_features(path, None, None, config, backend=backend)
  h = features.audio_features(path, 30, 15, config, backend=backend)
  assert h.shape == (15, 300) and np.all(np.isfinite(h))
  np.testing.assert_allclose(h[:, 0], 2 * 500 / 16000, rtol=0.05)  # zcr of the 500 Hz tone.


@pytest.mark.parametrize('num_frames', [1, 3])
def test_clips_shorter_than_the_window(config, backend, num_frames):
  x = 0.1 * np.random.default_rng(0).standard_normal(300).astype(np.float32)
  h = features.audio_features(x, 25, num_frames, config, backend=backend)
  assert h.shape == (num_frames, 300) and np.all(np.isfinite(h))
