"""VGG19 perceptual features (torchvision's `vgg19().features` up to relu5_1) and a loader for its weights.

The perceptual loss of the paper (eq. 7, [20]) follows pix2pixHD / SPADE's `VGGLoss`: L1 distances between the
activations relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1 of an ImageNet-trained VGG19. Those weights cannot be
downloaded at run time; `load_torchvision_vgg19` converts the standard torchvision file (`vgg19-dcbb9e9d.pth`) into
flax parameters once and caches the result, keyed by the file's sha256, so later runs do not need PyTorch.

What the network sees is `config.loss.vgg_input`: 'raw' (default, the authors' code: their `VGGLoss` feeds the
images in [-1, 1] as they are) or 'imagenet' (mapped to [0, 1], then ImageNet mean / std, the input torchvision
documents for these weights). 'imagenet' spans about 2.2x the range of 'raw' (1 / (2 std)), which changes the
activations behind both VGG terms (lambda_VGG = 10 each).
"""
from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from headgan_jax.errors import ConfigError, WeightFileError
from headgan_jax.files import file_sha256

# What VGG19 is fed (config.loss.vgg_input): 'raw' = images in [-1, 1] as they are (the authors'), 'imagenet' =
# torchvision's convention (below).
VGG_INPUT_MODES = ('raw', 'imagenet')

# ImageNet statistics of images in [0, 1], as torchvision's VGG expects them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Output widths of the convolutions of each block of vgg19().features (configuration "E"); 2x2 max pool between blocks.
_BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))
FEATURE_NAMES = ('relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu5_1')
DEFAULT_CACHE_DIR = os.path.join('~', '.cache', 'headgan_jax')
_CACHE_FORMAT = 'vgg19-relu5_1-v1'  # Part of the cache file name: bump it when the converted layout changes.


def _torchvision_convs() -> list[tuple[int, str, int, int]]:
  """(index in `features`, flax name, in channels, out channels) of all 16 convs, in torchvision's numbering.

  torchvision builds `features` as [conv, ReLU] per layer and one MaxPool2d after each block, so indices skip 2 per
  conv and 1 per pool.
  """
  convs, index, in_ch = [], 0, 3
  for b, widths in enumerate(_BLOCKS):
    for l, width in enumerate(widths):
      convs.append((index, f'conv{b + 1}_{l + 1}', in_ch, width))
      index += 2
      in_ch = width
    index += 1
  return convs


_TORCHVISION_CONVS = _torchvision_convs()
# Only the convs up to conv5_1 are computed (and kept); the file must still hold all 16 to count as a VGG19.
_USED_CONVS = tuple(c for c in _TORCHVISION_CONVS if not c[1].startswith('conv5') or c[1] == 'conv5_1')
_USED_NAMES = frozenset(c[1] for c in _USED_CONVS)


def imagenet_normalise(images: jax.Array) -> jax.Array:
  """Maps images in [-1, 1] to torchvision's input convention: (y - mean) / std of y = (images + 1) / 2 in [0, 1]."""
  mean = jnp.asarray(IMAGENET_MEAN, images.dtype)
  std = jnp.asarray(IMAGENET_STD, images.dtype)
  return ((images + 1) * 0.5 - mean) / std


def vgg_input(images: jax.Array, input_mode: str) -> jax.Array:
  """The network's input for images in [-1, 1]: as they are ('raw') or `imagenet_normalise`d ('imagenet')."""
  if input_mode == 'raw':
    return images
  if input_mode == 'imagenet':
    return imagenet_normalise(images)
  raise ValueError(f'VGG19 input_mode {input_mode!r} is not one of {VGG_INPUT_MODES}')


class VGG19(nn.Module):
  """torchvision's VGG19 `features` (3x3 convs + ReLU, 2x2 max pools), run up to relu5_1 and no further.

  `__call__(images)` takes (B, H, W, 3) images in [-1, 1] and returns the list of the 5 activations
  relu1_1 (H), relu2_1 (H/2), relu3_1 (H/4), relu4_1 (H/8), relu5_1 (H/16), sizes floored like torch's pooling.
  `input_mode` is what the first conv sees (`vgg_input`): 'raw' (default, the authors') or 'imagenet'. Parameters
  are float32; `dtype` is the compute dtype. Build it from a config with `vgg19_module_from_config`.
  """
  dtype: Any = jnp.float32
  input_mode: str = 'raw'

  @nn.compact
  def __call__(self, images: jax.Array) -> list[jax.Array]:
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'VGG19 expects (B, H, W, 3) images, got shape {images.shape}')
    x = vgg_input(images.astype(jnp.float32), self.input_mode).astype(self.dtype)
    features = []
    for b, widths in enumerate(_BLOCKS):
      if b > 0:
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID')
      # Block 5 contributes only relu5_1: the rest of the network does not enter the loss.
      for l, width in enumerate(widths[:1] if b == len(_BLOCKS) - 1 else widths):
        x = nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype, param_dtype=jnp.float32,
                    name=f'conv{b + 1}_{l + 1}')(x)
        x = nn.relu(x)
        if l == 0:
          features.append(x)
    return features


def _expected_param_shapes() -> dict[tuple[str, str], tuple[int, ...]]:
  shapes = {}
  for _, name, cin, cout in _USED_CONVS:
    shapes[(name, 'kernel')] = (3, 3, cin, cout)
    shapes[(name, 'bias')] = (cout,)
  return shapes


def _read_torch_state_dict(path: str) -> Mapping[str, Any]:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise WeightFileError(
        f'Converting the VGG19 weight file {path} needs PyTorch, which is not installed '
        f'(pip install torch; the CPU build is enough). Once converted, the cached copy is used without it.') from e
  try:
    state = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # torch raises many types on a bad file (RuntimeError, UnpicklingError, EOFError, ...).
    raise WeightFileError(f'VGG19 weight file {path} cannot be read as a PyTorch state_dict: {e}') from e
  if not isinstance(state, Mapping):
    raise WeightFileError(f'VGG19 weight file {path} holds a {type(state).__name__}, not a state_dict '
                          f'(expected the keys features.N.weight / features.N.bias of torchvision.models.vgg19)')
  return state


def _tensor_to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, 'detach'):  # A torch tensor (possibly float16 / bfloat16).
    value = value.detach().cpu().float().numpy()
  return np.asarray(value, np.float32)


def convert_torchvision_state_dict(state: Mapping[str, Any], path: str = '<state_dict>') -> dict:
  """torchvision VGG19 state_dict -> flax params of `VGG19` (OIHW kernels become HWIO).

  All 16 convs of `features` must be present with torchvision's shapes; the classifier keys are ignored.
  """
  params = {}
  for index, name, cin, cout in _TORCHVISION_CONVS:
    for kind, shape in (('weight', (cout, cin, 3, 3)), ('bias', (cout,))):
      key = f'features.{index}.{kind}'
      if key not in state:
        raise WeightFileError(
            f'VGG19 weight file {path} has no key {key!r}: it is not torchvision\'s vgg19 (without batch norm) '
            f'state_dict (it has {len(state)} keys, e.g. {sorted(state)[:4]})')
      value = _tensor_to_numpy(state[key])
      if value.shape != shape:
        raise WeightFileError(f'VGG19 weight file {path}: key {key!r} has shape {tuple(value.shape)}, '
                              f'expected {shape} (torchvision vgg19 layout)')
      if not np.all(np.isfinite(value)):
        raise WeightFileError(f'VGG19 weight file {path}: key {key!r} holds NaN or infinite values')
      if name not in _USED_NAMES:
        continue  # Checked, not kept: the features stop at relu5_1.
      params.setdefault(name, {})['kernel' if kind == 'weight' else 'bias'] = (
          value.transpose(2, 3, 1, 0) if kind == 'weight' else value)
  return params


def _cache_path(cache_dir: str | os.PathLike | None, digest: str) -> str:
  cache_dir = os.path.expanduser(os.fspath(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR))
  return os.path.join(cache_dir, f'{_CACHE_FORMAT}-{digest}.npz')


def _read_cache(path: str, digest: str) -> dict | None:
  """Converted params from the cache, or None when absent or unusable (then the caller converts again)."""
  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as data:
      flat = {tuple(k.split('.')): np.asarray(data[k], np.float32) for k in data.files if k != 'source_sha256'}
      source = str(data['source_sha256'])
  except Exception as e:  # A truncated / foreign file: rebuild it rather than fail.
    warnings.warn(f'Ignoring unreadable VGG19 cache file {path} ({e}); converting the weights again.')
    return None
  expected = _expected_param_shapes()
  if source != digest or {k: v.shape for k, v in flat.items()} != expected:
    warnings.warn(f'Ignoring VGG19 cache file {path}: its contents do not match the expected layout; '
                  'converting the weights again.')
    return None
  return traverse_util.unflatten_dict(flat)


def _write_cache(path: str, params: dict, digest: str) -> None:
  """Writes the npz atomically (temp file in the same folder + os.replace); a read-only cache only warns."""
  flat = {'.'.join(k): v for k, v in traverse_util.flatten_dict(params).items()}
  folder = os.path.dirname(path)
  tmp = None
  try:
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix='.vgg19-', suffix='.tmp', delete=False) as f:
      tmp = f.name
      np.savez(f, source_sha256=np.asarray(digest), **flat)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:
    warnings.warn(f'Could not cache the converted VGG19 weights at {path} ({e}); they will be converted again '
                  'next time.')
    if tmp is not None and os.path.exists(tmp):
      os.remove(tmp)


def load_torchvision_vgg19(path: str | os.PathLike, sha256: str = '',
                           cache_dir: str | os.PathLike | None = None) -> dict:
  """Flax params of `VGG19` from torchvision's VGG19 weight file (`vgg19-dcbb9e9d.pth`).

  Use as `VGG19(input_mode=...).apply({'params': params}, images)`, or through `vgg19_from_config`. The file is read
  with `torch.load(weights_only=True)` and converted once; the converted params are cached as
  `<cache_dir>/vgg19-relu5_1-v1-<sha256 of the file>.npz` (default cache_dir ~/.cache/headgan_jax), and a cache hit
  needs no PyTorch.

  Args:
    path: the .pth file (a state_dict with keys features.N.weight / bias; classifier keys are ignored).
    sha256: when non-empty, the file's expected sha256 (hex); a mismatch raises WeightFileError.
    cache_dir: folder of the converted copies.
  Raises:
    WeightFileError: missing, unreadable or corrupt file, wrong checksum, missing keys or wrong shapes, or PyTorch
      absent when a conversion is needed.
  """
  path = os.path.expanduser(os.fspath(path))
  if not os.path.isfile(path):
    raise WeightFileError(f'VGG19 weight file {path} does not exist (torchvision\'s vgg19-dcbb9e9d.pth is expected '
                          'there; or set config.loss.use_vgg = False to train without the VGG loss terms)')
  try:
    digest = file_sha256(path)
  except OSError as e:
    raise WeightFileError(f'VGG19 weight file {path} cannot be read: {e}') from e
  expected = sha256.strip().lower()
  if expected and digest != expected:
    raise WeightFileError(f'VGG19 weight file {path} has sha256 {digest}, expected {expected} '
                          '(the file is corrupt or not the one configured)')
  cache = _cache_path(cache_dir, digest)
  params = _read_cache(cache, digest)
  if params is None:
    params = convert_torchvision_state_dict(_read_torch_state_dict(path), path)
    _write_cache(cache, params, digest)
  return jax.tree.map(jnp.asarray, params)


VGGApply = Callable[[Any, jax.Array], list[jax.Array]]


def vgg_input_mode(config) -> str:
  """config.loss.vgg_input, checked: one of VGG_INPUT_MODES, else ConfigError naming the field and the choices."""
  mode = config.loss.get('vgg_input')
  if mode not in VGG_INPUT_MODES:
    raise ConfigError(f'config.loss.vgg_input is {mode!r}; expected one of {VGG_INPUT_MODES} '
                      "('raw': images in [-1, 1] as they are, the authors'; 'imagenet': ImageNet mean / std)")
  return mode


def vgg19_module_from_config(config, dtype: Any = None) -> VGG19:
  """The `VGG19` module the config asks for: input mode config.loss.vgg_input, compute dtype `dtype` (default
  config.runtime.compute_dtype). Every builder of the perceptual network goes through here, so none ignores the mode."""
  dtype = jnp.dtype(config.runtime.compute_dtype if dtype is None else dtype)
  return VGG19(dtype=dtype, input_mode=vgg_input_mode(config))


def vgg19_from_config(config, cache_dir: str | os.PathLike | None = None) -> tuple[VGGApply, dict] | None:
  """(apply_fn, params) of the perceptual network the config asks for, or None when config.loss.use_vgg is False.

  `apply_fn(params, images)` returns the 5 feature maps of images in [-1, 1], fed as config.loss.vgg_input says;
  compute dtype is config.runtime.compute_dtype. Training refuses to start with use_vgg True and no weight file: the
  VGG terms weigh 10x in L_G and silently dropping them would train a different model.
  """
  loss = config.loss
  # Checked even without VGG terms, so a typo fails now rather than when use_vgg is turned on.
  model = vgg19_module_from_config(config)
  if not loss.use_vgg:
    warnings.warn('config.loss.use_vgg is False: training without the VGG perceptual terms L_G^VGG and L_F^VGG '
                  '(eq. 7, weight lambda_VGG) - results will differ from the paper.', UserWarning, stacklevel=2)
    return None
  if not loss.vgg_weights:
    raise ConfigError(
        "config.loss.vgg_weights is '' while config.loss.use_vgg is True: give the path of torchvision's VGG19 "
        'weights (vgg19-dcbb9e9d.pth), or set config.loss.use_vgg = False to train explicitly without VGG terms.')
  params = load_torchvision_vgg19(loss.vgg_weights, loss.vgg_sha256, cache_dir)

  def apply_fn(vgg_params, images: jax.Array) -> list[jax.Array]:
    return model.apply({'params': vgg_params}, images)

  return apply_fn, params
