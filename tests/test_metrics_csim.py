"""CSIM: dlib's embedder separates the fixture identities; the ArcFace .onnx path equals torch output for output on
a small insightface-layout IResNet that the test builds and exports; face alignment is a true similarity warp."""
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from headgan_jax.errors import MetricInputError, WeightFileError
from headgan_jax.metrics import arcface, csim, face
from video_frames import read_frames


@pytest.fixture(scope='module')
def identity_frames(fixtures_dir):
  """(frames (N, 256, 256, 3) uint8, identity label per frame): 3 frames of driving.mp4, 2 of each demo clip,
  reference.png (a person of its own)."""
  frames, labels = [read_frames(fixtures_dir / 'driving.mp4', 3, 256, start=0, step=60)], [0, 0, 0]
  for k, path in enumerate(sorted((fixtures_dir / 'demo').glob('talk-0*.mp4'))):
    frames.append(read_frames(path, 2, 256, start=10, step=80))
    labels += [k + 1, k + 1]
  ref = np.asarray(Image.open(fixtures_dir / 'reference.png').convert('RGB').resize((256, 256), Image.BILINEAR))
  frames.append(ref[None])
  labels.append(99)
  return np.concatenate(frames), np.array(labels)


def test_dlib_csim_same_person_higher_than_different_people(identity_frames):
  frames, labels = identity_frames
  emb = csim.embeddings(frames)
  assert emb.shape == (len(frames), 128) and np.all(np.isfinite(emb))
  n = len(frames)
  i, j = np.triu_indices(n, 1)
  cos = np.asarray(csim.cosine_similarity(emb[i], emb[j]))
  same = labels[i] == labels[j]
  # Every same-person pair scores above every pair of different people (driving frames vs reference included).
  assert cos[same].min() > cos[~same].max(), (cos[same].min(), cos[~same].max())
  drv_vs_ref = csim.csim(emb[:3], np.repeat(emb[-1:], 3, 0))
  drv_vs_drv = csim.csim(emb[:2], emb[1:3])
  assert drv_vs_drv['csim'] > drv_vs_ref['csim'] and drv_vs_drv['pairs'] == 2


def test_embeddings_nan_rows_without_a_face(identity_frames):
  frames = identity_frames[0][:2].copy()
  frames[1] = 127  # A flat grey frame: no face.
  with pytest.warns(UserWarning, match='No face found in 1 of 2'):
    emb = csim.embeddings(frames)
  assert np.all(np.isfinite(emb[0])) and np.all(np.isnan(emb[1]))
  res = csim.csim(emb, emb)
  assert res == {'csim': pytest.approx(1.0, abs=1e-6), 'pairs': 1, 'no_face': 1}
  with pytest.raises(MetricInputError, match='uint8'):
    csim.embeddings(frames.astype(np.float32))
  with pytest.raises(MetricInputError, match=r'\(N, H, W, 3\)'):
    csim.embeddings(frames[0])


def test_similarity_alignment_recovers_a_known_transform():
  rng = np.random.default_rng(0)
  src = rng.uniform(20, 200, size=(3, 5, 2)).astype(np.float32)
  angle, scale, shift = 0.3, 0.7, np.array([5.0, -8.0])
  rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  dst = src[0] @ rot.T + shift
  a = np.asarray(face.similarity_transforms(jnp.asarray(src[:1]), jnp.asarray(dst)))
  np.testing.assert_allclose(a[0], np.concatenate([rot, shift[:, None]], 1), atol=1e-4)
  # The warp samples the image at A^-1 p: a crop of a linear ramp image is the ramp at the mapped points.
  h = w = 64
  ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
  image = np.stack([xs, ys, xs + ys], -1)[None]
  m = np.array([[[0.5, 0.0, -2.0], [0.0, 0.5, -3.0]]], np.float32)  # Crop pixel p <- image at 2 (p - t).
  crop = np.asarray(face.warp_crops(jnp.asarray(image), jnp.asarray(m), 16))
  py, px = np.mgrid[0:16, 0:16].astype(np.float32)
  np.testing.assert_allclose(crop[0, ..., 0], 2 * (px + 2), atol=1e-4)
  np.testing.assert_allclose(crop[0, ..., 1], 2 * (py + 3), atol=1e-4)


torch = pytest.importorskip('torch')


class _IBasicBlock(torch.nn.Module):
  """insightface's IBasicBlock: BN, conv3x3, BN, PReLU, conv3x3 (stride), BN, plus the (downsampled) input."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.bn1 = torch.nn.BatchNorm2d(cin, eps=1e-5)
    self.conv1 = torch.nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
    self.bn2 = torch.nn.BatchNorm2d(cout, eps=1e-5)
    self.prelu = torch.nn.PReLU(cout)
    self.conv2 = torch.nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
    self.bn3 = torch.nn.BatchNorm2d(cout, eps=1e-5)
    self.downsample = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          torch.nn.BatchNorm2d(cout, eps=1e-5))

  def forward(self, x):
    out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
    return out + self.downsample(x)


class _SmallIResNet(torch.nn.Module):
  """insightface's IResNet layout (stem conv-BN-PReLU, 4 stages of IBasicBlocks down to 7x7 at 112 input, BN,
  flatten, fc, BatchNorm1d "features") at 1/8 of the widths, one block per stage, 64-d embeddings."""

  def __init__(self, widths=(8, 16, 32, 64), dim=64, normalise_inside=False):
    super().__init__()
    self.normalise_inside = normalise_inside
    self.conv1 = torch.nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
    self.bn1 = torch.nn.BatchNorm2d(widths[0], eps=1e-5)
    self.prelu = torch.nn.PReLU(widths[0])
    blocks, cin = [], widths[0]
    for w in widths:
      blocks.append(_IBasicBlock(cin, w, 2))
      cin = w
    self.layers = torch.nn.Sequential(*blocks)
    self.bn2 = torch.nn.BatchNorm2d(cin, eps=1e-5)
    self.fc = torch.nn.Linear(cin * 7 * 7, dim)
    self.features = torch.nn.BatchNorm1d(dim, eps=1e-5)

  def forward(self, x):
    if self.normalise_inside:  # As the MXNet-converted models: (x - 127.5) * 0.0078125 in the graph.
      x = (x - 127.5) * 0.0078125
    x = self.bn2(self.layers(self.prelu(self.bn1(self.conv1(x)))))
    return self.features(self.fc(torch.flatten(x, 1)))


def _export(model, path):
  gen = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
        m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
        m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
        m.weight.copy_(1 + 0.1 * torch.randn(m.num_features, generator=gen))
        m.bias.copy_(0.1 * torch.randn(m.num_features, generator=gen))
  model.eval()
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    torch.onnx.export(model, torch.zeros(1, 3, 112, 112), str(path), input_names=['input.1'], output_names=['fc1'],
                      dynamic_axes={'input.1': {0: 'None'}, 'fc1': {0: 'None'}}, dynamo=False)
  return model


@pytest.fixture(scope='module')
def finder68():
  return face.DlibFaceFinder(68)


@pytest.mark.parametrize('normalise_inside', [False, True])
def test_arcface_onnx_output_for_output(tmp_path, identity_frames, finder68, normalise_inside):
  torch.manual_seed(1)
  model = _export(_SmallIResNet(normalise_inside=normalise_inside), tmp_path / 'small_r.onnx')
  emb = arcface.ArcFaceOnnx(tmp_path / 'small_r.onnx', finder=finder68)
  assert emb.normalises_itself == normalise_inside and emb.dim == 64 and emb.input_size == 112
  frames = identity_frames[0][[0, 1, 3, -1]]
  ours = csim.embeddings(frames, emb)
  # The reference: torch on the same aligned crops, normalised the way insightface feeds the network.
  faces = finder68(frames)
  assert faces.found.all()
  crops = torch.from_numpy(np.array(face.align_faces(frames, faces.landmarks, 112))).permute(0, 3, 1, 2)
  with torch.no_grad():
    ref = model(crops if normalise_inside else (crops - 127.5) / 127.5).numpy()
  assert np.std(ref) > 0.1
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_arcface_errors(tmp_path, finder68):
  with pytest.raises(WeightFileError, match='does not exist'):
    arcface.ArcFaceOnnx(tmp_path / 'absent.onnx', finder=finder68)
  bad = tmp_path / 'bad.onnx'
  bad.write_bytes(b'garbage')
  with pytest.raises(WeightFileError, match='cannot be loaded'):
    arcface.ArcFaceOnnx(bad, finder=finder68)
