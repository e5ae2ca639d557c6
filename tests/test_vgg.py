"""VGG19: the torchvision weight file converts to flax features equal to torch's on either input (config.loss.vgg_input:
[-1, 1] as it is or ImageNet-normalised), with a cache and clear errors."""
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import paper, tiny
from headgan_jax.errors import ConfigError, WeightFileError
from headgan_jax import files
from headgan_jax.nn import vgg

torch = pytest.importorskip('torch')

# torchvision's `cfgs['E']` of models/vgg.py: numbers are conv widths, 'M' a 2x2 max pool.
_VGG19_CFG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M')
_RELU_INDICES = (1, 6, 11, 20, 29)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 in vgg19().features.


class _TorchVGG19(torch.nn.Module):
  """torchvision.models.vgg19 with the same module indices, hence the same state_dict keys.

  torchvision itself is not installed. The classifier has torchvision's keys (classifier.0/3/6) but tiny widths:
  the real one (25088 -> 4096 -> 4096 -> 1000, 123M parameters) would only make the test slow, and the loader
  ignores those keys whatever their shape.
  """

  def __init__(self):
    super().__init__()
    layers, in_ch = [], 3
    for v in _VGG19_CFG:
      if v == 'M':
        layers.append(torch.nn.MaxPool2d(kernel_size=2, stride=2))
      else:
        layers += [torch.nn.Conv2d(in_ch, v, kernel_size=3, padding=1), torch.nn.ReLU(inplace=True)]
        in_ch = v
    self.features = torch.nn.Sequential(*layers)
    self.avgpool = torch.nn.AdaptiveAvgPool2d((7, 7))
    self.classifier = torch.nn.Sequential(
        torch.nn.Linear(8, 4), torch.nn.ReLU(True), torch.nn.Dropout(),
        torch.nn.Linear(4, 4), torch.nn.ReLU(True), torch.nn.Dropout(), torch.nn.Linear(4, 3))
    # torchvision's own init (kaiming fan_out), so activations keep their scale down to relu5_1; non-zero biases
    # so that the bias conversion is exercised.
    gen = torch.Generator().manual_seed(0)
    for m in self.features:
      if isinstance(m, torch.nn.Conv2d):
        fan_out = m.out_channels * 9
        with torch.no_grad():
          m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_out) ** 0.5)
          m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)

  def taps(self, x):
    out = []
    for i, layer in enumerate(self.features[:_RELU_INDICES[-1] + 1]):
      x = layer(x)
      if i in _RELU_INDICES:
        out.append(x.clone())
    return out


@pytest.fixture(scope='module')
def torch_vgg_file(tmp_path_factory):
  net = _TorchVGG19().eval()
  path = tmp_path_factory.mktemp('weights') / 'vgg19-test.pth'
  torch.save(net.state_dict(), path)
  return net, path


def _torch_input(images: np.ndarray, mode: str) -> np.ndarray:
  """What torch is fed per mode, computed here independently of vgg.py: [-1, 1] as it is (the authors' VGGLoss) or
  torchvision's ImageNet-normalised [0, 1] image."""
  if mode == 'raw':
    return images
  unit = (images + 1) / 2
  return (unit - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)


def _torch_features(net, x: np.ndarray) -> list[np.ndarray]:
  with torch.no_grad():
    return [b.numpy().transpose(0, 2, 3, 1) for b in net.taps(torch.from_numpy(x.transpose(0, 3, 1, 2)))]


@pytest.mark.parametrize('mode', vgg.VGG_INPUT_MODES)
def test_features_match_torch_layer_by_layer(torch_vgg_file, tmp_path, mode):
  net, path = torch_vgg_file
  assert len([k for k in net.state_dict() if k.startswith('features.')]) == 32
  params = vgg.load_torchvision_vgg19(path, cache_dir=tmp_path)

  # Odd sizes: 36 -> 18 -> 9 -> 4 -> 2 checks that pooling floors like torch's.
  images = np.random.default_rng(0).uniform(-1, 1, (2, 36, 40, 3)).astype(np.float32)
  ours = jax.jit(vgg.VGG19(input_mode=mode).apply)({'params': params}, jnp.asarray(images))
  theirs = _torch_features(net, _torch_input(images, mode))

  assert len(ours) == 5
  for name, a, b in zip(vgg.FEATURE_NAMES, ours, theirs):
    assert a.shape == b.shape, name
    assert np.abs(b).max() > 0.1 and (b > 0).mean() > 0.05, f'{name}: reference activations are degenerate'
    diff = np.abs(np.asarray(a) - b).max()
    assert diff < 1e-4, f'{name}: max abs diff {diff}'  # Measured ~2e-6.


def test_input_modes_differ(torch_vgg_file, tmp_path):
  """The switch matters: each mode's features are far from the other mode's torch reference, and the default
  (module and config) is 'raw', the authors'."""
  net, path = torch_vgg_file
  params = vgg.load_torchvision_vgg19(path, cache_dir=tmp_path)
  images = np.random.default_rng(3).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  ours = {m: vgg.VGG19(input_mode=m).apply({'params': params}, jnp.asarray(images)) for m in vgg.VGG_INPUT_MODES}
  theirs = {m: _torch_features(net, _torch_input(images, m)) for m in vgg.VGG_INPUT_MODES}
  for name, a, b in zip(vgg.FEATURE_NAMES, ours['raw'], theirs['imagenet']):
    rel = np.abs(np.asarray(a) - b).max() / np.abs(b).max()
    assert rel > 0.05, f'{name}: raw features match the ImageNet-normalised reference (rel diff {rel})'
  for name, a, b in zip(vgg.FEATURE_NAMES, ours['imagenet'], theirs['raw']):
    rel = np.abs(np.asarray(a) - b).max() / np.abs(b).max()
    assert rel > 0.05, f'{name}: imagenet features match the raw reference (rel diff {rel})'

  assert vgg.VGG19().input_mode == 'raw'
  assert tiny.get_config().loss.vgg_input == 'raw'
  assert paper.get_config().loss.vgg_input == 'raw'


def test_cache_hit_needs_no_torch(torch_vgg_file, tmp_path, monkeypatch):
  _, path = torch_vgg_file
  first = vgg.load_torchvision_vgg19(path, cache_dir=tmp_path)
  cached = list(tmp_path.glob('*.npz'))
  assert len(cached) == 1 and files.file_sha256(str(path)) in cached[0].name
  assert not list(tmp_path.glob('*.tmp'))

  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` now raises ImportError.
  second = vgg.load_torchvision_vgg19(path, cache_dir=tmp_path)
  jax.tree.map(np.testing.assert_array_equal, first, second)

  # Without torch and without a cached copy, the loader says what is missing.
  with pytest.raises(WeightFileError, match='PyTorch'):
    vgg.load_torchvision_vgg19(path, cache_dir=tmp_path / 'empty')


def test_corrupt_cache_is_rebuilt(torch_vgg_file, tmp_path):
  _, path = torch_vgg_file
  good = vgg.load_torchvision_vgg19(path, cache_dir=tmp_path)
  cached = next(tmp_path.glob('*.npz'))
  cached.write_bytes(b'not an npz')
  with pytest.warns(UserWarning, match='cache'):
    again = vgg.load_torchvision_vgg19(path, cache_dir=tmp_path)
  jax.tree.map(np.testing.assert_array_equal, good, again)
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # The rebuilt cache is valid again.
    vgg.load_torchvision_vgg19(path, cache_dir=tmp_path)


def test_checksum(torch_vgg_file, tmp_path):
  _, path = torch_vgg_file
  actual = files.file_sha256(str(path))
  vgg.load_torchvision_vgg19(path, sha256=actual.upper(), cache_dir=tmp_path)
  wrong = '0' * 64
  with pytest.raises(WeightFileError) as e:
    vgg.load_torchvision_vgg19(path, sha256=wrong, cache_dir=tmp_path)
  assert str(path) in str(e.value) and wrong in str(e.value) and actual in str(e.value)


def test_bad_files(torch_vgg_file, tmp_path):
  _, good = torch_vgg_file
  missing = tmp_path / 'absent.pth'
  with pytest.raises(WeightFileError, match='absent.pth'):
    vgg.load_torchvision_vgg19(missing, cache_dir=tmp_path)

  garbage = tmp_path / 'garbage.pth'
  garbage.write_bytes(np.random.default_rng(1).bytes(4096))
  with pytest.raises(WeightFileError, match='garbage.pth'):
    vgg.load_torchvision_vgg19(garbage, cache_dir=tmp_path)

  truncated = tmp_path / 'truncated.pth'
  truncated.write_bytes(good.read_bytes()[:1_000_000])
  with pytest.raises(WeightFileError, match='truncated.pth'):
    vgg.load_torchvision_vgg19(truncated, cache_dir=tmp_path)
  assert not list(tmp_path.glob('*.npz'))  # Nothing half-converted is cached.


def test_wrong_keys_and_shapes(tmp_path):
  conv0 = {'features.0.weight': torch.zeros(64, 3, 3, 3), 'features.0.bias': torch.zeros(64)}
  keys = tmp_path / 'keys.pth'
  torch.save(conv0, keys)  # Stops after the first conv: features.2.weight is absent.
  with pytest.raises(WeightFileError, match=r"keys\.pth.*'features\.2\.weight'"):
    vgg.load_torchvision_vgg19(keys, cache_dir=tmp_path)

  shapes = tmp_path / 'shapes.pth'
  torch.save({**conv0, 'features.0.weight': torch.zeros(64, 1, 3, 3)}, shapes)  # A grey-scale first layer.
  with pytest.raises(WeightFileError, match=r"shapes\.pth.*'features\.0\.weight'.*\(64, 1, 3, 3\)"):
    vgg.load_torchvision_vgg19(shapes, cache_dir=tmp_path)

  nan = tmp_path / 'nan.pth'
  torch.save({**conv0, 'features.0.bias': torch.full((64,), float('nan'))}, nan)
  with pytest.raises(WeightFileError, match=r"nan\.pth.*'features\.0\.bias'.*NaN"):
    vgg.load_torchvision_vgg19(nan, cache_dir=tmp_path)

  not_dict = tmp_path / 'tensor.pth'
  torch.save(torch.zeros(3), not_dict)
  with pytest.raises(WeightFileError, match='tensor.pth'):
    vgg.load_torchvision_vgg19(not_dict, cache_dir=tmp_path)


def test_from_config(torch_vgg_file, tmp_path):
  config = tiny.get_config()
  config.loss.use_vgg = True
  config.loss.vgg_weights = ''
  with pytest.raises(ConfigError, match='vgg_weights'):
    vgg.vgg19_from_config(config, cache_dir=tmp_path)

  config.loss.use_vgg = False
  with pytest.warns(UserWarning, match='use_vgg is False'):
    assert vgg.vgg19_from_config(config, cache_dir=tmp_path) is None

  net, path = torch_vgg_file
  config.loss.use_vgg = True
  config.loss.vgg_weights = str(path)
  config.runtime.compute_dtype = 'bfloat16'
  apply_fn, params = vgg.vgg19_from_config(config, cache_dir=tmp_path)
  images = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (1, 32, 32, 3)), jnp.float32)
  feats = jax.jit(apply_fn)(params, images)
  assert [f.shape[1:] for f in feats] == [(32, 32, 64), (16, 16, 128), (8, 8, 256), (4, 4, 512), (2, 2, 512)]
  assert all(f.dtype == jnp.bfloat16 for f in feats)
  ref = vgg.VGG19().apply({'params': params}, images)
  rel = float(jnp.abs(feats[0].astype(jnp.float32) - ref[0]).max() / jnp.abs(ref[0]).max())
  assert rel < 0.05

  # config.loss.vgg_input reaches the network: 'imagenet' gives the features of VGG19(input_mode='imagenet').
  config.runtime.compute_dtype = 'float32'
  for mode in vgg.VGG_INPUT_MODES:
    config.loss.vgg_input = mode
    apply_fn, params = vgg.vgg19_from_config(config, cache_dir=tmp_path)
    want = vgg.VGG19(input_mode=mode).apply({'params': params}, images)
    jax.tree.map(np.testing.assert_array_equal, apply_fn(params, images), want)


@pytest.mark.parametrize('use_vgg', [True, False])
def test_from_config_refuses_unknown_input(tmp_path, use_vgg):
  """An unknown vgg_input is a ConfigError naming the field and the choices, with or without the VGG terms (a typo
  must not wait until use_vgg is turned on); so is a config that lacks the field."""
  config = tiny.get_config()
  config.loss.use_vgg = use_vgg
  config.loss.vgg_input = 'ImageNet'
  with pytest.raises(ConfigError, match=r"config\.loss\.vgg_input.*'ImageNet'.*'raw'.*'imagenet'"):
    vgg.vgg19_from_config(config, cache_dir=tmp_path)
  with pytest.raises(ConfigError, match=r'config\.loss\.vgg_input'):
    vgg.vgg19_module_from_config(config)
  del config.loss['vgg_input']
  with pytest.raises(ConfigError, match=r'config\.loss\.vgg_input'):
    vgg.vgg19_from_config(config, cache_dir=tmp_path)


def test_module_refuses_unknown_input():
  with pytest.raises(ValueError, match='input_mode'):
    vgg.VGG19(input_mode='bgr').init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
