"""Benchmark of one HeadGAN train step (G, D and D_m updates): compile time, step time, samples/s, FLOPs, MFU.

  python bench/train_step.py --config configs/tiny.py [--batch N] [--dtype bfloat16] [--steps 10] [--conv-impl xla]
  python bench/train_step.py --config configs/paper.py --batch 1 --compare-conv   # before / after issue 12

--compare-conv builds the step with config.runtime.conv_impl 'xla' (before issue 12) and 'auto' (after: oneDNN's
convolutions of headgan_jax/kernels/onednn.py on CPU, XLA's own elsewhere), or with the values it is given (e.g.
'xla,im2col,onednn'), and times them interleaved in ONE process (xla, auto, xla, auto, ...) on one train state that each step carries forward (both compute the same maths), so
the ratio of the medians holds on a shared machine. G's training step alone, against a PyTorch twin of G, is
`bench/g_step.py`; the start-up figures are `bench/startup.py`.

--source NAME feeds the step from the data source NAME (config.data.source: 'synthetic', 'headgan_demo', ...;
--data-dir for a built dataset) and times it side by side with the same compiled step on one fixed, already
assembled batch (no input pipeline), interleaved in blocks of d_every steps on one carried state, so the ratio of
the two examples/s says whether the input pipeline slows the step (1.0: it keeps up):
  python bench/train_step.py --config configs/demo.py --source headgan_demo --data-dir DATA

FLOPs are XLA's own count: `cost_analysis()['flops']` of the compiled step (per device program; multiplied by the
device count for the global figure), divided by the global batch. They cover everything the step executes (G on
frames t-1 and t, D and D_m on fake and real, VGG when enabled, backward passes and Adam). MFU = achieved FLOP/s
over the device's peak dense FLOP/s for the compute dtype (table below; bf16 peak for bfloat16, TF32 peak for
float32, which is what XLA's default matmul precision uses on those GPUs), reported on known GPUs only.
Figures are printed for humans, then ONE JSON line with all of them. The real data pipeline is not used: batches
are synthetic (headgan_jax.data.batch.synthetic_batch); VGG runs with random weights when the config asks for it
and no weight file is given (the cost is the same).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from headgan_jax import config_files, host_malloc  # noqa: E402
from headgan_jax import sharding as sharding_lib  # noqa: E402
from headgan_jax.data import batch as batch_lib  # noqa: E402
from headgan_jax.errors import HeadGANError  # noqa: E402
from headgan_jax.nn import vgg as vgg_lib  # noqa: E402
from headgan_jax.train import state as state_lib, step as step_lib  # noqa: E402

# Peak dense tensor-core FLOP/s (no sparsity), from NVIDIA's data sheets: (bf16, tf32).
PEAK_FLOPS = {
    'H100 PCIe': (756e12, 378e12),
    'H100': (989.4e12, 494.7e12),  # SXM5 (also "H100 80GB HBM3").
    'H200': (989.4e12, 494.7e12),
    'A100': (312e12, 156e12),
}


def peak_flops(device: jax.Device, dtype: str) -> float | None:
  """Peak FLOP/s of `device` for `dtype`, or None when the device is not in the table (e.g. CPU)."""
  if device.platform != 'gpu':
    return None
  kind = device.device_kind
  for name in sorted(PEAK_FLOPS, key=len, reverse=True):  # 'H100 PCIe' before 'H100'.
    if name in kind:
      bf16, tf32 = PEAK_FLOPS[name]
      return bf16 if dtype == 'bfloat16' else tf32
  return None


def compiled_flops(compiled) -> float | None:
  """'flops' of XLA's cost analysis of a compiled executable (a dict, or a list of one dict on older jax)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or 'flops' not in cost:
    return None
  return float(cost['flops'])


def setup_vgg(config, mesh):
  """(vgg_apply, vgg_params replicated over `mesh`, note): torchvision's weights when configured, else random ones
  (the cost does not depend on the values); (None, None, 'off') without the VGG terms."""
  if not config.loss.use_vgg:
    return None, None, 'off'
  if config.loss.vgg_weights:
    vgg_apply, vgg_params = vgg_lib.vgg19_from_config(config)
    note = 'torchvision weights'
  else:  # Cost does not depend on the weights' values.
    model = vgg_lib.vgg19_module_from_config(config)
    vgg_params = model.init(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))['params']
    vgg_apply = lambda p, x: model.apply({'params': p}, x)  # noqa: E731
    note = 'random weights (no file configured; same cost)'
  return vgg_apply, jax.device_put(vgg_params, sharding_lib.replicated(mesh)), note


def apply_overrides(config, args: argparse.Namespace):
  """--batch / --dtype / --image-size into the config; synthetic data defines no epoch, so a fixed one if needed."""
  if args.batch:
    config.train.batch_size = args.batch
  if args.dtype:
    config.runtime.compute_dtype = args.dtype
  if args.image_size:
    config.image_size = args.image_size
  if args.conv_impl:
    config.runtime.conv_impl = args.conv_impl
  if not config.train.steps_per_epoch:
    config.train.steps_per_epoch = 1000  # Only the learning-rate value depends on it, not the cost.
  return config


def run(args: argparse.Namespace) -> dict:
  config = apply_overrides(config_files.load(args.config), args)
  if args.compare_conv:
    return run_compare_conv(args, config)
  if args.source:
    return run_source(args, config)
  devices = jax.devices()
  mesh = sharding_lib.make_mesh(devices)
  batch_size = config.train.batch_size
  models = state_lib.make_models(config)
  optimizers = state_lib.make_optimizers(config)
  vgg_apply, vgg_params, vgg_note = setup_vgg(config, mesh)

  t0 = time.perf_counter()
  state = step_lib.init_state_sharded(jax.random.key(config.seed), config, models, optimizers, mesh)
  jax.block_until_ready(state)
  init_s = time.perf_counter() - t0
  batch = sharding_lib.shard_batch(batch_lib.synthetic_batch(jax.random.key(0), config, batch_size), mesh)
  train_step = step_lib.make_train_step(config, models, optimizers, mesh, vgg_apply)

  # With config.train.d_update 'two_steps' a step without and one with the D update are compiled apart.
  d_every = config.train.d_every
  t0 = time.perf_counter()
  compiled = {}
  for s in range(d_every):
    fn = train_step.jitted_for(s)
    if fn not in compiled:
      compiled[fn] = train_step.lower(state, batch, vgg_params, step=s).compile()
  compile_s = time.perf_counter() - t0
  per_step = [compiled_flops(compiled[train_step.jitted_for(s)]) for s in range(d_every)]
  flops_device = None if None in per_step else float(np.mean(per_step))  # Mean over one D cycle.

  for s in range(d_every):  # Warm-up (first executions allocate).
    state, metrics = compiled[train_step.jitted_for(s)](state, batch, vgg_params)
  jax.block_until_ready(metrics)
  times = []
  for s in range(args.steps):
    t0 = time.perf_counter()
    state, metrics = compiled[train_step.jitted_for(s)](state, batch, vgg_params)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  step_s = float(np.median(times))
  finite = all(np.isfinite(float(v)) for v in metrics.values())

  flops_per_sample = None if flops_device is None else flops_device * len(devices) / batch_size
  peak = peak_flops(devices[0], config.runtime.compute_dtype)
  mfu = None
  if peak and flops_device is not None:
    mfu = flops_device / float(np.mean(times)) / peak  # FLOPs and time both averaged over D cycles.
  return {
      'bench': 'train_step', 'mode': 'step', 'conv_impl': config.runtime.conv_impl, 'config': args.config, 'image_size': config.image_size, 'batch': batch_size,
      'dtype': config.runtime.compute_dtype, 'devices': len(devices), 'device_kind': devices[0].device_kind,
      'platform': devices[0].platform, 'vgg': vgg_note, 'init_s': round(init_s, 3), 'compile_s': round(compile_s, 3),
      'step_ms_median': round(step_s * 1e3, 3), 'step_ms_min': round(min(times) * 1e3, 3), 'steps_timed': len(times),
      'samples_per_s': round(batch_size / step_s, 3),
      'flops_per_sample': flops_per_sample, 'flops_source': 'xla cost_analysis of the compiled step(s), mean over one D cycle',
      'peak_flops_per_device': peak, 'mfu': None if mfu is None else round(mfu, 4),
      'step_ms_mean': round(float(np.mean(times)) * 1e3, 3), 'd_every': config.train.d_every,
      'g_params': state_lib.count_params(state.g.params), 'd_params': state_lib.count_params(state.d.params),
      'dm_params': state_lib.count_params(state.dm.params), 'metrics_finite': finite,
  }


def run_source(args: argparse.Namespace, config) -> dict:
  """The step fed by data source args.source vs the same step on one fixed batch, interleaved (module docstring)."""
  from headgan_jax.data import sources  # pylint: disable=import-outside-toplevel
  config.data.source = args.source
  if args.data_dir:
    config.data.data_dir = args.data_dir
  mesh = sharding_lib.make_mesh()
  models = state_lib.make_models(config)
  optimizers = state_lib.make_optimizers(config)
  vgg_apply, vgg_params, vgg_note = setup_vgg(config, mesh)
  t0 = time.perf_counter()
  iterator = sources.make_train_iterator(config, mesh)
  fixed = next(iterator)  # Also compiles the source's device-side assembly.
  jax.block_until_ready(fixed)
  source_setup_s = time.perf_counter() - t0
  state = step_lib.init_state_sharded(jax.random.key(config.seed), config, models, optimizers, mesh)
  train_step = step_lib.make_train_step(config, models, optimizers, mesh, vgg_apply)
  d_every = config.train.d_every
  for s in range(d_every):  # Compile (both D-update variants) and warm up.
    state, metrics = train_step(state, fixed, vgg_params, step=s)
  jax.block_until_ready(metrics)
  step = d_every
  rates = {'fixed_batch': [], 'source': []}
  for _ in range(args.steps):  # Blocks of one D cycle each, alternating.
    for mode in rates:
      t0 = time.perf_counter()
      for _ in range(d_every):
        batch = fixed if mode == 'fixed_batch' else next(iterator)
        state, metrics = train_step(state, batch, vgg_params, step=step)
        step += 1
      jax.block_until_ready(metrics)
      rates[mode].append(d_every * config.train.batch_size / (time.perf_counter() - t0))
  med = {mode: float(np.median(v)) for mode, v in rates.items()}
  return {'bench': 'train_step', 'mode': 'source', 'source': args.source, 'config': args.config,
          'image_size': config.image_size, 'batch': config.train.batch_size, 'devices': len(jax.devices()),
          'device_kind': jax.devices()[0].device_kind, 'platform': jax.devices()[0].platform, 'vgg': vgg_note,
          'blocks': args.steps, 'steps_per_block': d_every, 'source_setup_s': round(source_setup_s, 2),
          'examples_per_s': {mode: [round(r, 3) for r in v] for mode, v in rates.items()},
          'examples_per_s_median': {mode: round(r, 3) for mode, r in med.items()},
          'ratio_source_over_fixed': round(med['source'] / med['fixed_batch'], 3),
          'metrics_finite': all(np.isfinite(float(v)) for v in metrics.values())}


def run_compare_conv(args: argparse.Namespace, config) -> dict:
  """The train step with each of --compare-conv's conv_impl values, timed interleaved on one state (see the module
  docstring)."""
  import ctypes  # pylint: disable=import-outside-toplevel
  import resource  # pylint: disable=import-outside-toplevel
  try:  # glibc: buffers over 1 MiB by mmap, so each step's freed temporaries leave the process (peak = one step's).
    ctypes.CDLL('libc.so.6').mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
  except OSError:
    pass
  mesh = sharding_lib.make_mesh()
  optimizers = state_lib.make_optimizers(config)
  vgg_apply = vgg_params = None
  if config.loss.use_vgg:  # Random weights: the cost does not depend on them.
    model = vgg_lib.vgg19_module_from_config(config)
    vgg_params = jax.device_put(model.init(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))['params'],
                                sharding_lib.replicated(mesh))
    vgg_apply = lambda p, x: model.apply({'params': p}, x)  # noqa: E731
  models = {}
  for impl in args.compare_conv.split(','):
    config.runtime.conv_impl = impl
    models[impl] = state_lib.make_models(config)
  first_impl = next(iter(models))
  state = step_lib.init_state_sharded(jax.random.key(config.seed), config, models[first_impl], optimizers, mesh)
  batch = sharding_lib.shard_batch(batch_lib.synthetic_batch(jax.random.key(0), config), mesh)
  compiled, compile_s = {}, {}
  for impl, m in models.items():
    t0 = time.perf_counter()
    compiled[impl] = step_lib.make_train_step(config, m, optimizers, mesh, vgg_apply).jitted.lower(
        state, batch, vgg_params).compile()
    compile_s[impl] = round(time.perf_counter() - t0, 1)
    print(f'compiled the step with conv_impl={impl!r} in {compile_s[impl]:.1f} s', flush=True)
  carry = [state]
  del state

  def run_once(impl):
    carry[0], metrics = compiled[impl](carry[0], batch, vgg_params)
    return jax.device_get(metrics)

  first = {impl: run_once(impl) for impl in compiled}  # Warm-up; consecutive steps, so close but not equal.
  times = {impl: [] for impl in compiled}
  for _ in range(args.steps):
    for impl in compiled:
      t0 = time.perf_counter()
      run_once(impl)
      times[impl].append(time.perf_counter() - t0)
  med = {impl: float(np.median(v)) for impl, v in times.items()}
  return {'bench': 'train_step', 'mode': 'compare_conv', 'config': args.config, 'image_size': config.image_size,
          'batch': config.train.batch_size, 'dtype': config.runtime.compute_dtype,
          'device_kind': jax.devices()[0].device_kind, 'platform': jax.devices()[0].platform,
          'vgg': 'random weights' if config.loss.use_vgg else 'off', 'compile_s': compile_s,
          'step_ms': {impl: [round(1e3 * t, 1) for t in v] for impl, v in times.items()},
          'step_ms_median': {impl: round(1e3 * t, 1) for impl, t in med.items()},
          **({'speedup_auto_over_xla': round(med['xla'] / med['auto'], 3)} if {'xla', 'auto'} <= set(med) else {}),
          f'speedup_over_{first_impl}': {impl: round(med[first_impl] / t, 3) for impl, t in med.items()},
          'metrics_finite': all(np.isfinite(float(v)) for m in first.values() for v in m.values()),
          'max_rss_gb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', default=str(REPO / 'configs' / 'tiny.py'), help='config file with get_config()')
  parser.add_argument('--batch', type=int, default=0, help='global batch (default config.train.batch_size)')
  parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='', help='config.runtime.compute_dtype')
  parser.add_argument('--image-size', type=int, default=0, help='override config.image_size')
  parser.add_argument('--steps', type=int, default=12, help='timed steps (after one warm-up cycle of d_every steps; '
                      'a multiple of config.train.d_every gives a fair mean)')
  parser.add_argument('--conv-impl', choices=('auto', 'xla', 'im2col', 'onednn'), default='',
                      help='config.runtime.conv_impl')
  parser.add_argument('--compare-conv', nargs='?', const='xla,auto', default='',
                      help="conv_impl values timed interleaved (default 'xla,auto'; e.g. 'xla,im2col,onednn')")
  parser.add_argument('--source', default='', help='data source to feed the step from (config.data.source), timed '
                      'against one fixed batch; e.g. headgan_demo or synthetic')
  parser.add_argument('--data-dir', default='', help='config.data.data_dir of a built dataset')
  args = parser.parse_args(argv)
  try:
    result = run(args)
    result['malloc'] = host_malloc.active()  # headgan_jax/host_malloc.py: tcmalloc or glibc's.
  except HeadGANError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if result['mode'] == 'source':
    med = result['examples_per_s_median']
    print(f"train step, {result['image_size']}x{result['image_size']}, batch {result['batch']}, {result['devices']} x "
          f"{result['device_kind']}: fed by {result['source']} {med['source']:.2f} examples/s, one fixed batch "
          f"{med['fixed_batch']:.2f} examples/s (medians of {result['blocks']} interleaved blocks of "
          f"{result['steps_per_block']} steps) -> ratio {result['ratio_source_over_fixed']:.3f}")
    print(json.dumps(result))
    return 0
  if result['mode'] == 'compare_conv':
    med = result['step_ms_median']
    first = next(iter(med))
    print(f"train step, {result['image_size']}x{result['image_size']}, batch {result['batch']}, "
          f"{result['device_kind']}, medians of {args.steps} interleaved steps: "
          + ', '.join(f"conv_impl {impl!r} {t:.0f} ms ({result[f'speedup_over_{first}'][impl]:.2f}x)"
                      for impl, t in med.items()) + f"; peak memory {result['max_rss_gb']} GiB")
    print(json.dumps(result))
    return 0
  print(f"device: {result['devices']} x {result['device_kind']} ({result['platform']}), dtype {result['dtype']}, "
        f"{result['image_size']}x{result['image_size']}, global batch {result['batch']}, VGG: {result['vgg']}")
  print(f"params: G {result['g_params']:,}  D {result['d_params']:,}  D_m {result['dm_params']:,}")
  print(f"init {result['init_s']:.2f} s, compile {result['compile_s']:.2f} s (excluded from step time)")
  print(f"step {result['step_ms_median']:.2f} ms median over {result['steps_timed']} steps "
        f"(min {result['step_ms_min']:.2f} ms, mean {result['step_ms_mean']:.2f} ms with D / D_m updated every "
        f"{result['d_every']} steps), {result['samples_per_s']:.2f} samples/s")
  if result['flops_per_sample'] is not None:
    print(f"FLOPs per sample (XLA cost analysis): {result['flops_per_sample'] / 1e9:.3f} GFLOP")
  if result['mfu'] is not None:
    print(f"MFU: {100 * result['mfu']:.2f}% of {result['peak_flops_per_device'] / 1e12:.1f} TFLOP/s per device")
  print(json.dumps(result))
  return 0


if __name__ == '__main__':
  host_malloc.reexec_with_tcmalloc()  # First: it may start this command again (headgan_jax/host_malloc.py).
  sys.exit(main())
