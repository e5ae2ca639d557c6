"""MediaPipe's face detector, 468-point face mesh and selfie segmentation, run by LiteRT, batched over frames.

Stand-in for the paper's RetinaFace dense 3D regressor (~1K points), which cannot be had offline: the models of the
`mediapipe==0.10.14` wheel (Apache-2.0), run with `ai-edge-litert` instead of mediapipe's own graph runner, because
mediapipe 0.10.14 pins protobuf < 5, which forces `grain` back to 0.2.11 beside tensorflow-datasets, while LiteRT
works with current protobuf. What is used of the wheel (`fetch` extracts it, checking each file's sha256):

  face_detection_short_range.tflite   BlazeFace: (B, 128, 128, 3) in [-1, 1] -> 896 anchors x (box, 6 key points)
  face_landmark.tflite                (B, 192, 192, 3) in [0, 1] -> 468 x (x, y, z) crop pixels + face-presence logit
  selfie_segmentation.tflite          (B, 256, 256, 3) in [0, 1] -> (B, 256, 256) person probability
  tasks/python/vision/face_landmarker.py   the mesh topology: FACE_LANDMARKS_TESSELATION in consecutive triples
                                      gives the 852 triangles; lips, eyes, brows and face oval as edge lists

The glue follows mediapipe's own face-mesh graph: SSD anchors and score-weighted non-maximum suppression for the
detector; the landmark ROI is the detection box made square (long side) x 1.5, rotated so that the eyes are level;
landmarks are mapped back through that rotated crop. `landmarks(..., refine=True)` runs the model a second time on
the ROI computed from the first pass's points (what mediapipe does from frame to frame in tracking mode).
Image resampling (letterbox, rotated crops) is Pillow's antialiased C code; the landmark and segmentation models
are called on batches of frames (the detector's graph only takes one frame per call).

The files live in `config.track.models_dir` (default ~/.cache/headgan_jax/mediapipe-0.10.14); `scripts/setup.sh`
runs `python -m headgan_jax.tracking.facemesh fetch`, which downloads the wheel with pip (no install: nothing of
mediapipe is imported) or takes `--wheel PATH` / an installed mediapipe package.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from typing import NamedTuple

import numpy as np
from PIL import Image

from headgan_jax.errors import WeightFileError
from headgan_jax.files import file_sha256

MEDIAPIPE_VERSION = '0.10.14'
DEFAULT_MODELS_DIR = os.path.join('~', '.cache', 'headgan_jax', f'mediapipe-{MEDIAPIPE_VERSION}')
# File name in the models folder -> (member of the wheel, sha256).
FILES = {
    'face_detection_short_range.tflite': (
        'mediapipe/modules/face_detection/face_detection_short_range.tflite',
        'bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8'),
    'face_landmark.tflite': (
        'mediapipe/modules/face_landmark/face_landmark.tflite',
        '1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814'),
    'selfie_segmentation.tflite': (
        'mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite',
        '9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c'),
    'face_landmarker.py': (
        'mediapipe/tasks/python/vision/face_landmarker.py',
        '7668789894f70e7074ecf1d6076a7b7ea7b6c740202766fc65af9b2b5079195e'),
    'LICENSE': (f'mediapipe-{MEDIAPIPE_VERSION}.dist-info/LICENSE',
                '8707eef0533987efc5b155d64761eeb6e20793f50b9bd1a68dad1cf4719d0ed8'),
}
NUM_POINTS = 468
DETECTOR_SIZE = 128
LANDMARK_SIZE = 192
SEGMENTER_SIZE = 256
# Mesh points that mediapipe uses to level the landmark ROI: the outer eye corners (subject's right, left).
EYE_CORNERS = (33, 263)


def default_models_dir(models_dir: str = '') -> str:
  return os.path.expanduser(models_dir or DEFAULT_MODELS_DIR)


# ----------------------------------------------------------------------------------------------------------------
# Getting the files.

def _extract_from_wheel(wheel: str, dest: str) -> None:
  try:
    with zipfile.ZipFile(wheel) as z:
      names = set(z.namelist())
      for name, (member, _) in FILES.items():
        if member not in names:
          raise WeightFileError(f'{wheel}: has no {member}; is it the mediapipe {MEDIAPIPE_VERSION} wheel?')
        with z.open(member) as src, open(os.path.join(dest, name), 'wb') as dst:
          shutil.copyfileobj(src, dst)
  except zipfile.BadZipFile as e:
    raise WeightFileError(f'{wheel}: not a readable wheel (zip) file: {e}') from e


def _copy_from_installed(dest: str) -> bool:
  """Copies the files from an installed mediapipe package (without importing it); False when none is installed."""
  spec = importlib.util.find_spec('mediapipe')
  if spec is None or not spec.submodule_search_locations:
    return False
  root = os.path.dirname(list(spec.submodule_search_locations)[0])
  for name, (member, _) in FILES.items():
    src = os.path.join(root, member)
    if name == 'LICENSE' and not os.path.exists(src):
      continue
    if not os.path.exists(src):
      return False
    shutil.copyfile(src, os.path.join(dest, name))
  return True


def _download_wheel(folder: str) -> str:
  """The platform-independent parts of the wheel are what we need: ask pip for the manylinux x86_64 build."""
  cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', '--disable-pip-version-check',
         '--platform', 'manylinux2014_x86_64', '--python-version', '3.11', '--implementation', 'cp',
         f'mediapipe=={MEDIAPIPE_VERSION}', '-d', folder]
  run = subprocess.run(cmd, capture_output=True, text=True)
  wheels = [f for f in os.listdir(folder) if f.endswith('.whl')]
  if run.returncode != 0 or not wheels:
    raise WeightFileError(f'pip could not download mediapipe=={MEDIAPIPE_VERSION} (needed for its model files): '
                          f'{run.stderr.strip()[-500:]}')
  return os.path.join(folder, wheels[0])


def fetch(models_dir: str = '', wheel: str = '') -> str:
  """Puts the model files into models_dir (sha256-checked, atomically); returns the folder. No-op when present."""
  dest = default_models_dir(models_dir)
  if _missing_files(dest) == []:
    return dest
  parent = os.path.dirname(os.path.abspath(dest))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix='.tmp-mediapipe-')
  try:
    if wheel:
      _extract_from_wheel(wheel, tmp)
    elif not _copy_from_installed(tmp):
      with tempfile.TemporaryDirectory() as download:
        _extract_from_wheel(_download_wheel(download), tmp)
    for name, (_, sha) in FILES.items():
      path = os.path.join(tmp, name)
      if name == 'LICENSE' and not os.path.exists(path):
        continue
      if file_sha256(path) != sha:
        raise WeightFileError(f'{name} from mediapipe {MEDIAPIPE_VERSION} has sha256 {file_sha256(path)}, '
                              f'expected {sha}.')
    topology = topology_from_source(os.path.join(tmp, 'face_landmarker.py'))
    np.savez(os.path.join(tmp, 'topology.npz'), **dataclasses.asdict(topology))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the files are public.
    if os.path.isdir(dest):
      shutil.rmtree(dest)
    os.replace(tmp, dest)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return dest


def _missing_files(folder: str) -> list[str]:
  need = [n for n in FILES if n != 'LICENSE'] + ['topology.npz']
  return [n for n in need if not os.path.isfile(os.path.join(folder, n))]


def check_models_dir(models_dir: str = '') -> str:
  """The models folder, or WeightFileError saying how to get the files."""
  folder = default_models_dir(models_dir)
  missing = _missing_files(folder)
  if missing:
    raise WeightFileError(
        f'MediaPipe {MEDIAPIPE_VERSION} model files missing in {folder}: {", ".join(missing)}. Run '
        f'`python -m headgan_jax.tracking.facemesh fetch{" --dir " + models_dir if models_dir else ""}` '
        f'(scripts/setup.sh does it; add --wheel PATH to use a downloaded mediapipe wheel).')
  return folder


# ----------------------------------------------------------------------------------------------------------------
# Mesh topology.

@dataclasses.dataclass(frozen=True)
class MeshTopology:
  """Index arrays of the 468-point mesh (mediapipe's FaceLandmarksConnections)."""
  triangles: np.ndarray  # (852, 3)
  lips: np.ndarray  # (E, 2) edges of the outer and inner lip contours
  face_oval: np.ndarray  # (E, 2)
  left_eye: np.ndarray
  right_eye: np.ndarray
  left_eyebrow: np.ndarray
  right_eyebrow: np.ndarray


_TOPOLOGY_LISTS = {'triangles': 'FACE_LANDMARKS_TESSELATION', 'lips': 'FACE_LANDMARKS_LIPS',
                   'face_oval': 'FACE_LANDMARKS_FACE_OVAL', 'left_eye': 'FACE_LANDMARKS_LEFT_EYE',
                   'right_eye': 'FACE_LANDMARKS_RIGHT_EYE', 'left_eyebrow': 'FACE_LANDMARKS_LEFT_EYEBROW',
                   'right_eyebrow': 'FACE_LANDMARKS_RIGHT_EYEBROW'}


def topology_from_source(path: str) -> MeshTopology:
  """Parses the Connection(start, end) lists out of mediapipe's face_landmarker.py (read as text, not imported)."""
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read())
  lists = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(node.value, ast.List):
      edges = [(int(e.args[0].value), int(e.args[1].value)) for e in node.value.elts
               if isinstance(e, ast.Call) and len(e.args) == 2]
      lists[node.target.id] = np.asarray(edges, np.int32).reshape(-1, 2)
  out = {}
  for field, name in _TOPOLOGY_LISTS.items():
    if name not in lists:
      raise WeightFileError(f'{path}: no {name} list found.')
    out[field] = lists[name]
  edges = out['triangles']
  if len(edges) % 3:
    raise WeightFileError(f'{path}: FACE_LANDMARKS_TESSELATION has {len(edges)} edges, not a multiple of 3.')
  tri = edges.reshape(-1, 3, 2)
  closed = (tri[:, 0, 1] == tri[:, 1, 0]) & (tri[:, 1, 1] == tri[:, 2, 0]) & (tri[:, 2, 1] == tri[:, 0, 0])
  if not closed.all():
    raise WeightFileError(f'{path}: FACE_LANDMARKS_TESSELATION is not a list of closed triangles.')
  out['triangles'] = tri[:, :, 0].copy()
  return MeshTopology(**out)


def load_topology(models_dir: str = '') -> MeshTopology:
  folder = check_models_dir(models_dir)
  with np.load(os.path.join(folder, 'topology.npz')) as z:
    return MeshTopology(**{k: z[k].astype(np.int32) for k in _TOPOLOGY_LISTS})


# ----------------------------------------------------------------------------------------------------------------
# Image resampling (Pillow).

def warp_affine(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
  """Bilinear (size, size, 3) uint8 sample of image (H, W, 3) uint8: output pixel centre (u + .5, v + .5) reads the
  source at matrix @ (u + .5, v + .5, 1) (pixel centres at + .5), black outside. Pillow's C resampler: on 2 CPU cores
  it is ~1.4x faster than a jitted JAX gather over a batch, and ~4x faster for the antialiased resizes below."""
  return np.asarray(Image.fromarray(image).transform((size, size), Image.Transform.AFFINE, tuple(matrix.ravel()),
                                                      resample=Image.Resampling.BILINEAR))


def roi_matrices(centres: np.ndarray, sizes: np.ndarray, angles: np.ndarray, out_size: int) -> np.ndarray:
  """(B, 2, 3) maps from a rotated square crop of out_size px (pixel coords) to the source image: a crop of side
  sizes[b] px centred at centres[b] (x, y), its x axis along (cos a, sin a) in the image (y down)."""
  c, s = np.cos(angles), np.sin(angles)
  k = sizes / out_size
  m = np.zeros((len(sizes), 2, 3), np.float32)
  m[:, 0, 0], m[:, 0, 1] = k * c, -k * s
  m[:, 1, 0], m[:, 1, 1] = k * s, k * c
  half = out_size / 2.0
  m[:, 0, 2] = centres[:, 0] - half * (m[:, 0, 0] + m[:, 0, 1])
  m[:, 1, 2] = centres[:, 1] - half * (m[:, 1, 0] + m[:, 1, 1])
  return m


def apply_affine(matrices: np.ndarray, points: np.ndarray) -> np.ndarray:
  """(B, 2, 3) affine maps applied to (B, N, 2) points."""
  return np.einsum('bij,bnj->bni', matrices[:, :, :2], points) + matrices[:, None, :, 2]


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
  """(H, W, 3) uint8 -> (size, size, 3) uint8: long side scaled to `size` (antialiased), centred, the rest black
  (mediapipe's keep-aspect-ratio detector input)."""
  h, w = image.shape[:2]
  scale, left, top = letterbox_geometry(h, w, size)
  nh, nw = max(1, round(h * size / max(h, w))), max(1, round(w * size / max(h, w)))
  out = np.zeros((size, size, 3), np.uint8)
  out[top:top + nh, left:left + nw] = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
  return out


def resize(image: np.ndarray, size: int, box=None) -> np.ndarray:
  """(H, W, 3) uint8 -> (size, size, 3) uint8, antialiased bilinear, of the region box = (x0, y0, x1, y1) (whole
  image by default; it must lie inside the image)."""
  return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR, box=box))


def letterbox_geometry(height: int, width: int, size: int) -> tuple[float, float, float]:
  """(scale, left, top) of `_letterbox`: letterbox pixel = scale * image pixel + (left, top)."""
  nh, nw = max(1, round(height * size / max(height, width))), max(1, round(width * size / max(height, width)))
  return max(nw / width, nh / height), (size - nw) // 2, (size - nh) // 2


# ----------------------------------------------------------------------------------------------------------------
# Detector decoding.

def ssd_anchors() -> np.ndarray:
  """(896, 2) anchor centres of BlazeFace short-range in [0, 1]: a 16x16 grid with 2 anchors per cell (stride 8),
  then an 8x8 grid with 6 (three stride-16 layers of 2); every anchor has unit size (fixed_anchor_size)."""
  out = []
  for grid, per_cell in ((16, 2), (8, 6)):
    centres = (np.arange(grid) + 0.5) / grid
    yy, xx = np.meshgrid(centres, centres, indexing='ij')
    cells = np.stack([xx.ravel(), yy.ravel()], 1)
    out.append(np.repeat(cells, per_cell, axis=0))
  return np.concatenate(out).astype(np.float32)


class Detections(NamedTuple):
  """Faces per frame after non-maximum suppression, in source pixels, padded to K per frame, largest box first."""
  boxes: np.ndarray  # (B, K, 4) float32: x0, y0, x1, y1
  keypoints: np.ndarray  # (B, K, 6, 2): right eye, left eye, nose tip, mouth centre, right ear, left ear
  scores: np.ndarray  # (B, K) float32, 0 for padding
  count: np.ndarray  # (B,) int32 faces found per frame


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  x0 = np.maximum(box[0], boxes[:, 0])
  y0 = np.maximum(box[1], boxes[:, 1])
  x1 = np.minimum(box[2], boxes[:, 2])
  y1 = np.minimum(box[3], boxes[:, 3])
  inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
  area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
  return inter / np.maximum(area(box) + area(boxes) - inter, 1e-12)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float):
  """mediapipe's WEIGHTED non-maximum suppression of one frame's candidates: each cluster (IoU > threshold with the
  best remaining box) becomes its score-weighted mean box and key points, with the best score."""
  order = np.argsort(-scores)
  boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
  alive = np.ones(len(scores), bool)
  out_b, out_k, out_s = [], [], []
  for i in range(len(scores)):  # Loops over clusters: a handful per frame.
    if not alive[i]:
      continue
    member = alive & (_iou(boxes[i], boxes) > iou_threshold)
    member[i] = True
    w = scores[member] / scores[member].sum()
    out_b.append(np.einsum('n,nc->c', w, boxes[member]))
    out_k.append(np.einsum('n,nkc->kc', w, keypoints[member]))
    out_s.append(scores[i])
    alive &= ~member
  return np.asarray(out_b, np.float32), np.asarray(out_k, np.float32), np.asarray(out_s, np.float32)


# ----------------------------------------------------------------------------------------------------------------
# The models.

def _sigmoid(logits: np.ndarray) -> np.ndarray:
  return (1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100.0, 100.0)))).astype(np.float32)


class _Runner:
  """A LiteRT interpreter whose batch size follows the input (re-allocated only when it changes)."""

  def __init__(self, path: str, num_threads: int):
    from ai_edge_litert.interpreter import Interpreter
    try:
      self._interp = Interpreter(model_path=path, num_threads=num_threads)
    except (ValueError, RuntimeError) as e:
      raise WeightFileError(f'{path}: LiteRT cannot load this model: {e}') from e
    self._input = self._interp.get_input_details()[0]
    self._outputs = self._interp.get_output_details()
    self._batch = None
    self.path = path

  def __call__(self, x: np.ndarray) -> list[np.ndarray]:
    x = np.ascontiguousarray(x, np.float32)
    if self._batch != x.shape[0]:
      self._interp.resize_tensor_input(self._input['index'], list(x.shape))
      self._interp.allocate_tensors()
      self._batch = x.shape[0]
    self._interp.set_tensor(self._input['index'], x)
    self._interp.invoke()
    return [self._interp.get_tensor(o['index']) for o in self._outputs]


@dataclasses.dataclass(frozen=True)
class FaceMeshSettings:
  """The fields of config.track the models use."""
  models_dir: str = ''
  num_threads: int = 2
  min_detection_score: float = 0.5  # mediapipe's min_detection_confidence.
  nms_iou: float = 0.3  # mediapipe's min_suppression_threshold.
  roi_scale: float = 1.5  # Landmark ROI = detection / landmark box (square, long side) x this (mediapipe).
  min_presence: float = 0.5  # Face-presence probability below which landmarks are rejected (mediapipe's tracking).
  batch_size: int = 32  # Frames per model call.
  max_faces: int = 4

  @classmethod
  def from_config(cls, config) -> 'FaceMeshSettings':
    t = config.track
    return cls(models_dir=t.models_dir, num_threads=int(t.num_threads), min_detection_score=float(t.min_detection_score),
               nms_iou=float(t.nms_iou), roi_scale=float(t.roi_scale), min_presence=float(t.min_presence),
               batch_size=int(t.model_batch), max_faces=int(t.max_faces))


class FaceMesh:
  """The three models, loaded once; every method takes a batch of frames and batches the model calls."""

  def __init__(self, settings: FaceMeshSettings = FaceMeshSettings()):
    folder = check_models_dir(settings.models_dir)
    self.settings = settings
    self.folder = folder
    self.topology = load_topology(settings.models_dir)
    self._detector = _Runner(os.path.join(folder, 'face_detection_short_range.tflite'), settings.num_threads)
    self._landmarker = _Runner(os.path.join(folder, 'face_landmark.tflite'), settings.num_threads)
    self._segmenter = _Runner(os.path.join(folder, 'selfie_segmentation.tflite'), settings.num_threads)
    self._anchors = ssd_anchors()

  def _batches(self, n: int):
    step = max(1, self.settings.batch_size)
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]

  def detect(self, frames: np.ndarray) -> Detections:
    """Faces in frames (B, H, W, 3) uint8, largest box first (boxes in source pixels)."""
    b, h, w, _ = frames.shape
    raw_boxes, raw_scores = [], []
    # The detector's graph reshapes with a fixed batch of 1 (a resized batch gives wrong boxes): one call per frame.
    for frame in frames:
      boxes, scores = self._detector(letterbox(frame, DETECTOR_SIZE)[None] / np.float32(127.5) - 1.0)
      raw_boxes.append(boxes)
      raw_scores.append(scores[..., 0])
    raw = np.concatenate(raw_boxes)
    scores = _sigmoid(np.concatenate(raw_scores))
    a = self._anchors
    centre = raw[..., 0:2] / DETECTOR_SIZE + a
    size = raw[..., 2:4] / DETECTOR_SIZE
    boxes = np.concatenate([centre - size / 2, centre + size / 2], -1) * DETECTOR_SIZE  # Letterbox pixels.
    kps = (raw[..., 4:16].reshape(b, -1, 6, 2) / DETECTOR_SIZE + a[:, None]) * DETECTOR_SIZE
    scale, left, top = letterbox_geometry(h, w, DETECTOR_SIZE)
    offset = np.array([left, top], np.float32)
    boxes = (boxes - np.tile(offset, 2)) / scale
    kps = (kps - offset) / scale
    k = self.settings.max_faces
    out = Detections(np.zeros((b, k, 4), np.float32), np.zeros((b, k, 6, 2), np.float32),
                     np.zeros((b, k), np.float32), np.zeros((b,), np.int32))
    for i in range(b):  # Per frame only the few candidates above the threshold are touched.
      keep = scores[i] >= self.settings.min_detection_score
      if not keep.any():
        continue
      fb, fk, fs = weighted_nms(boxes[i, keep], kps[i, keep], scores[i, keep], self.settings.nms_iou)
      area = (fb[:, 2] - fb[:, 0]) * (fb[:, 3] - fb[:, 1])
      order = np.argsort(-area)[:k]
      n = len(order)
      out.boxes[i, :n], out.keypoints[i, :n], out.scores[i, :n] = fb[order], fk[order], fs[order]
      out.count[i] = len(fs)
    return out

  def roi_from_detection(self, boxes: np.ndarray, keypoints: np.ndarray):
    """(centres (B, 2), sizes (B,), angles (B,)) of mediapipe's landmark ROI from one detection per frame."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sizes = np.max(boxes[:, 2:] - boxes[:, :2], axis=1) * self.settings.roi_scale
    d = keypoints[:, 1] - keypoints[:, 0]
    return centres, sizes, np.arctan2(d[:, 1], d[:, 0])

  def roi_from_landmarks(self, points: np.ndarray):
    """The same from (B, 468, 2+) landmarks: their bounding box, levelled on the outer eye corners."""
    lo, hi = points[..., :2].min(1), points[..., :2].max(1)
    d = points[:, EYE_CORNERS[1], :2] - points[:, EYE_CORNERS[0], :2]
    return (lo + hi) / 2, np.max(hi - lo, axis=1) * self.settings.roi_scale, np.arctan2(d[:, 1], d[:, 0])

  def landmarks_in_roi(self, images: np.ndarray, centres, sizes, angles):
    """468 points (B, 468, 3) in image pixels (z in the same scale, larger towards the camera) and face-presence
    probabilities (B,) for rotated square ROIs of images (B, H, W, 3) uint8."""
    m = roi_matrices(np.asarray(centres, np.float32), np.asarray(sizes, np.float32), np.asarray(angles, np.float32),
                     LANDMARK_SIZE)
    points, presence = [], []
    for sl in self._batches(len(images)):
      crops = np.stack([warp_affine(image, mm, LANDMARK_SIZE) for image, mm in zip(images[sl], m[sl])])
      raw, flag = self._landmarker(crops / np.float32(255.0))
      points.append(raw.reshape(-1, NUM_POINTS, 3))
      presence.append(_sigmoid(flag.reshape(-1)))
    pts = np.concatenate(points)
    xy = apply_affine(m, pts[..., :2])
    z = -pts[..., 2:3] * (np.asarray(sizes, np.float32) / LANDMARK_SIZE)[:, None, None]  # Model z grows away.
    return np.concatenate([xy, z], -1).astype(np.float32), np.concatenate(presence).astype(np.float32)

  def landmarks(self, images: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray, refine: bool = True):
    """Landmarks from one detection per image (boxes (B, 4), keypoints (B, 6, 2)); with `refine`, a second pass on
    the ROI of the first pass's points."""
    points, presence = self.landmarks_in_roi(images, *self.roi_from_detection(boxes, keypoints))
    if refine:
      points, presence = self.landmarks_in_roi(images, *self.roi_from_landmarks(points))
    return points, presence

  def segment(self, crops: np.ndarray) -> np.ndarray:
    """Person probability (B, S, S) float32 in [0, 1] of square crops (B, S, S, 3) uint8 (resized to 256 and back)."""
    b, s = crops.shape[0], crops.shape[1]
    if s != SEGMENTER_SIZE:
      crops = np.stack([resize(c, SEGMENTER_SIZE) for c in crops])
    out = np.concatenate([self._segmenter(crops[sl] / np.float32(255.0))[0] for sl in self._batches(b)])[..., 0]
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    if s != SEGMENTER_SIZE:
      out = np.stack([np.asarray(Image.fromarray(m, mode='F').resize((s, s), Image.Resampling.BILINEAR)) for m in out])
    return out


if __name__ == '__main__':  # The command moved (headgan_jax/commands/facemesh.py); this spelling still runs it.
  import runpy
  runpy.run_module('headgan_jax.commands.facemesh', run_name='__main__', alter_sys=True)
