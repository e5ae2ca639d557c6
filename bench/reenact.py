"""Reenactment throughput: the whole path (decode -> track -> render x_t -> G -> encode, plus the audio features)
and G alone at batch 1 and batch 8, at the paper's config (256x256, the authors' widths) by default.

  python bench/reenact.py [--config configs/paper.py] [--frames 16] [--repeats 3] [--checkpoint W]

G alone: frames/s of the jitted G call `Reenactor` makes (x_{t-k:t}, y_ref, x_ref, h^(a) -> y~), median of
--repeats timed calls after one that compiles. The whole path: `Reenactor.run` on the first --frames frames of
../shared/fixtures/driving.mp4 (cut without re-encoding) with ../shared/fixtures/reference.png, batch 8, timed on its
second run (the first compiles the fit, the renderer and G).

Without --checkpoint, G's weights are random arrays of the config's shapes (no trained paper-size checkpoint exists
here; G's cost does not depend on its weight values), and the tracker uses the embedded 3DMM with raw audio features.
Prints figures, ends with one JSON line. On a shared machine timings are noisy: compare figures from one run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np


from headgan_jax import host_malloc  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, '..', '..', 'shared', 'fixtures')


def random_variables(config, seed: int = 0):
  """G's variables with the config's shapes, random values (0.02-scaled normal, spectral-norm vectors unit)."""
  import jax
  from headgan_jax.nn import generator as gen_lib
  g = gen_lib.make_generator(config)
  abstract = jax.eval_shape(lambda k: g.init(k, *gen_lib.example_inputs(config)), jax.random.key(0))
  leaves, tree = jax.tree.flatten(abstract)
  rng = np.random.default_rng(seed)
  values = [(0.02 * rng.standard_normal(s.shape)).astype(s.dtype) for s in leaves]
  return jax.tree.unflatten(tree, [jax.numpy.asarray(v) for v in values])


def cut(src: str, dst: str, frames: int) -> str:
  """The first `frames` frames of src with their sound, copied packet by packet."""
  import av
  with av.open(src) as inp, av.open(dst, 'w', format='mp4') as out:
    v = inp.streams.video[0]
    seconds = frames / float(v.average_rate)
    streams = [v] + list(inp.streams.audio[:1])
    outs = {s.index: out.add_stream_from_template(s) for s in streams}
    for packet in inp.demux(streams):
      if packet.dts is None or packet.pts is None or float(packet.pts * packet.time_base) >= seconds - 1e-6:
        continue
      packet.stream = outs[packet.stream.index]
      out.mux(packet)
  return dst


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default=os.path.join(HERE, '..', 'configs', 'paper.py'))
  parser.add_argument('--checkpoint', default=None, help='a training work folder (then its config is used)')
  parser.add_argument('--frames', type=int, default=16, help='driving frames of the whole-path run')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--batches', default='1,8')
  args = parser.parse_args(argv)
  from headgan_jax import compilation_cache, reenact
  compilation_cache.enable()
  import jax
  from headgan_jax import config_files
  if args.checkpoint:
    reenactor, ckpt = reenact.reenactor_from_checkpoint(args.checkpoint, 8)
    config, variables = ckpt.config, ckpt.variables
  else:
    config = config_files.load(args.config)
    variables = random_variables(config)
    reenactor = reenact.Reenactor(config, variables, batch_size=8)
  size, k = int(config.image_size), int(config.model.num_past_frames)
  print(f'device {jax.devices()[0].device_kind} ({jax.devices()[0].platform}), image_size {size}, ngf '
        f'{config.model.ngf}; weights: {"checkpoint" if args.checkpoint else "random, config shapes"}', flush=True)
  rng = np.random.default_rng(0)
  results = dict(device=jax.devices()[0].platform, malloc=host_malloc.active(), image_size=size, ngf=int(config.model.ngf))
  for b in [int(v) for v in args.batches.split(',')]:
    x = rng.uniform(0, 1, (b, size, size, 3 * (k + 1))).astype(np.float32)
    y_ref = rng.uniform(-1, 1, (size, size, 3)).astype(np.float32)
    x_ref = rng.uniform(0, 1, (size, size, 3)).astype(np.float32)
    h = rng.standard_normal((b, int(config.model.audio_dim))).astype(np.float32)
    start = time.perf_counter()
    jax.block_until_ready(reenactor._generate(variables, x, y_ref, x_ref, h))
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      jax.block_until_ready(reenactor._generate(variables, x, y_ref, x_ref, h))
      times.append(time.perf_counter() - start)
    fps = b / float(np.median(times))
    results[f'g_batch{b}_fps'] = round(fps, 3)
    print(f'G alone, batch {b}: {fps:.3f} frames/s (median of {args.repeats}: {np.median(times):.2f} s per call; '
          f'first call with compile {compile_s:.1f} s)', flush=True)
  with tempfile.TemporaryDirectory() as tmp:
    driving = cut(os.path.join(FIXTURES, 'driving.mp4'), os.path.join(tmp, 'driving.mp4'), args.frames)
    reference = os.path.join(FIXTURES, 'reference.png')
    runs = []
    for i in range(2):
      start = time.perf_counter()
      s = reenactor.run(reference, driving, os.path.join(tmp, f'out{i}.mp4'), progress=False, say=lambda m: None)
      runs.append((time.perf_counter() - start, s.num_frames))
    (first, n), (second, _) = runs
    results['whole_fps'] = round(n / second, 3)
    results['whole_frames'] = n
    print(f'whole reenactment (decode, track, x_t, audio features, G batch 8, encode): {n / second:.3f} frames/s '
          f'on {n} frames ({second:.1f} s; first run with compiles {first:.1f} s)', flush=True)
  print(json.dumps(results))
  return 0


if __name__ == '__main__':
  host_malloc.reexec_with_tcmalloc()  # First: it may start this command again (headgan_jax/host_malloc.py).
  sys.exit(main())
