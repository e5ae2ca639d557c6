"""Self-reenactment image metrics: L1, PSNR and SSIM between generated and ground-truth frames, whole-frame and
masked to the face, and the image-range conventions every metric shares.

Images are (N, H, W, 3), either uint8 in [0, 255] or float in [-1, 1] (the project's convention). PSNR and SSIM are
computed on [0, 1] (max value 1), L1 on [0, 1] too (mean absolute difference per channel). SSIM is dm-pix's
(Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, per channel, averaged); the masked variant averages the SSIM map
over the face pixels (the map covers the valid window positions, so the mask is cropped to match). The mouth
variant (over the mouth box of D_m, `face3d.mouth.box_mask`) does the same over the box: it averages the SSIM of the
windows CENTRED in the box, so near the box's edges a window also weighs pixels up to 5 px outside it (sigma 1.5:
most of the weight lies within 3 px); box pixels within 5 px of the frame's border have no window and drop
out (NaN when none is left). At 64 px the box is 16 px (>= the window), its SSIM mostly the mouth's; on smaller boxes
(4 px at 16 px) it is mostly the surroundings'.
"""
from __future__ import annotations

import functools

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from headgan_jax.errors import MetricInputError
from headgan_jax.face3d import render

SSIM_FILTER = 11


def check_images(images, name: str, ndim: int = 4) -> np.ndarray | jax.Array:
  """Validates (..., H, W, 3) images; uint8 or float (NaN/inf rejected). Returns them unchanged."""
  shape = np.shape(images)
  if len(shape) != ndim or shape[-1] != 3:
    axes = '(N, T, H, W, 3)' if ndim == 5 else '(N, H, W, 3)'
    raise MetricInputError(f'{name} must be {axes} RGB, got shape {shape}')
  dtype = np.dtype(images.dtype)
  if dtype == np.uint8:
    return images
  if not np.issubdtype(dtype, np.floating):
    raise MetricInputError(f'{name} must be uint8 in [0, 255] or float in [-1, 1], got dtype {dtype}')
  if not bool(jnp.all(jnp.isfinite(images))):
    raise MetricInputError(f'{name} hold NaN or infinite values')
  return images


def to_unit(images) -> jax.Array:
  """uint8 [0, 255] or float [-1, 1] -> float32 in [0, 1] (floats are clipped to the range)."""
  if np.dtype(images.dtype) == np.uint8:
    return jnp.asarray(images, jnp.float32) / 255.0
  return jnp.clip((jnp.asarray(images, jnp.float32) + 1.0) * 0.5, 0.0, 1.0)


def to_signed(images) -> jax.Array:
  """uint8 [0, 255] or float [-1, 1] -> float32 in [-1, 1]."""
  return to_unit(images) * 2.0 - 1.0


def to_uint8(images) -> np.ndarray:
  """uint8 or float [-1, 1] -> uint8 numpy (rounded), as a frame written to a PNG."""
  if np.dtype(images.dtype) == np.uint8:
    return np.asarray(images)
  return np.asarray(jnp.round(to_unit(images) * 255.0), np.uint8)


def _gaussian_filter_valid(z: jax.Array, size: int = SSIM_FILTER, sigma: float = 1.5) -> jax.Array:
  """dm-pix's SSIM blur (normalised 1-D Gaussian along y then x, 'valid') as weighted sums of shifted slices: the
  same numbers as its default vmapped jnp.convolve, which (like a depthwise XLA:CPU conv) is slow on CPU."""
  half = size // 2
  taps = np.exp(-0.5 * ((np.arange(size) - half + (2 * half - size + 1) / 2) / sigma) ** 2)
  taps = taps / taps.sum()
  for axis in (-3, -2):
    n = z.shape[axis] - size + 1
    z = sum(float(w) * jax.lax.slice_in_dim(z, k, k + n, axis=axis) for k, w in enumerate(taps))
  return z


@jax.jit
def _per_image(gen: jax.Array, gt: jax.Array, masks: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Per-image sums over pixels, whole frame and over each of `masks` ({region: (N, H, W)}, keys '<metric>_<region>'
  and '<region>_pixels[_valid]'), so that batches can be accumulated and masked means taken at the end."""
  abs_diff = jnp.mean(jnp.abs(gen - gt), axis=-1)  # (N, H, W), mean over channels.
  sq_diff = jnp.mean((gen - gt) ** 2, axis=-1)
  ssim_map = jnp.mean(dm_pix.ssim(gen, gt, max_val=1.0, return_map=True, filter_fn=_gaussian_filter_valid), axis=-1)
  out = {
      'l1': jnp.mean(abs_diff, axis=(1, 2)),
      'mse': jnp.mean(sq_diff, axis=(1, 2)),
      'ssim': jnp.mean(ssim_map, axis=(1, 2)),
  }
  c = SSIM_FILTER // 2
  for region, mask in masks.items():
    mask_valid = mask[:, c:mask.shape[1] - c, c:mask.shape[2] - c]  # The map's pixels: centres of whole windows.
    area = jnp.sum(mask, axis=(1, 2))
    area_valid = jnp.sum(mask_valid, axis=(1, 2))
    out[f'l1_{region}'] = jnp.sum(abs_diff * mask, axis=(1, 2)) / jnp.maximum(area, 1.0)
    out[f'mse_{region}'] = jnp.sum(sq_diff * mask, axis=(1, 2)) / jnp.maximum(area, 1.0)
    out[f'ssim_{region}'] = jnp.sum(ssim_map * mask_valid, axis=(1, 2)) / jnp.maximum(area_valid, 1.0)
    out[f'{region}_pixels'] = area
    out[f'{region}_pixels_valid'] = area_valid
  return out


def psnr_from_mse(mse, max_val: float = 1.0):
  """PSNR in dB of a mean squared error (images in [0, max_val]); inf for mse 0."""
  mse = np.asarray(mse, np.float64)
  with np.errstate(divide='ignore'):
    return 10.0 * np.log10(max_val ** 2 / mse)


def image_metrics(generated, target, mask=None, mouth_mask=None) -> dict[str, np.ndarray]:
  """Per-image L1, PSNR, SSIM, whole-frame, over the face mask and (when given) over the mouth box.

  Args:
    generated, target: (N, H, W, 3) uint8 or float in [-1, 1], same shape (H, W >= 11 for SSIM).
    mask: optional (N, H, W) face mask (bool or {0, 1}); e.g. `face_mask(x_t)`. Without it the *_face values are NaN.
    mouth_mask: optional (N, H, W) mouth box (`face3d.mouth.box_mask` of the frames' mouth corners).
  Returns: dict of (N,) float64 arrays: l1, psnr, ssim, l1_face, psnr_face, ssim_face (NaN where the mask is empty),
    and l1_mouth, psnr_mouth, ssim_mouth when mouth_mask is given (NaN likewise).
  """
  check_images(generated, 'generated frames')
  check_images(target, 'ground-truth frames')
  if np.shape(generated) != np.shape(target):
    raise MetricInputError(f'generated frames {np.shape(generated)} and ground truth {np.shape(target)} differ in '
                           'shape')
  n, h, w = np.shape(generated)[:3]
  if min(h, w) < SSIM_FILTER:
    raise MetricInputError(f'frames of {h}x{w} are smaller than the SSIM window ({SSIM_FILTER})')
  masks = {'face': mask, 'mouth': mouth_mask}
  for region, m in masks.items():
    if m is not None and np.shape(m) != (n, h, w):
      raise MetricInputError(f'the {region} mask must be (N, H, W) = {(n, h, w)}, got {np.shape(m)}')
  regions = {'face': jnp.asarray(mask, jnp.float32) if mask is not None else jnp.zeros((n, h, w), jnp.float32)}
  if mouth_mask is not None:
    regions['mouth'] = jnp.asarray(mouth_mask, jnp.float32)
  out = {k: np.asarray(v, np.float64) for k, v in _per_image(to_unit(generated), to_unit(target), regions).items()}
  res = {'l1': out['l1'], 'psnr': psnr_from_mse(out['mse']), 'ssim': out['ssim']}
  for region in regions:
    empty = out[f'{region}_pixels'] == 0
    empty_valid = out[f'{region}_pixels_valid'] == 0
    mse = out[f'mse_{region}']
    res[f'l1_{region}'] = np.where(empty, np.nan, out[f'l1_{region}'])
    res[f'psnr_{region}'] = np.where(empty, np.nan, psnr_from_mse(np.where(empty, 1.0, mse)))
    res[f'ssim_{region}'] = np.where(empty_valid, np.nan, out[f'ssim_{region}'])
    res[f'mse_{region}'] = np.where(empty, np.nan, mse)
  res['mse'] = out['mse']
  return res


def upsample_uint8(images, min_size: int) -> np.ndarray:
  """(N, H, W, 3) uint8 resized (bilinear, aspect kept) so that the shorter side is `min_size`; as is when larger.

  Face detectors miss faces under ~80 px (dlib's HOG, MediaPipe's BlazeFace at 64 px crops): the demo's 64 px frames
  are upsampled before embedding or tracking."""
  images = np.asarray(images)
  n, h, w, c = images.shape
  if min(h, w) >= min_size:
    return images
  f = min_size / min(h, w)
  shape = (n, int(round(h * f)), int(round(w * f)), c)
  out = _resize(jnp.asarray(images, jnp.float32), shape)
  return np.asarray(jnp.clip(jnp.round(out), 0, 255)).astype(np.uint8)


@functools.partial(jax.jit, static_argnames=('shape',))
def _resize(images: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  return jax.image.resize(images, shape, 'bilinear', antialias=False)


def face_mask(face_images, threshold: float = 0.01) -> jax.Array:
  """(N, H, W) face region of 3D-face images x_t: the training loss's mask (`face3d.render.face_mask`), squeezed."""
  return render.face_mask(jnp.asarray(face_images), threshold)[..., 0]
