"""ArcFace (Deng et al. [10], the paper's CSIM network) from insightface's `.onnx` recognition models.

insightface distributes its recognition networks (e.g. `w600k_r50.onnx` of buffalo_l, `glintr100.onnx` of
antelopev2) as ONNX files that the user downloads; none can be had offline here, so this embedder runs the user's
file with onnxruntime. Preprocessing follows insightface's `ArcFaceONNX`: the face is similarity-aligned by its five
points to the 112x112 `arcface_dst` template, fed as RGB NCHW, and normalised as (x - 127.5) / 127.5 unless the
graph normalises by itself (a Sub and a Mul among its first 8 nodes, then mean 0 and std 1: insightface's rule).
The 68-point landmarks that give the five points come from dlib (`face.DlibFaceFinder`).
"""
from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np

from headgan_jax.errors import WeightFileError
from headgan_jax.metrics import face as face_lib


class ArcFaceOnnx:
  """Identity embeddings (N, D) of the largest face of uint8 RGB images, by an insightface ArcFace `.onnx` file."""

  def __init__(self, path: str | os.PathLike, batch_size: int = 32, finder: face_lib.DlibFaceFinder | None = None):
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
      raise WeightFileError(f'ArcFace model {path} does not exist (an insightface recognition .onnx file, e.g. '
                            'w600k_r50.onnx from buffalo_l, is expected there)')
    try:
      import onnx  # pylint: disable=import-outside-toplevel
      import onnxruntime  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise WeightFileError('ArcFace .onnx models need onnx and onnxruntime (pip install onnx onnxruntime; they '
                            'are in requirements.txt)') from e
    try:
      graph = onnx.load(path).graph
      self._session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    except Exception as e:  # onnx / onnxruntime raise their own types on a corrupt file.
      raise WeightFileError(f'ArcFace model {path} cannot be loaded as an ONNX model: {e}') from e
    inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
    shape = inputs[0].shape if len(inputs) == 1 else None
    if shape is None or len(shape) != 4 or shape[1] != 3 or not isinstance(shape[2], int) or shape[2] != shape[3]:
      raise WeightFileError(f'ArcFace model {path}: expected one input of shape (N, 3, S, S), got '
                            f'{[i.shape for i in inputs]}')
    out_shape = outputs[0].shape
    if len(out_shape) != 2 or not isinstance(out_shape[1], int):
      raise WeightFileError(f'ArcFace model {path}: expected an (N, D) embedding output, got {out_shape}')
    ops = [n.op_type for n in graph.node[:8]]
    self.normalises_itself = 'Sub' in ops and 'Mul' in ops
    self.input_mean, self.input_std = (0.0, 1.0) if self.normalises_itself else (127.5, 127.5)
    self.input_size = int(shape[2])
    self.dim = int(out_shape[1])
    self.batch_size = int(batch_size)
    self.path = path
    self.name = f'ArcFace ({os.path.basename(path)}, insightface ONNX)'
    self._input_name = inputs[0].name
    self._finder = finder if finder is not None else face_lib.DlibFaceFinder(68)

  def embed_aligned(self, crops) -> np.ndarray:
    """(N, D) embeddings of aligned (N, S, S, 3) RGB crops with values in [0, 255]."""
    x = (jnp.asarray(crops, jnp.float32) - self.input_mean) / self.input_std
    x = np.asarray(jnp.transpose(x, (0, 3, 1, 2)))
    out = [self._session.run(None, {self._input_name: x[i:i + self.batch_size]})[0]
           for i in range(0, len(x), self.batch_size)]
    return np.concatenate(out, axis=0).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)

  def __call__(self, images) -> np.ndarray:
    images = face_lib.check_uint8_images(images)
    faces = self._finder(images)
    emb = np.full((len(images), self.dim), np.nan, np.float32)
    if faces.found.any():
      # Aligns every row (same shapes whatever is found, so the warp compiles once per batch size).
      crops = np.asarray(face_lib.align_faces(images, faces.landmarks, self.input_size))
      emb[faces.found] = self.embed_aligned(crops[faces.found])
    return emb
