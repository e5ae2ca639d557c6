"""The loss terms of the paper's Appendix A (eq. 3-8), as pure jnp functions.

Every function returns a float32 scalar, whatever the input dtype (bfloat16 activations are upcast before any
difference or reduction). Multi-scale discriminator outputs use the nested structure of `nn/discriminator.py`: one
list per scale, each holding the features of every layer with the patch logits last.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from headgan_jax.errors import ConfigError
from headgan_jax.face3d.render import face_mask  # noqa: F401  (re-exported: the loss terms mask with it)

# One scale's output: a logits array, or the list of a scale's layer features ending with the logits.
ScaleOutput = jax.Array | Sequence[jax.Array]


def _f32(x: jax.Array) -> jax.Array:
  return jnp.asarray(x).astype(jnp.float32)


def _mean_abs_diff(a: jax.Array, b: jax.Array) -> jax.Array:
  """torch's L1Loss (mean over every element), in float32."""
  if a.shape != b.shape:
    raise ValueError(f'L1 between arrays of different shapes {a.shape} and {b.shape}')
  return jnp.mean(jnp.abs(_f32(a) - _f32(b)))


def _scale_logits(outputs: jax.Array | Sequence[ScaleOutput], what: str) -> list[jax.Array]:
  """Patch logits of each scale, from one array, a list of per-scale logits, or D's full nested output."""
  if isinstance(outputs, (jax.Array, np.ndarray)):
    return [outputs]
  scales = [o[-1] if isinstance(o, (list, tuple)) else o for o in outputs]
  if not scales:
    raise ValueError(f'{what}: no discriminator output')
  return scales


def hinge_d(real_logits, fake_logits) -> jax.Array:
  """L_D^adv, eq. (4)/(5): E[max(0, 1 - D(real))] + E[max(0, 1 + D(fake))], each averaged over D's scales.

  Either argument is D's output for one input: the nested per-scale feature lists (last entry = logits), a list
  of per-scale logits, or a single logits array. Real and fake need the same number of scales.
  """
  real = _scale_logits(real_logits, 'hinge_d real')
  fake = _scale_logits(fake_logits, 'hinge_d fake')
  if len(real) != len(fake):
    raise ValueError(f'hinge_d: {len(real)} real scales but {len(fake)} fake scales')
  real_term = sum(jnp.mean(jax.nn.relu(1.0 - _f32(r))) for r in real) / len(real)
  fake_term = sum(jnp.mean(jax.nn.relu(1.0 + _f32(f))) for f in fake) / len(fake)
  return real_term + fake_term


def hinge_g(fake_logits) -> jax.Array:
  """L_G^adv for one discriminator, eq. (3): -E[D(fake)], averaged over D's scales."""
  fake = _scale_logits(fake_logits, 'hinge_g')
  return -sum(jnp.mean(_f32(f)) for f in fake) / len(fake)


def feature_matching(real_feats: Sequence[Sequence[jax.Array]], fake_feats: Sequence[Sequence[jax.Array]],
                     num_layers: int | None = None) -> jax.Array:
  """L_G^FM (pix2pixHD [40] / the authors' weighting), unscaled by lambda_FM.

    sum over scales i, layers j < last of  4 / (n_layers + 1) / num_D * mean|D_i^j(fake) - stop_grad(D_i^j(real))|

  The patch logits (each scale's last entry) do not enter. `num_layers` is the discriminator's n_layers
  (config.disc.num_layers); by default it is read off the structure as the number of intermediate features per
  scale, which is n_layers for SPADE's PatchGAN (n_layers hidden convs + the logits conv).
  """
  if len(real_feats) != len(fake_feats) or not fake_feats:
    raise ValueError(f'feature_matching: {len(real_feats)} real scales but {len(fake_feats)} fake scales')
  num_d = len(fake_feats)
  total = jnp.zeros((), jnp.float32)
  for i, (real, fake) in enumerate(zip(real_feats, fake_feats)):
    if len(real) != len(fake):
      raise ValueError(f'feature_matching: scale {i} has {len(real)} real but {len(fake)} fake layer outputs')
    n_intermediate = len(fake) - 1
    weight = 4.0 / ((n_intermediate if num_layers is None else num_layers) + 1) / num_d
    for r, f in zip(real[:-1], fake[:-1]):
      total = total + weight * _mean_abs_diff(f, jax.lax.stop_gradient(r))
  return total


def masked_l1(a: jax.Array, b: jax.Array, mask: jax.Array) -> jax.Array:
  """L^L1, eq. (6), restricted to the face region: mean over ALL elements of |a - b| * mask.

  Normalised by the full element count (not by the mask's area), i.e. torch's L1Loss(a * mask, b * mask) for a
  binary mask, so frames with a small face weigh less. `mask` broadcasts against a, e.g. (B, H, W, 1).
  """
  if a.shape != b.shape:
    raise ValueError(f'masked_l1 between arrays of different shapes {a.shape} and {b.shape}')
  mask = _f32(mask)
  try:
    mask = jnp.broadcast_to(mask, a.shape)
  except ValueError as e:
    raise ValueError(f'masked_l1: mask of shape {mask.shape} does not broadcast to images of shape {a.shape}') from e
  return jnp.mean(jnp.abs(_f32(a) - _f32(b)) * mask)


def vgg_l1_many(vgg_apply: Callable[[jax.Array], Sequence[jax.Array]], preds: Sequence[jax.Array], target: jax.Array,
                layer_weights: Sequence[float]) -> tuple[jax.Array, ...]:
  """L^VGG, eq. (7), of each of `preds` against one `target`, with ONE pass of the network over them all stacked:
  sum_l w_l * mean|VGG_l(pred) - stop_grad(VGG_l(target))| per pred, unscaled by lambda_VGG.

  The train step stacks [y~_t, y-bar_t^ref, y_t], so the target's features are computed once. `vgg_apply` maps
  images in [-1, 1] to the feature list, e.g. `lambda x: apply_fn(vgg_params, x)` with `nn.vgg.vgg19_from_config`;
  the weights are config.loss.vgg_layer_weights (relu1_1 ... relu5_1).
  """
  if not preds:
    raise ValueError('vgg_l1_many: no predictions given')
  for a in preds:
    if a.shape != target.shape:
      raise ValueError(f'vgg_l1 between images of different shapes {a.shape} and {target.shape}')
  dtype = preds[0].dtype
  feats = vgg_apply(jnp.concatenate([a.astype(dtype) for a in preds] + [target.astype(dtype)], axis=0))
  if len(feats) != len(layer_weights):
    raise ConfigError(f'config.loss.vgg_layer_weights has {len(layer_weights)} weights but the VGG network gives '
                      f'{len(feats)} feature maps')
  n, k = target.shape[0], len(preds)
  totals = []
  for i in range(k):
    total = jnp.zeros((), jnp.float32)
    for w, f in zip(layer_weights, feats):
      total = total + float(w) * _mean_abs_diff(f[i * n:(i + 1) * n], jax.lax.stop_gradient(f[k * n:]))
    totals.append(total)
  return tuple(totals)


def vgg_l1(vgg_apply: Callable[[jax.Array], Sequence[jax.Array]], a: jax.Array, b: jax.Array,
           layer_weights: Sequence[float]) -> jax.Array:
  """L^VGG, eq. (7), of the generated image a against the target b (both through the network in one batch); see
  `vgg_l1_many`."""
  return vgg_l1_many(vgg_apply, [a], b, layer_weights)[0]


def flow_mask_l1(mask: jax.Array, foreground: jax.Array) -> jax.Array:
  """The authors' flow-mask term (their lambda_mask L1, unscaled): mean|m - foreground| over every element.

  m (B, H, W, 1) is F's mask, foreground the union of the person's foreground in y_t and y_ref (no gradient flows
  into it): F learns to switch the flow off on the background.
  """
  if mask.shape != foreground.shape:
    raise ValueError(f'flow_mask_l1: mask of shape {mask.shape} but foreground of shape {foreground.shape}')
  return _mean_abs_diff(mask, jax.lax.stop_gradient(foreground))


def temporal_l1(feats_prev: Sequence[jax.Array], feats_now: Sequence[jax.Array]) -> jax.Array:
  """L_F^Temp, eq. (8): sum over the scales l = 1..3 of mean|h-bar_{t-1}^(l) - h-bar_t^(l)|, unscaled by lambda_Temp.

  Gradients flow into both frames' features; a caller whose h-bar_{t-1} comes from an earlier step passes it
  through stop_gradient itself.
  """
  if len(feats_prev) != len(feats_now) or not feats_now:
    raise ValueError(f'temporal_l1: {len(feats_prev)} previous but {len(feats_now)} current feature scales')
  return sum((_mean_abs_diff(p, c) for p, c in zip(feats_prev, feats_now)), jnp.zeros((), jnp.float32))
