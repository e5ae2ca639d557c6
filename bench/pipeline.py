"""Input-pipeline throughput: examples/s of the host side (grain: read, sample, decode, normalise), of the device
side (x_t rendered from the coefficients, images scaled: `pipeline.assemble`) and of the whole iterator, at 256x256
with k = 2; against what the paper-config train step consumes; and x_t stored vs rendered on the fly.

  python bench/pipeline.py --data_dir /tmp/headgan-bench     # builds headgan_demo at 256 px there if missing

The train step's appetite: examples/s = FLOPs/s / FLOPs per example. FLOPs per example of the paper-config step come
from XLA's cost analysis of the lowered step (no compile). No GPU here: the H100 rate at an ASSUMED model-FLOPs
utilisation (--assumed-mfu, of the bf16 dense peak) is printed and labelled as such (bench/train_step.py times the
real step where a GPU is lent). Hosts needed per H100 = that rate / the pipeline's examples/s on this CPU.
x_t stored: PNG bytes of x_{t-1-k..t} and x_ref per example and their decode time, vs the coefficients (bytes) and
the on-device render time. Timings on a shared machine are noisy: medians of repeats, and all in one process.
Prints figures, ends with one JSON line.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

import grain  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from headgan_jax.errors import HeadGANError  # noqa: E402

H100_BF16_PEAK = 989.4e12  # Dense bf16 tensor-core FLOP/s, SXM5 data sheet.


def median_rate(fn, count: int, repeats: int) -> float:
  """Median over `repeats` of count / seconds of fn()."""
  rates = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    rates.append(count / (time.perf_counter() - t))
  return float(np.median(rates))


def paper_step_flops(batch: int) -> float | None:
  """FLOPs per example of the paper-config train step (XLA cost analysis of the lowered step, VGG included)."""
  import jax.numpy as jnp
  from configs import paper
  from headgan_jax import sharding as sharding_lib
  from headgan_jax.data import batch as batch_lib
  from headgan_jax.nn import vgg as vgg_lib
  from headgan_jax.train import state as state_lib, step as step_lib
  config = paper.get_config()
  config.train.batch_size = batch
  config.train.steps_per_epoch = 1000  # Any: the schedule's epoch length does not change the step's cost.
  mesh = sharding_lib.make_mesh(jax.devices()[:1])
  models, optimizers = state_lib.make_models(config), state_lib.make_optimizers(config)
  vgg = vgg_lib.vgg19_module_from_config(config, jnp.float32)
  vgg_params = jax.eval_shape(lambda: vgg.init(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))['params'])
  state = jax.eval_shape(lambda k: state_lib.init_state(k, config, models, optimizers), jax.random.key(0))
  batch_spec = batch_lib.batch_spec(config, batch)
  step = step_lib.make_train_step(config, models, optimizers, mesh, lambda p, x: vgg.apply({'params': p}, x))
  cost = step.jitted.lower(state, batch_spec, vgg_params).cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return None if not cost or 'flops' not in cost else float(cost['flops']) / batch


def run(args) -> dict:
  from configs import paper
  from headgan_jax import sharding as sharding_lib
  from headgan_jax.data import build, clips as clips_lib, pipeline
  config = paper.get_config()
  config.data.data_dir = args.data_dir
  config.data.source = 'headgan_demo'
  config.train.batch_size = args.batch
  config.data.num_threads = args.threads
  if args.clips_dir:
    config.data.demo_dir = args.clips_dir
  t = time.perf_counter()
  builder = build.build('headgan_demo', config, 256)
  build_s = time.perf_counter() - t
  ds = pipeline.open_dataset(config)
  src = ds.split('train')
  k = int(config.model.num_past_frames)
  print(f'dataset {ds.path}: {len(src)} train records (ready in {build_s:.1f} s)')

  # Host side: one thread, then grain's reader threads.
  host = pipeline.host_dataset(src, config, 0, 1, None, ds.audio_stats)
  n = args.examples
  counter = iter(range(10**9))
  one_thread = median_rate(lambda: [host[next(counter)] for _ in range(n)], n, args.repeats)
  it = pipeline.host_dataset(src, config, 0, 1, args.batch, ds.audio_stats).to_iter_dataset(
      grain.ReadOptions(num_threads=args.threads, prefetch_buffer_size=4)).__iter__()
  next(it)
  threaded = median_rate(lambda: [next(it) for _ in range(max(1, n // args.batch))],
                         max(1, n // args.batch) * args.batch, args.repeats)
  print(f'host (read + sample + decode 2 JPEG + 2 PNG + normalise audio): {one_thread:.1f} examples/s on one '
        f'thread, {threaded:.1f} with {args.threads} grain threads')

  # Device side on this machine's CPU (x rendered for k + 3 frames per example at 256 px).
  mesh = sharding_lib.make_mesh(jax.devices()[:1])
  assembler = pipeline.Assembler(config, mesh, ds, args.batch)
  batch_host = next(it)
  jax.block_until_ready(assembler(batch_host))
  device = median_rate(lambda: jax.block_until_ready(assembler(batch_host)), args.batch, args.repeats)
  print(f'device assemble on {jax.devices()[0].platform} (render {k + 3} x per example at 256 px): '
        f'{device:.1f} examples/s')

  # The whole iterator (host threads + device assembly, prefetched).
  train_it = pipeline.TrainIterator(config, mesh)
  jax.block_until_ready(train_it.next_fields())
  steps = max(1, n // args.batch)
  whole = median_rate(lambda: jax.block_until_ready([train_it.next_fields() for _ in range(steps)]),
                      steps * args.batch, args.repeats)
  print(f'whole iterator: {whole:.1f} examples/s')

  # x_t stored instead: PNG bytes per example and their decode time vs the coefficients.
  ex = host[0]
  fields = assembler({kk: np.repeat(ex[kk][None], args.batch, 0) for kk in pipeline.HOST_FIELDS})
  xs = np.concatenate([np.asarray(fields['x_drive_prev'])[0].reshape(256, 256, k + 1, 3).transpose(2, 0, 1, 3)[:1],
                       np.asarray(fields['x_drive'])[0].reshape(256, 256, k + 1, 3).transpose(2, 0, 1, 3),
                       np.asarray(fields['x_ref'])[:1]])
  pngs = []
  for x in xs:
    buf = io.BytesIO()
    Image.fromarray(np.round(x * 255).astype(np.uint8)).save(buf, format='PNG')
    pngs.append(buf.getvalue())
  png_frame = float(np.mean([len(b) for b in pngs]))
  decode_rate = median_rate(lambda: [clips_lib.decode_image(b) for b in pngs * 10], len(pngs) * 10, args.repeats)
  coef_frame = 4 * (ds.model.num_exp + 6 + 2 + 1)
  jpeg_frame = float(np.mean([len(b) for b in src[0]['frames']]))
  mask_frame = float(np.mean([len(b) for b in src[0]['masks']]))
  x_decode_per_example = (k + 3) / decode_rate
  render_per_example = 1.0 / device
  print(f'x_t stored: {png_frame / 1024:.1f} KiB PNG per frame (crop JPEG {jpeg_frame / 1024:.1f} KiB, mask PNG '
        f'{mask_frame / 1024:.1f} KiB); coefficients {coef_frame} B per frame ({png_frame / coef_frame:.0f}x less)')
  print(f'x_t stored costs the host {x_decode_per_example * 1e3:.1f} ms per example to decode {k + 3} PNGs; '
        f'rendered costs the device {render_per_example * 1e3:.1f} ms per example here (CPU)')

  flops = paper_step_flops(args.batch) if not args.no_flops else None
  out = dict(bench='pipeline', image_size=256, k=k, batch=args.batch, threads=args.threads,
             host_examples_per_s_1thread=round(one_thread, 2), host_examples_per_s=round(threaded, 2),
             device_examples_per_s=round(device, 2), device_platform=jax.devices()[0].platform,
             iterator_examples_per_s=round(whole, 2), x_png_bytes_per_frame=round(png_frame),
             coef_bytes_per_frame=coef_frame, jpeg_bytes_per_frame=round(jpeg_frame),
             mask_png_bytes_per_frame=round(mask_frame),
             x_png_decode_ms_per_example=round(x_decode_per_example * 1e3, 3),
             render_ms_per_example_cpu=round(render_per_example * 1e3, 3), train_records=len(src))
  if flops:
    assumed = H100_BF16_PEAK * args.assumed_mfu / flops
    host_rate = threaded
    out.update(step_gflop_per_example=round(flops / 1e9, 2), assumed_mfu=args.assumed_mfu,
               h100_examples_per_s_assumed=round(assumed, 1),
               hosts_per_h100=round(assumed / host_rate, 3))
    print(f'paper-config train step: {flops / 1e9:.1f} GFLOP per example (XLA cost analysis); an H100 at an ASSUMED '
          f'{args.assumed_mfu:.0%} of its bf16 peak would take {assumed:.0f} examples/s, i.e. '
          f'{assumed / host_rate:.2f} of this machine\'s 2-core host pipelines ({host_rate:.1f} examples/s each)')
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data_dir', default=os.path.join('/tmp', 'headgan-bench'))
  parser.add_argument('--clips_dir', default='', help='demo clips (default config.data.demo_dir)')
  parser.add_argument('--batch', type=int, default=6, help='global batch (paper: 6)')
  parser.add_argument('--threads', type=int, default=2, help='grain reader threads')
  parser.add_argument('--examples', type=int, default=60, help='examples per timed repeat')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--assumed-mfu', type=float, default=0.4, help='of the H100 bf16 peak, for the estimate')
  parser.add_argument('--no-flops', action='store_true', help='skip the paper-step cost analysis')
  args = parser.parse_args(argv)
  try:
    result = run(args)
  except HeadGANError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(json.dumps(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
