"""CSIM: cosine similarity of identity embeddings of generated frames and ground-truth / reference frames.

The paper uses ArcFace [10] (`arcface.ArcFaceOnnx`, the user's insightface `.onnx` file). The offline default is
dlib's 128-d face-recognition ResNet (`DlibEmbedder`; its files come with `face-recognition-models`), which stands
in for it: its numbers are not comparable with the paper's, and every result names the embedder that produced it.

`embeddings(images)` finds and aligns the largest face of each uint8 RGB image itself; rows of images without a face
are NaN (counted in a warning). `csim(a, b)` averages the row-wise cosine over pairs where both rows have a face.
"""
from __future__ import annotations

import functools
import warnings
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

from headgan_jax.errors import ConfigError, MetricInputError
from headgan_jax.metrics import face as face_lib


class Embedder(Protocol):
  """Maps (N, H, W, 3) uint8 RGB images to (N, dim) identity embeddings, NaN rows where no face is found."""
  name: str
  dim: int

  def __call__(self, images: np.ndarray) -> np.ndarray:
    ...


class DlibEmbedder:
  """dlib's face-recognition ResNet (128-d; LFW 99.38%): HOG detector, 5-point alignment, 150x150 chip."""
  dim = 128
  name = 'dlib face-recognition ResNet (128-d, dlib_face_recognition_resnet_model_v1)'

  def __init__(self, num_jitters: int = 0):
    self._finder = face_lib.DlibFaceFinder(5)
    dlib = face_lib._import_dlib()  # pylint: disable=protected-access
    self._dlib = dlib
    self._net = dlib.face_recognition_model_v1(face_lib.dlib_model_path('dlib_face_recognition_resnet_model_v1.dat'))
    self.num_jitters = int(num_jitters)

  def __call__(self, images) -> np.ndarray:
    images = face_lib.check_uint8_images(images)
    shapes = self._finder.shapes(images)
    emb = np.full((len(images), self.dim), np.nan, np.float32)
    found = [i for i, s in enumerate(shapes) if s is not None]
    if found:
      batch_faces = []
      for i in found:
        dets = self._dlib.full_object_detections()
        dets.append(shapes[i])
        batch_faces.append(dets)
      # dlib's batched call: one network pass over all chips.
      out = self._net.compute_face_descriptor([images[i] for i in found], batch_faces, self.num_jitters)
      emb[found] = np.array([np.asarray(v[0]) for v in out], np.float32)
    return emb


@functools.lru_cache(maxsize=1)
def default_embedder() -> DlibEmbedder:
  """The offline default (loaded once per process: reading dlib's model files takes a while)."""
  return DlibEmbedder()


def embedder_from_config(cfg) -> Embedder:
  """`cfg.embedder` 'dlib' (default) or 'arcface' (with `cfg.arcface_model`, an insightface .onnx file)."""
  kind = cfg.get('embedder', 'dlib')
  if kind == 'dlib':
    return default_embedder()
  if kind == 'arcface':
    from headgan_jax.metrics.arcface import ArcFaceOnnx  # pylint: disable=import-outside-toplevel
    if not cfg.get('arcface_model', ''):
      raise ConfigError("embedder 'arcface' needs arcface_model: the path of an insightface recognition .onnx file")
    return ArcFaceOnnx(cfg.arcface_model)
  raise ConfigError(f"embedder must be 'dlib' or 'arcface', got {kind!r}")


def embeddings(images, embedder: Embedder | None = None) -> np.ndarray:
  """(N, D) identity embeddings of (N, H, W, 3) uint8 RGB images (whole frames or crops).

  The embedder finds and aligns the largest face of each image; rows of images without a face are NaN, and a
  warning says how many. `embedder` defaults to dlib's ResNet (`default_embedder()`).
  """
  images = face_lib.check_uint8_images(images)
  embedder = embedder if embedder is not None else default_embedder()
  emb = np.asarray(embedder(images), np.float32)
  if emb.shape != (len(images), embedder.dim):
    raise MetricInputError(f'{embedder.name} returned shape {emb.shape} for {len(images)} images')
  missing = int(np.sum(~np.all(np.isfinite(emb), axis=1)))
  if missing:
    warnings.warn(f'No face found in {missing} of {len(images)} images: their embeddings are NaN '
                  f'({embedder.name}).', UserWarning, stacklevel=2)
  return emb


@jax.jit
def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
  """Row-wise cosine similarity of (N, D) embeddings (NaN rows give NaN)."""
  a = a / jnp.linalg.norm(a, axis=-1, keepdims=True)
  b = b / jnp.linalg.norm(b, axis=-1, keepdims=True)
  return jnp.sum(a * b, axis=-1)


def csim(emb_a, emb_b) -> dict[str, float]:
  """Mean cosine similarity of row pairs where both have a face; with the pair count and the rows skipped."""
  a, b = np.asarray(emb_a, np.float32), np.asarray(emb_b, np.float32)
  if a.shape != b.shape or a.ndim != 2:
    raise MetricInputError(f'CSIM needs two (N, D) embedding arrays of one shape, got {a.shape} and {b.shape}')
  cos = np.asarray(cosine_similarity(a, b), np.float64)
  valid = np.isfinite(cos)
  return {'csim': float(cos[valid].mean()) if valid.any() else float('nan'), 'pairs': int(valid.sum()),
          'no_face': int((~valid).sum())}
