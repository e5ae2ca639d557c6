"""FID: the Frechet distance against SciPy, streaming statistics, and the InceptionV3 loader against a torch build."""
import numpy as np
import pytest
import scipy.linalg

from headgan_jax.errors import MetricInputError, WeightFileError
from headgan_jax.metrics import fid, inception, stats


def _random_stats(rng, dim, n):
  x = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) * 0.3 + rng.normal(size=dim)
  return x.mean(0), np.cov(x, rowvar=False)


def _scipy_frechet(mu1, s1, mu2, s2):
  """pytorch-fid's formula: sqrtm of the (non-symmetric) product."""
  covmean = scipy.linalg.sqrtm(s1 @ s2).real
  d = mu1 - mu2
  return d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


@pytest.mark.parametrize('dim,n', [(16, 200), (64, 500), (128, 1000)])
def test_frechet_matches_scipy(dim, n):
  rng = np.random.default_rng(dim)
  mu1, s1 = _random_stats(rng, dim, n)
  mu2, s2 = _random_stats(rng, dim, n)
  ours = fid.frechet_distance(mu1, s1, mu2, s2)
  ref = _scipy_frechet(mu1, s1, mu2, s2)
  assert abs(ours - ref) / abs(ref) < 1e-6, (ours, ref)


def test_frechet_of_a_set_with_itself_is_zero():
  rng = np.random.default_rng(0)
  mu, s = _random_stats(rng, 32, 100)
  assert fid.frechet_distance(mu, s, mu, s) == 0.0
  # Through the general path (not bit-identical inputs), still zero to roundoff, also rank-deficient (N < D).
  mu_r, s_r = _random_stats(rng, 64, 20)
  assert fid.frechet_distance(mu_r, s_r, mu_r.copy(), s_r * (1 + 1e-15)) < 1e-9 * np.trace(s_r)


def test_frechet_rejects_bad_statistics():
  with pytest.raises(MetricInputError, match='covariance'):
    fid.frechet_distance(np.zeros(3), np.eye(4), np.zeros(3), np.eye(3))
  with pytest.raises(MetricInputError, match='NaN'):
    fid.frechet_distance(np.full(3, np.nan), np.eye(3), np.zeros(3), np.eye(3))


def test_running_stats_match_numpy_over_batches(tmp_path):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(103, 12)) * 100 + 1e4  # A large offset: the merge must not lose precision.
  rs = stats.RunningStats(12)
  for chunk in np.array_split(x, [1, 30, 31, 77]):
    rs.update(chunk)
  other = stats.RunningStats(12)
  other.update(x[:40])
  split = stats.RunningStats(12)
  split.update(x[40:])
  other.merge(split)
  for r in (rs, other):
    assert r.count == 103
    np.testing.assert_allclose(r.mean(), x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(r.covariance(), np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)
  stats.save_stats(str(tmp_path / 's.npz'), rs.mean(), rs.covariance())
  mu, sigma = stats.load_stats(str(tmp_path / 's.npz'))
  np.testing.assert_array_equal(mu, rs.mean())
  with pytest.raises(MetricInputError, match='NaN'):
    rs.update(np.full((2, 12), np.nan))


# --- InceptionV3 against an independent torch build of pytorch-fid's network -----------------------------------

torch = pytest.importorskip('torch')
F = torch.nn.functional


class _Conv(torch.nn.Module):
  def __init__(self, cin, cout, k, stride=1, padding=0):
    super().__init__()
    self.conv = torch.nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=False)
    self.bn = torch.nn.BatchNorm2d(cout, eps=0.001)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


class _A(torch.nn.Module):
  def __init__(self, cin, pool):
    super().__init__()
    self.branch1x1 = _Conv(cin, 64, 1)
    self.branch5x5_1, self.branch5x5_2 = _Conv(cin, 48, 1), _Conv(48, 64, 5, padding=2)
    self.branch3x3dbl_1 = _Conv(cin, 64, 1)
    self.branch3x3dbl_2, self.branch3x3dbl_3 = _Conv(64, 96, 3, padding=1), _Conv(96, 96, 3, padding=1)
    self.branch_pool = _Conv(cin, pool, 1)

  def forward(self, x):
    p = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                      self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))), self.branch_pool(p)], 1)


class _B(torch.nn.Module):
  def __init__(self, cin):
    super().__init__()
    self.branch3x3 = _Conv(cin, 384, 3, stride=2)
    self.branch3x3dbl_1, self.branch3x3dbl_2 = _Conv(cin, 64, 1), _Conv(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = _Conv(96, 96, 3, stride=2)

  def forward(self, x):
    return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                      F.max_pool2d(x, 3, stride=2)], 1)


class _C(torch.nn.Module):
  def __init__(self, cin, c7):
    super().__init__()
    self.branch1x1 = _Conv(cin, 192, 1)
    self.branch7x7_1, self.branch7x7_2 = _Conv(cin, c7, 1), _Conv(c7, c7, (1, 7), padding=(0, 3))
    self.branch7x7_3 = _Conv(c7, 192, (7, 1), padding=(3, 0))
    self.branch7x7dbl_1, self.branch7x7dbl_2 = _Conv(cin, c7, 1), _Conv(c7, c7, (7, 1), padding=(3, 0))
    self.branch7x7dbl_3, self.branch7x7dbl_4 = _Conv(c7, c7, (1, 7), padding=(0, 3)), _Conv(c7, c7, (7, 1),
                                                                                           padding=(3, 0))
    self.branch7x7dbl_5 = _Conv(c7, 192, (1, 7), padding=(0, 3))
    self.branch_pool = _Conv(cin, 192, 1)

  def forward(self, x):
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    bd = x
    for i in range(1, 6):
      bd = getattr(self, f'branch7x7dbl_{i}')(bd)
    p = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(p)], 1)


class _D(torch.nn.Module):
  def __init__(self, cin):
    super().__init__()
    self.branch3x3_1, self.branch3x3_2 = _Conv(cin, 192, 1), _Conv(192, 320, 3, stride=2)
    self.branch7x7x3_1, self.branch7x7x3_2 = _Conv(cin, 192, 1), _Conv(192, 192, (1, 7), padding=(0, 3))
    self.branch7x7x3_3, self.branch7x7x3_4 = _Conv(192, 192, (7, 1), padding=(3, 0)), _Conv(192, 192, 3, stride=2)

  def forward(self, x):
    b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
    return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class _E(torch.nn.Module):
  def __init__(self, cin, max_pool):
    super().__init__()
    self.max_pool = max_pool
    self.branch1x1 = _Conv(cin, 320, 1)
    self.branch3x3_1 = _Conv(cin, 384, 1)
    self.branch3x3_2a, self.branch3x3_2b = _Conv(384, 384, (1, 3), padding=(0, 1)), _Conv(384, 384, (3, 1),
                                                                                         padding=(1, 0))
    self.branch3x3dbl_1, self.branch3x3dbl_2 = _Conv(cin, 448, 1), _Conv(448, 384, 3, padding=1)
    self.branch3x3dbl_3a, self.branch3x3dbl_3b = _Conv(384, 384, (1, 3), padding=(0, 1)), _Conv(384, 384, (3, 1),
                                                                                               padding=(1, 0))
    self.branch_pool = _Conv(cin, 192, 1)

  def forward(self, x):
    b3 = self.branch3x3_1(x)
    b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
    bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
    if self.max_pool:
      p = F.max_pool2d(x, 3, stride=1, padding=1)
    else:
      p = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(p)], 1)


class _TorchFIDInception(torch.nn.Module):
  """pytorch-fid's network (torchvision's Inception3 with FIDInceptionA/C/E_1/E_2), same state_dict keys."""

  def __init__(self):
    super().__init__()
    self.Conv2d_1a_3x3, self.Conv2d_2a_3x3 = _Conv(3, 32, 3, stride=2), _Conv(32, 32, 3)
    self.Conv2d_2b_3x3, self.Conv2d_3b_1x1 = _Conv(32, 64, 3, padding=1), _Conv(64, 80, 1)
    self.Conv2d_4a_3x3 = _Conv(80, 192, 3)
    self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = _A(192, 32), _A(256, 64), _A(288, 64)
    self.Mixed_6a = _B(288)
    self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e = _C(768, 128), _C(768, 160), _C(768, 160), _C(768,
                                                                                                             192)
    self.Mixed_7a = _D(768)
    self.Mixed_7b, self.Mixed_7c = _E(1280, False), _E(2048, True)
    self.fc = torch.nn.Linear(2048, 1008)

  def forward(self, images01):
    x = F.interpolate(images01, size=(299, 299), mode='bilinear', align_corners=False)
    x = 2 * x - 1
    x = F.max_pool2d(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))), 3, stride=2)
    x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
    for name in ('5b', '5c', '5d', '6a', '6b', '6c', '6d', '6e', '7a', '7b', '7c'):
      x = getattr(self, f'Mixed_{name}')(x)
    return x.mean((2, 3))


@pytest.fixture(scope='module')
def torch_inception():
  torch.manual_seed(0)
  net = _TorchFIDInception().eval()
  gen = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, torch.nn.Conv2d):  # He init keeps activations O(1) through 90 layers.
        m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / m.weight[0].numel()) ** 0.5)
      if isinstance(m, torch.nn.BatchNorm2d):
        n = m.num_features
        m.weight.copy_(1 + 0.1 * torch.randn(n, generator=gen))
        m.bias.copy_(0.1 * torch.randn(n, generator=gen))
        m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
        m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
  return net


@pytest.mark.slow
def test_inception_loader_matches_torch_output_for_output(torch_inception, tmp_path):
  import jax.numpy as jnp
  path = tmp_path / inception.WEIGHTS_NAME
  torch.save(torch_inception.state_dict(), path)
  variables = inception.load_pytorch_fid_weights(path, sha256_prefix='')
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(2, 72, 88, 3), dtype=np.uint8)  # Not square: the resize is checked too.
  with torch.no_grad():
    ref = torch_inception(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).numpy()
  ours = np.asarray(fid.inception_features(variables, jnp.asarray(images)))
  assert ours.shape == (2, 2048)
  assert np.std(ref) > 1e-2  # Activations did not die out: the comparison means something.
  np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())


def test_inception_loader_errors(tmp_path, torch_inception):
  with pytest.raises(WeightFileError, match='does not exist'):
    inception.load_pytorch_fid_weights(tmp_path / 'absent.pth')
  bad = tmp_path / 'bad.pth'
  bad.write_bytes(b'not a checkpoint')
  with pytest.raises(WeightFileError, match='sha256'):
    inception.load_pytorch_fid_weights(bad)
  with pytest.raises(WeightFileError, match='cannot be read'):
    inception.load_pytorch_fid_weights(bad, sha256_prefix='')
  state = torch_inception.state_dict()
  del state['Mixed_6c.branch7x7_2.conv.weight']
  with pytest.raises(WeightFileError, match='Mixed_6c.branch7x7_2.conv.weight'):
    inception.convert_state_dict(state)
