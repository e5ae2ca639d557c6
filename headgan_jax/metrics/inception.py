"""InceptionV3 pool features as pytorch-fid computes them (FID, the paper's reference [25]), and its weight loader.

pytorch-fid's network is torchvision's Inception3 with the TensorFlow FID graph's quirks: average pools in the
Inception A, C and E_1 blocks do not count the padding, and the last E block pools with a max instead of an average.
Features are the 2048 channels after the global average pool ("pool3"). Inputs are resized to 299x299 bilinearly
(no antialiasing, half-pixel centres, as torch's `F.interpolate(align_corners=False)`) and scaled to [-1, 1].

The weights are pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (the TF FID graph converted to PyTorch); no
package ships them and nothing is downloaded: `load_pytorch_fid_weights(path)` reads the user's copy.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from headgan_jax.errors import WeightFileError

FEATURE_DIM = 2048
INPUT_SIZE = 299
WEIGHTS_NAME = 'pt_inception-2015-12-05-6726825d.pth'
# torch.hub's convention: the digits after the last '-' of the file name begin the file's sha256.
WEIGHTS_SHA256_PREFIX = '6726825d'
_BN_EPS = 1e-3


class BasicConv(nn.Module):
  """Conv (no bias) + BatchNorm (eps 1e-3, running statistics) + ReLU: torchvision's BasicConv2d."""
  features: int
  kernel: tuple[int, int]
  stride: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel, strides=self.stride, padding=((ph, ph), (pw, pw)), use_bias=False,
                name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=_BN_EPS, name='bn')(x)
    return nn.relu(x)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  # pytorch-fid: F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False).
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(64, (1, 1), name='branch1x1')(x)
    b5 = BasicConv(48, (1, 1), name='branch5x5_1')(x)
    b5 = BasicConv(64, (5, 5), padding=(2, 2), name='branch5x5_2')(b5)
    b3 = BasicConv(64, (1, 1), name='branch3x3dbl_1')(x)
    b3 = BasicConv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(b3)
    b3 = BasicConv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_3')(b3)
    bp = BasicConv(self.pool_features, (1, 1), name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Grid reduction 35 -> 17."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(384, (3, 3), stride=2, name='branch3x3')(x)
    bd = BasicConv(64, (1, 1), name='branch3x3dbl_1')(x)
    bd = BasicConv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = BasicConv(96, (3, 3), stride=2, name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = BasicConv(192, (1, 1), name='branch1x1')(x)
    b7 = BasicConv(c7, (1, 1), name='branch7x7_1')(x)
    b7 = BasicConv(c7, (1, 7), padding=(0, 3), name='branch7x7_2')(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name='branch7x7_3')(b7)
    bd = BasicConv(c7, (1, 1), name='branch7x7dbl_1')(x)
    bd = BasicConv(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_2')(bd)
    bd = BasicConv(c7, (1, 7), padding=(0, 3), name='branch7x7dbl_3')(bd)
    bd = BasicConv(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_4')(bd)
    bd = BasicConv(192, (1, 7), padding=(0, 3), name='branch7x7dbl_5')(bd)
    bp = BasicConv(192, (1, 1), name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Grid reduction 17 -> 8."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(192, (1, 1), name='branch3x3_1')(x)
    b3 = BasicConv(320, (3, 3), stride=2, name='branch3x3_2')(b3)
    b7 = BasicConv(192, (1, 1), name='branch7x7x3_1')(x)
    b7 = BasicConv(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = BasicConv(192, (3, 3), stride=2, name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
  """The 8x8 blocks; `max_pool` selects pytorch-fid's FIDInceptionE_2 (max instead of average in the pool branch)."""
  max_pool: bool = False

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(320, (1, 1), name='branch1x1')(x)
    b3 = BasicConv(384, (1, 1), name='branch3x3_1')(x)
    b3 = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name='branch3x3_2a')(b3),
                          BasicConv(384, (3, 1), padding=(1, 0), name='branch3x3_2b')(b3)], axis=-1)
    bd = BasicConv(448, (1, 1), name='branch3x3dbl_1')(x)
    bd = BasicConv(384, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name='branch3x3dbl_3a')(bd),
                          BasicConv(384, (3, 1), padding=(1, 0), name='branch3x3dbl_3b')(bd)], axis=-1)
    if self.max_pool:
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_3x3(x)
    bp = BasicConv(192, (1, 1), name='branch_pool')(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """pytorch-fid's InceptionV3 up to the 2048-d pool3 features.

  `__call__(images)` takes (B, H, W, 3) float images in [-1, 1] (any size; resized to 299x299 when `resize`) and
  returns (B, 2048) float32. Submodule names are torchvision's, so the state_dict maps one to one.
  """
  resize: bool = True

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'InceptionV3 expects (B, H, W, 3) images, got shape {images.shape}')
    x = images.astype(jnp.float32)
    if self.resize and x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
      x = jax.image.resize(x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, 3), 'bilinear', antialias=False)
    x = BasicConv(32, (3, 3), stride=2, name='Conv2d_1a_3x3')(x)
    x = BasicConv(32, (3, 3), name='Conv2d_2a_3x3')(x)
    x = BasicConv(64, (3, 3), padding=(1, 1), name='Conv2d_2b_3x3')(x)
    x = _max_pool_3x3_s2(x)
    x = BasicConv(80, (1, 1), name='Conv2d_3b_1x1')(x)
    x = BasicConv(192, (3, 3), name='Conv2d_4a_3x3')(x)
    x = _max_pool_3x3_s2(x)
    x = InceptionA(32, name='Mixed_5b')(x)
    x = InceptionA(64, name='Mixed_5c')(x)
    x = InceptionA(64, name='Mixed_5d')(x)
    x = InceptionB(name='Mixed_6a')(x)
    x = InceptionC(128, name='Mixed_6b')(x)
    x = InceptionC(160, name='Mixed_6c')(x)
    x = InceptionC(160, name='Mixed_6d')(x)
    x = InceptionC(192, name='Mixed_6e')(x)
    x = InceptionD(name='Mixed_7a')(x)
    x = InceptionE(name='Mixed_7b')(x)
    x = InceptionE(max_pool=True, name='Mixed_7c')(x)
    return jnp.mean(x, axis=(1, 2))


def init_variables(seed: int = 0, size: int = 75) -> dict:
  """Randomly initialised variables (for shapes, tests and timing)."""
  return InceptionV3(resize=False).init(jax.random.PRNGKey(seed), jnp.zeros((1, size, size, 3)))


def _tensor_to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, 'detach'):
    value = value.detach().cpu().float().numpy()
  return np.asarray(value, np.float32)


def convert_state_dict(state: Mapping[str, Any], path: str = '<state_dict>') -> dict:
  """pytorch-fid InceptionV3 state_dict -> flax variables {'params', 'batch_stats'} of `InceptionV3`.

  Every conv / batch-norm tensor the pool3 features use must be present with the expected shape; `fc.*`,
  `AuxLogits.*` and `num_batches_tracked` keys are ignored.
  """
  template = jax.eval_shape(lambda: init_variables())
  params, stats = {}, {}
  flat = {}
  for collection, tree in template.items():
    for keys, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      flat[(collection,) + tuple(k.key for k in keys)] = leaf.shape
  for (collection, *modules, layer, leaf), shape in flat.items():
    prefix = '.'.join(modules + [layer])
    if layer == 'conv':
      key, transform = f'{prefix}.weight', lambda w: w.transpose(2, 3, 1, 0)  # OIHW -> HWIO.
    else:
      torch_name = {('params', 'scale'): 'weight', ('params', 'bias'): 'bias',
                    ('batch_stats', 'mean'): 'running_mean', ('batch_stats', 'var'): 'running_var'}[(collection, leaf)]
      key, transform = f'{prefix}.{torch_name}', lambda w: w
    if key not in state:
      raise WeightFileError(f'InceptionV3 weight file {path} has no key {key!r}: it is not pytorch-fid\'s '
                            f'{WEIGHTS_NAME} (it has {len(state)} keys, e.g. {sorted(state)[:4]})')
    value = transform(_tensor_to_numpy(state[key]))
    if value.shape != tuple(shape):
      raise WeightFileError(f'InceptionV3 weight file {path}: key {key!r} has shape {value.shape} after conversion, '
                            f'expected {tuple(shape)}')
    if not np.all(np.isfinite(value)):
      raise WeightFileError(f'InceptionV3 weight file {path}: key {key!r} holds NaN or infinite values')
    target = params if collection == 'params' else stats
    node = target
    for m in modules + [layer]:
      node = node.setdefault(m, {})
    node[leaf] = value
  return {'params': params, 'batch_stats': stats}


def load_pytorch_fid_weights(path: str | os.PathLike, sha256_prefix: str = WEIGHTS_SHA256_PREFIX) -> dict:
  """Flax variables of `InceptionV3` from pytorch-fid's weight file.

  Args:
    path: `pt_inception-2015-12-05-6726825d.pth` (pytorch-fid's FID_WEIGHTS_URL file), read with
      torch.load(weights_only=True).
    sha256_prefix: the file's sha256 must start with it (torch.hub's check); '' skips the check (for other files).
  Raises:
    WeightFileError: missing or unreadable file, checksum mismatch, missing keys or wrong shapes, no PyTorch.
  """
  from headgan_jax.files import file_sha256  # pylint: disable=import-outside-toplevel
  path = os.path.expanduser(os.fspath(path))
  if not os.path.isfile(path):
    raise WeightFileError(f'InceptionV3 weight file {path} does not exist (pytorch-fid\'s {WEIGHTS_NAME} is '
                          'expected there; FID is skipped without it)')
  if sha256_prefix:
    digest = file_sha256(path)
    if not digest.startswith(sha256_prefix.lower()):
      raise WeightFileError(f'InceptionV3 weight file {path} has sha256 {digest[:16]}..., expected one starting '
                            f'with {sha256_prefix} ({WEIGHTS_NAME}); FID values from other weights are not '
                            'comparable (set the evaluator\'s sha256_prefix to \'\' to use them anyway)')
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise WeightFileError(f'Reading {path} needs PyTorch (pip install torch, the CPU build is enough)') from e
  try:
    state = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # torch raises many types on a bad file.
    raise WeightFileError(f'InceptionV3 weight file {path} cannot be read as a PyTorch state_dict: {e}') from e
  if not isinstance(state, Mapping):
    raise WeightFileError(f'InceptionV3 weight file {path} holds a {type(state).__name__}, not a state_dict')
  return jax.tree.map(jnp.asarray, convert_state_dict(state, path))
