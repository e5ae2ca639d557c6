"""Finding and aligning the largest face of a frame, for the identity embedders of CSIM.

Detection and landmarks are dlib's (HOG frontal-face detector, 5- and 68-point shape predictors), whose model files
come with the `face-recognition-models` package; they are located with importlib (the package's own lookup needs
pkg_resources, absent from fresh environments). The similarity alignment to a template and the crop are JAX,
batched and jitted (`similarity_transforms`, `warp_crops`).
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np

from headgan_jax.errors import MetricInputError, WeightFileError

# ArcFace's alignment template (insightface `arcface_dst`): left eye, right eye, nose tip, left and right mouth
# corners (image left / right), in pixels of the 112x112 crop.
ARCFACE_TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                 [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)


def dlib_model_path(name: str) -> str:
  """Path of a model file shipped by `face-recognition-models` (e.g. 'shape_predictor_5_face_landmarks.dat')."""
  spec = importlib.util.find_spec('face_recognition_models')
  if spec is None or not spec.submodule_search_locations:
    raise WeightFileError('dlib\'s face models come with the face-recognition-models package, which is not '
                          'installed (pip install face-recognition-models==0.3.0; it is in requirements.txt)')
  # The package's own __init__ imports pkg_resources (absent in fresh environments): find its folder without
  # importing it.
  path = os.path.join(spec.submodule_search_locations[0], 'models', name)
  if not os.path.isfile(path):
    raise WeightFileError(f'{name} is missing from the installed face-recognition-models package ({path})')
  return path


def _import_dlib():
  try:
    import dlib  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise WeightFileError('dlib is not installed (pip install dlib-bin; it is in requirements.txt)') from e
  return dlib


def check_uint8_images(images, name: str = 'images') -> np.ndarray:
  """(N, H, W, 3) uint8 RGB as a C-contiguous numpy array (dlib rejects strided views)."""
  arr = np.asarray(images)
  if arr.ndim != 4 or arr.shape[-1] != 3:
    raise MetricInputError(f'{name} must be (N, H, W, 3) RGB, got shape {arr.shape}')
  if arr.dtype != np.uint8:
    raise MetricInputError(f'{name} must be uint8 RGB (0-255), got dtype {arr.dtype}')
  return np.ascontiguousarray(arr)


@dataclasses.dataclass(frozen=True)
class Faces:
  """The largest face of each image: box (N, 4) as (left, top, right, bottom), landmarks (N, L, 2) as (x, y)
  pixels; rows of images without a face are NaN, and `found` (N,) says which rows hold a face."""
  boxes: np.ndarray
  landmarks: np.ndarray
  found: np.ndarray


class DlibFaceFinder:
  """dlib's HOG face detector + a shape predictor; keeps the largest face of each image.

  Frames where no face is found are retried with the image upsampled once (small faces) and then with a border
  added (faces that fill the frame, as in tight crops).
  """

  def __init__(self, num_landmarks: int = 68):
    if num_landmarks not in (5, 68):
      raise MetricInputError(f'dlib has 5- and 68-point shape predictors, not {num_landmarks}')
    dlib = _import_dlib()
    self.num_landmarks = num_landmarks
    self._dlib = dlib
    self._detector = dlib.get_frontal_face_detector()
    self._predictor = dlib.shape_predictor(dlib_model_path(f'shape_predictor_{num_landmarks}_face_landmarks.dat'))

  def _largest(self, image: np.ndarray):
    """The largest detection (a dlib rectangle in the image's own pixels), or None."""
    h, w = image.shape[:2]
    pad = max(h, w) // 4
    tries = ((image, 0, 0), (image, 1, 0),
             (np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode='edge'), 0, pad))
    for img, upsample, offset in tries:
      rects, _, _ = self._detector.run(img, upsample)
      if rects:
        r = max(rects, key=lambda r: r.width() * r.height())
        return self._dlib.rectangle(r.left() - offset, r.top() - offset, r.right() - offset, r.bottom() - offset)
    return None

  def shapes(self, images) -> list:
    """For each image the dlib full_object_detection of its largest face, or None."""
    images = check_uint8_images(images)
    out = []
    for image in images:  # dlib's detector is C++ per image; there is no batched form.
      rect = self._largest(image)
      out.append(None if rect is None else self._predictor(image, rect))
    return out

  def __call__(self, images) -> Faces:
    shapes = self.shapes(images)
    n = len(shapes)
    boxes = np.full((n, 4), np.nan, np.float32)
    marks = np.full((n, self.num_landmarks, 2), np.nan, np.float32)
    for i, s in enumerate(shapes):
      if s is not None:
        r = s.rect
        boxes[i] = (r.left(), r.top(), r.right(), r.bottom())
        marks[i] = [(p.x, p.y) for p in s.parts()]
    return Faces(boxes=boxes, landmarks=marks, found=np.array([s is not None for s in shapes], bool))


def five_points(landmarks68: np.ndarray) -> np.ndarray:
  """(N, 68, 2) iBUG landmarks -> (N, 5, 2): eye centres, nose tip, mouth corners (ArcFace's five points)."""
  lm = np.asarray(landmarks68, np.float32)
  return np.stack([lm[:, 36:42].mean(1), lm[:, 42:48].mean(1), lm[:, 30], lm[:, 48], lm[:, 54]], axis=1)


@jax.jit
def similarity_transforms(src: jax.Array, dst: jax.Array) -> jax.Array:
  """Least-squares similarity (rotation, uniform scale, translation; Umeyama 1991) mapping src onto dst points.

  src (N, P, 2), dst (P, 2) or (N, P, 2) -> (N, 2, 3) matrices A with dst ~ A[:, :2] @ src + A[:, 2].
  """
  dst = jnp.broadcast_to(dst, src.shape)
  mu_s, mu_d = src.mean(1, keepdims=True), dst.mean(1, keepdims=True)
  s, d = src - mu_s, dst - mu_d
  cov = jnp.einsum('npi,npj->nij', d, s) / src.shape[1]
  u, sv, vt = jnp.linalg.svd(cov)
  sign = jnp.sign(jnp.linalg.det(u) * jnp.linalg.det(vt))
  e = jnp.stack([jnp.ones_like(sign), sign], -1)  # Reflections are not similarities.
  rot = jnp.einsum('nij,nj,njk->nik', u, e, vt)
  var_s = jnp.sum(s ** 2, axis=(1, 2)) / src.shape[1]
  scale = jnp.sum(sv * e, -1) / var_s
  trans = mu_d[:, 0] - scale[:, None] * jnp.einsum('nij,nj->ni', rot, mu_s[:, 0])
  return jnp.concatenate([scale[:, None, None] * rot, trans[..., None]], axis=-1)


@functools.partial(jax.jit, static_argnames=('size',))
def warp_crops(images: jax.Array, transforms: jax.Array, size: int) -> jax.Array:
  """Crops (N, size, size, C) out of (N, H, W, C) images: output pixel p samples the input at A^-1 p (bilinear,
  pixel centres at integer coordinates as OpenCV's warpAffine, zero outside), for the (N, 2, 3) matrices A."""
  lin, t = transforms[:, :, :2], transforms[:, :, 2]
  inv = jnp.linalg.inv(lin)
  ys, xs = jnp.meshgrid(jnp.arange(size, dtype=jnp.float32), jnp.arange(size, dtype=jnp.float32), indexing='ij')
  out_pts = jnp.stack([xs, ys], -1).reshape(-1, 2)  # (size*size, 2) as (x, y).
  src = jnp.einsum('nij,nqj->nqi', inv, out_pts[None] - t[:, None, :])  # (N, Q, 2).

  def sample(image, pts):
    # map_coordinates takes (row, col); order 1 = bilinear; cval 0 outside.
    chans = [jax.scipy.ndimage.map_coordinates(image[..., c], [pts[:, 1], pts[:, 0]], order=1, mode='constant',
                                               cval=0.0) for c in range(image.shape[-1])]
    return jnp.stack(chans, -1)

  out = jax.vmap(sample)(images.astype(jnp.float32), src)
  return out.reshape(images.shape[0], size, size, images.shape[-1])


def align_faces(images, landmarks68: np.ndarray, size: int = 112, template: np.ndarray = ARCFACE_TEMPLATE_112):
  """Similarity-aligned (N, size, size, 3) float32 crops in [0, 255] of the faces given by (N, 68, 2) landmarks.

  Rows whose landmarks are NaN (no face) come back as zeros; the caller masks them. The template is given for
  112x112 and scaled to `size`.
  """
  pts = five_points(landmarks68)
  ok = np.all(np.isfinite(pts), axis=(1, 2))
  safe = np.where(ok[:, None, None], pts, ARCFACE_TEMPLATE_112[None])  # Identity-like stand-in for empty rows.
  dst = jnp.asarray(template, jnp.float32) * (size / 112.0)
  transforms = similarity_transforms(jnp.asarray(safe), dst)
  crops = warp_crops(jnp.asarray(images), transforms, size)
  return jnp.where(jnp.asarray(ok)[:, None, None, None], crops, 0.0)

