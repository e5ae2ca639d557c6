"""Benchmark of HeadGAN training: one train step (G, D and D_m updates), G's own training step against a PyTorch
twin, and G's inference frames/s.

  python bench/train_step.py --config configs/tiny.py [--batch N] [--dtype bfloat16] [--steps 10]
  python bench/train_step.py --config configs/paper.py --batch 1 --compare-conv     # before / after, CPU
  python bench/train_step.py --config configs/paper.py --batch 1 --g-step --vs-torch # G step: ours vs PyTorch
  python bench/train_step.py --config configs/paper.py --g-inference --batch 32      # G frames/s

Default mode: the full train step with config.model.conv_impl (or --conv-impl): init time, compile time, step time,
samples/s, FLOPs and MFU. `--compare-conv` builds the step with conv_impl 'xla' (before issue 12) and 'auto'
(after: the im2col weight gradient on CPU, XLA's own elsewhere), runs both on the same state and batch, and times
them interleaved (xla, auto, xla, auto, ...): one process, medians, so the ratio holds on a shared machine.

`--g-step`: G's training step alone - forward on `batch` frames, L1 of the image and of the warped reference to a
target, backward, Adam with the paper's settings, spectral-norm vectors updated - for conv_impl 'xla' and 'auto',
and with `--vs-torch` for `bench/torch_generator.py`, a PyTorch twin of our G loaded from the same parameters (its
output is checked against ours first), all three interleaved. `--g-inference`: G's forward pass (jit, no
gradients) at `batch` frames, frames/s.

FLOPs are XLA's own count: `cost_analysis()['flops']` of the compiled step (per device program; multiplied by the
device count for the global figure), divided by the global batch. They cover everything the step executes (G on
frames t-1 and t, D and D_m on fake and real, VGG when enabled, backward passes and Adam). MFU = achieved FLOP/s
over the device's peak dense FLOP/s for the compute dtype (table below; bf16 peak for bfloat16, TF32 peak for
float32, which is what XLA's default matmul precision uses on those GPUs), reported on known GPUs only.
Figures are printed for humans, then ONE JSON line with all of them. The real data pipeline is not used: batches
are synthetic (headgan_jax.train.data.synthetic_batch); VGG runs with random weights when the config asks for it
and no weight file is given (the cost is the same).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from headgan_jax.errors import HeadGANError  # noqa: E402
from headgan_jax.nn import vgg as vgg_lib  # noqa: E402
from headgan_jax.train import data, state as state_lib, step as step_lib  # noqa: E402

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


def load_config(path: str):
  spec = importlib.util.spec_from_file_location('bench_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def compiled_flops(compiled) -> float | None:
  """'flops' of XLA's cost analysis of a compiled executable (a dict, or a list of one dict on older jax)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or 'flops' not in cost:
    return None
  return float(cost['flops'])


def _config(args: argparse.Namespace):
  config = load_config(args.config)
  if args.batch:
    config.train.batch_size = args.batch
  if args.dtype:
    config.model.compute_dtype = args.dtype
  if args.image_size:
    config.image_size = args.image_size
  if args.conv_impl:
    config.model.conv_impl = args.conv_impl
  return config


def _vgg(config, mesh):
  """(vgg_apply, vgg_params, note) for the step; random weights when no file is configured (same cost)."""
  if not config.loss.use_vgg:
    return None, None, 'off'
  if config.loss.vgg_weights:
    vgg_apply, vgg_params = vgg_lib.vgg19_from_config(config)
    note = 'torchvision weights'
  else:
    model = vgg_lib.VGG19(dtype=jnp.dtype(config.model.compute_dtype))
    vgg_params = model.init(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))['params']
    vgg_apply = lambda p, x: model.apply({'params': p}, x)  # noqa: E731
    note = 'random weights (no file configured; same cost)'
  return vgg_apply, jax.device_put(vgg_params, step_lib.replicated(mesh)), note


def _device_info(config) -> dict:
  devices = jax.devices()
  return {'config_image_size': config.image_size, 'dtype': config.model.compute_dtype, 'devices': len(devices),
          'device_kind': devices[0].device_kind, 'platform': devices[0].platform}


def run(args: argparse.Namespace) -> dict:
  """The full train step (default mode)."""
  config = _config(args)
  devices = jax.devices()
  mesh = step_lib.make_mesh(devices)
  batch_size = config.train.batch_size
  models = state_lib.make_models(config)
  optimizers = state_lib.make_optimizers(config)
  vgg_apply, vgg_params, vgg_note = _vgg(config, mesh)

  t0 = time.perf_counter()
  state = step_lib.init_state_sharded(jax.random.key(config.seed), config, models, optimizers, mesh)
  jax.block_until_ready(state)
  init_s = time.perf_counter() - t0
  batch = step_lib.shard_batch(data.synthetic_batch(jax.random.key(0), config, batch_size), mesh)
  train_step = step_lib.make_train_step(config, models, optimizers, mesh, vgg_apply)

  t0 = time.perf_counter()
  compiled = train_step.jitted.lower(state, batch, vgg_params).compile()
  compile_s = time.perf_counter() - t0
  flops_device = compiled_flops(compiled)

  state, metrics = compiled(state, batch, vgg_params)  # Warm-up (first execution allocates).
  jax.block_until_ready(metrics)
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch, vgg_params)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  step_s = float(np.median(times))
  finite = all(np.isfinite(float(v)) for v in metrics.values())

  flops_per_sample = None if flops_device is None else flops_device * len(devices) / batch_size
  peak = peak_flops(devices[0], config.model.compute_dtype)
  mfu = None
  if peak and flops_device is not None:
    mfu = flops_device / step_s / peak
  return {
      'bench': 'train_step', 'mode': 'step', 'config': args.config, 'image_size': config.image_size,
      'batch': batch_size, 'dtype': config.model.compute_dtype, 'conv_impl': config.model.conv_impl,
      'devices': len(devices), 'device_kind': devices[0].device_kind,
      'platform': devices[0].platform, 'vgg': vgg_note, 'init_s': round(init_s, 3), 'compile_s': round(compile_s, 3),
      'step_ms_median': round(step_s * 1e3, 3), 'step_ms_min': round(min(times) * 1e3, 3), 'steps_timed': len(times),
      'samples_per_s': round(batch_size / step_s, 3),
      'flops_per_sample': flops_per_sample, 'flops_source': 'xla cost_analysis of the compiled step',
      'peak_flops_per_device': peak, 'mfu': None if mfu is None else round(mfu, 4),
      'g_params': state_lib.count_params(state.g_params), 'd_params': state_lib.count_params(state.d_params),
      'dm_params': state_lib.count_params(state.dm_params), 'metrics_finite': finite,
  }


def _interleaved(fns: dict, steps: int) -> dict[str, list[float]]:
  """Runs each callable once per round, in order, `steps` rounds; seconds per call."""
  times = {name: [] for name in fns}
  for _ in range(steps):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t0)
  return times


def _summary(times: dict[str, list[float]]) -> dict:
  return {name: {'median_ms': round(1e3 * float(np.median(v)), 1), 'min_ms': round(1e3 * min(v), 1),
                 'all_ms': [round(1e3 * t, 1) for t in v]} for name, v in times.items()}


def run_compare_conv(args: argparse.Namespace) -> dict:
  """The full train step with conv_impl 'xla' and 'auto', same state and batch, timed interleaved."""
  config = _config(args)
  mesh = step_lib.make_mesh()
  models_by_impl, steps, compile_s = {}, {}, {}
  optimizers = state_lib.make_optimizers(config)
  vgg_apply, vgg_params, vgg_note = _vgg(config, mesh)
  for impl in ('xla', 'auto'):
    config.model.conv_impl = impl
    models_by_impl[impl] = state_lib.make_models(config)
  state = step_lib.init_state_sharded(jax.random.key(config.seed), config, models_by_impl['xla'], optimizers, mesh)
  batch = step_lib.shard_batch(data.synthetic_batch(jax.random.key(0), config), mesh)
  for impl, models in models_by_impl.items():
    fn = step_lib.make_train_step(config, models, optimizers, mesh, vgg_apply, donate=False)
    t0 = time.perf_counter()
    steps[impl] = fn.jitted.lower(state, batch, vgg_params).compile()
    compile_s[impl] = round(time.perf_counter() - t0, 1)
    print(f'compiled the step with conv_impl={impl!r} in {compile_s[impl]:.1f} s', flush=True)
  outs = {impl: steps[impl](state, batch, vgg_params) for impl in steps}  # Warm-up; also the same-maths check.
  diffs = {k: abs(float(outs['auto'][1][k]) - float(outs['xla'][1][k])) / max(abs(float(outs['xla'][1][k])), 1e-6)
           for k in ('g_total', 'd_total', 'g_grad_norm', 'd_grad_norm')}
  del outs
  fns = {impl: (lambda c=c: jax.block_until_ready(c(state, batch, vgg_params)[1])) for impl, c in steps.items()}
  times = _summary(_interleaved(fns, args.steps))
  ratio = times['xla']['median_ms'] / times['auto']['median_ms']
  return {'bench': 'train_step', 'mode': 'compare_conv', 'config': args.config, 'batch': config.train.batch_size,
          'vgg': vgg_note, **_device_info(config), 'compile_s': compile_s, 'times': times,
          'speedup_auto_over_xla': round(ratio, 3), 'metric_rel_diff_auto_vs_xla': diffs}


def _random_variables(module, inputs, seed: int = 0):
  """Variables of `module` with init's shapes, filled from NumPy (N(0, 0.02^2); spectral-norm u ~ N(0, 1)).

  Random values stand in for `module.init` here only to skip its compile: the cost of a step does not depend on
  the values."""
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = jax.tree_util.keystr(path)
    if 'sigma' in name:
      return jnp.ones(s.shape, s.dtype)
    scale = 1.0 if "'u'" in name or name.endswith("/u']") else 0.02
    return jnp.asarray(rng.standard_normal(s.shape, np.float32) * scale)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def run_g_step(args: argparse.Namespace) -> dict:
  """G's training step (fwd + L1 + bwd + Adam, SN vectors updated): conv_impl 'xla', 'auto' [and PyTorch]."""
  import optax  # pylint: disable=import-outside-toplevel
  from headgan_jax.nn import generator as generator_lib  # pylint: disable=import-outside-toplevel
  config = _config(args)
  b, size = config.train.batch_size, config.image_size
  rng = np.random.default_rng(1)
  inputs = tuple(jnp.asarray(rng.uniform(-1, 1, s.shape).astype(np.float32))
                 for s in generator_lib.example_inputs(config, b))
  target = jnp.asarray(rng.uniform(-1, 1, (b, size, size, 3)).astype(np.float32))
  t = config.train
  tx = optax.adam(t.lr, b1=t.b1, b2=t.b2)
  nets = {}
  for impl in ('xla', 'auto'):
    config.model.conv_impl = impl
    nets[impl] = generator_lib.make_generator(config)
  variables = _random_variables(nets['xla'], inputs)

  def make_step(g):
    def loss_fn(params, stats):
      out, new = g.apply({'params': params, 'batch_stats': stats}, *inputs, update_stats=True,
                         mutable=['batch_stats'])
      loss = jnp.mean(jnp.abs(out.image - target)) + jnp.mean(jnp.abs(out.warped_ref - target))
      return loss, new['batch_stats']

    def step(params, stats, opt_state):
      (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), stats, opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1, 2))

  carry, fns, compile_s = {}, {}, {}
  for impl, g in nets.items():
    params = jax.tree.map(jnp.copy, variables['params'])
    carry[impl] = [params, jax.tree.map(jnp.copy, variables['batch_stats']), tx.init(params)]
    t0 = time.perf_counter()
    compiled = make_step(g).lower(*carry[impl]).compile()
    compile_s[impl] = round(time.perf_counter() - t0, 1)
    print(f'compiled the G step with conv_impl={impl!r} in {compile_s[impl]:.1f} s', flush=True)

    def run_once(impl=impl, compiled=compiled):
      *carry[impl], loss = compiled(*carry[impl])
      return float(loss)

    fns[impl] = run_once
  result = {'bench': 'train_step', 'mode': 'g_step', 'config': args.config, 'batch': b, **_device_info(config),
            'compile_s': compile_s, 'loss': 'L1(image) + L1(warped_ref), Adam'}
  if args.vs_torch:
    fns['torch'], result['torch'] = _torch_g_step(config, variables, nets['xla'], inputs, target)
  for fn in fns.values():  # Warm-up.
    fn()
  times = _summary(_interleaved(fns, args.steps))
  result['times'] = times
  result['speedup_auto_over_xla'] = round(times['xla']['median_ms'] / times['auto']['median_ms'], 3)
  if args.vs_torch:
    result['ratio_auto_over_torch'] = round(times['auto']['median_ms'] / times['torch']['median_ms'], 3)
    result['ratio_xla_over_torch'] = round(times['xla']['median_ms'] / times['torch']['median_ms'], 3)
  return result


def _torch_g_step(config, variables, g, inputs, target):
  """A step callable of the PyTorch twin, after checking its forward pass against ours on the same inputs."""
  import torch  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, str(REPO / 'bench'))
  import torch_generator  # pylint: disable=import-outside-toplevel
  model = torch_generator.Generator(config)
  torch_generator.load_flax_params(model, config, variables['params'], variables['batch_stats'])
  nchw = lambda a: torch.from_numpy(np.array(a)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
  x_drive, y_ref, x_ref = (nchw(a) for a in inputs[:3])
  audio = torch.from_numpy(np.array(inputs[3]))
  y = nchw(target)
  model.eval()
  with torch.no_grad():
    image_t = model(x_drive, y_ref, x_ref, audio)[0].permute(0, 2, 3, 1).numpy()
  image_j = np.asarray(jax.jit(lambda v: g.apply(v, *inputs).image)(variables))
  diff = float(np.max(np.abs(image_t - image_j)))
  print(f'PyTorch twin vs ours, same parameters and inputs: max |image difference| = {diff:.2e}', flush=True)
  if diff > 1e-3:
    raise HeadGANError(f'the PyTorch twin does not compute our G (max image difference {diff:.3g})')
  model.train()
  t = config.train
  opt = torch.optim.Adam(model.parameters(), lr=t.lr, betas=(t.b1, t.b2))

  def step():
    opt.zero_grad(set_to_none=True)
    image, warped_ref, _ = model(x_drive, y_ref, x_ref, audio)
    loss = (image - y).abs().mean() + (warped_ref - y).abs().mean()
    loss.backward()
    opt.step()
    return float(loss.detach())

  return step, {'version': torch.__version__, 'threads': torch.get_num_threads(), 'max_image_diff': diff}


def run_g_inference(args: argparse.Namespace) -> dict:
  """G's forward pass (jit, no gradients) at `batch` frames: frames/s."""
  from headgan_jax.nn import generator as generator_lib  # pylint: disable=import-outside-toplevel
  config = _config(args)
  b = config.train.batch_size
  g = generator_lib.make_generator(config)
  rng = np.random.default_rng(1)
  inputs = tuple(jnp.asarray(rng.uniform(-1, 1, s.shape).astype(np.float32))
                 for s in generator_lib.example_inputs(config, b))
  variables = _random_variables(g, inputs)
  t0 = time.perf_counter()
  compiled = jax.jit(lambda v, *x: g.apply(v, *x).image).lower(variables, *inputs).compile()
  compile_s = time.perf_counter() - t0
  flops = compiled_flops(compiled)
  jax.block_until_ready(compiled(variables, *inputs))
  times = _interleaved({'g': lambda: jax.block_until_ready(compiled(variables, *inputs))}, args.steps)['g']
  step_s = float(np.median(times))
  peak = peak_flops(jax.devices()[0], config.model.compute_dtype)
  return {'bench': 'train_step', 'mode': 'g_inference', 'config': args.config, 'batch': b, **_device_info(config),
          'conv_impl': config.model.conv_impl, 'compile_s': round(compile_s, 2),
          'batch_ms_median': round(1e3 * step_s, 2), 'frames_per_s': round(b / step_s, 2),
          'flops_per_frame': None if flops is None else flops / b,
          'mfu': None if not (peak and flops) else round(flops / step_s / peak, 4)}


def _startup_once(config, which: str) -> dict:
  """Seconds to build, trace + compile and run a fresh jitted init ('before': default compile options, 'after':
  state.INIT_COMPILER_OPTIONS), and to compile the train step; new jit objects, so nothing comes from memory."""
  mesh = step_lib.make_mesh()
  t0 = time.perf_counter()
  models, optimizers = state_lib.make_models(config), state_lib.make_optimizers(config)
  options = state_lib.INIT_COMPILER_OPTIONS if which == 'after' else None
  init = jax.jit(lambda k: state_lib.init_state(k, config, models, optimizers),
                 out_shardings=step_lib.replicated(mesh), compiler_options=options)
  state = jax.block_until_ready(init(jax.random.key(config.seed)))
  out = {'init_s': round(time.perf_counter() - t0, 2)}
  if which == 'step':
    batch = step_lib.shard_batch(data.synthetic_batch(jax.random.key(0), config), mesh)
    vgg_apply, vgg_params, _ = _vgg(config, mesh)
    fn = step_lib.make_train_step(config, models, optimizers, mesh, vgg_apply)
    t0 = time.perf_counter()
    fn.jitted.lower(state, batch, vgg_params).compile()
    out['step_compile_s'] = round(time.perf_counter() - t0, 2)
  return out


def run_startup(args: argparse.Namespace) -> dict:
  """Start-up before / after: the init compiled with default options vs INIT_COMPILER_OPTIONS (cold, alternating,
  in this process, compilation cache off), then two fresh processes sharing an empty compilation cache: the
  first compiles and writes it, the second is a re-run (a resumed training, the demo run again)."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import tempfile  # pylint: disable=import-outside-toplevel
  config = _config(args)
  if args.startup_child:
    from headgan_jax import compilation_cache  # pylint: disable=import-outside-toplevel
    compilation_cache.enable(args.startup_child)
    return {'bench': 'train_step', 'mode': 'startup_child', **_startup_once(config, 'step')}
  cold = {'before': [], 'after': []}
  for _ in range(args.startup_reps):
    for which in cold:
      cold[which].append(_startup_once(config, which)['init_s'])
      print(f'init ({which}): {cold[which][-1]:.1f} s', flush=True)
  runs = []
  with tempfile.TemporaryDirectory() as cache:
    for _ in range(2):
      cmd = [sys.executable, __file__, '--config', args.config, '--startup', '--startup-child', cache]
      for flag, value in (('--batch', args.batch), ('--image-size', args.image_size), ('--dtype', args.dtype),
                          ('--conv-impl', args.conv_impl)):
        if value:
          cmd += [flag, str(value)]
      proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
      runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
      print(f"process {len(runs)}, cache {'empty' if len(runs) == 1 else 'filled'}: init {runs[-1]['init_s']:.1f} s, "
            f"step compile {runs[-1]['step_compile_s']:.1f} s", flush=True)
  return {'bench': 'train_step', 'mode': 'startup', 'config': args.config, **_device_info(config),
          'init_cold_s': cold, 'init_cold_median_s': {k: float(np.median(v)) for k, v in cold.items()},
          'first_process': runs[0], 'second_process': runs[1]}


def _print_summary(result: dict) -> None:
  if result['mode'] in ('startup', 'startup_child'):
    return
  if result['mode'] == 'step':
    print(f"device: {result['devices']} x {result['device_kind']} ({result['platform']}), dtype {result['dtype']}, "
          f"{result['image_size']}x{result['image_size']}, global batch {result['batch']}, VGG: {result['vgg']}, "
          f"conv_impl {result['conv_impl']}")
    print(f"params: G {result['g_params']:,}  D {result['d_params']:,}  D_m {result['dm_params']:,}")
    print(f"init {result['init_s']:.2f} s, compile {result['compile_s']:.2f} s (excluded from step time)")
    print(f"step {result['step_ms_median']:.2f} ms median over {result['steps_timed']} steps "
          f"(min {result['step_ms_min']:.2f} ms), {result['samples_per_s']:.2f} samples/s")
    if result['flops_per_sample'] is not None:
      print(f"FLOPs per sample (XLA cost analysis): {result['flops_per_sample'] / 1e9:.3f} GFLOP")
    if result['mfu'] is not None:
      print(f"MFU: {100 * result['mfu']:.2f}% of {result['peak_flops_per_device'] / 1e12:.1f} TFLOP/s per device")
    return
  print(f"device: {result['devices']} x {result['device_kind']} ({result['platform']}), dtype {result['dtype']}, "
        f"{result['config_image_size']}x{result['config_image_size']}, batch {result['batch']}, mode {result['mode']}")
  if result['mode'] == 'g_inference':
    print(f"G forward: {result['batch_ms_median']:.1f} ms per batch, {result['frames_per_s']:.2f} frames/s"
          + ('' if result['mfu'] is None else f", MFU {100 * result['mfu']:.2f}%"))
    return
  for name, t in result['times'].items():
    print(f"{name:6} median {t['median_ms']:10.1f} ms  (min {t['min_ms']:.1f}; all {t['all_ms']})")
  print(f"speed-up of conv_impl 'auto' over 'xla': {result['speedup_auto_over_xla']:.2f}x")
  if 'ratio_auto_over_torch' in result:
    print(f"ours ('auto') / PyTorch time: {result['ratio_auto_over_torch']:.2f}  "
          f"(before, 'xla' / PyTorch: {result['ratio_xla_over_torch']:.2f})")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', default=str(REPO / 'configs' / 'tiny.py'), help='config file with get_config()')
  parser.add_argument('--batch', type=int, default=0, help='global batch (default config.train.batch_size)')
  parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='', help='config.model.compute_dtype')
  parser.add_argument('--image-size', type=int, default=0, help='override config.image_size')
  parser.add_argument('--conv-impl', choices=('auto', 'xla', 'im2col'), default='', help='config.model.conv_impl')
  parser.add_argument('--steps', type=int, default=10, help='timed steps (after one warm-up step)')
  mode = parser.add_mutually_exclusive_group()
  mode.add_argument('--compare-conv', action='store_true', help="full step, conv_impl 'xla' vs 'auto'")
  mode.add_argument('--g-step', action='store_true', help="G's training step, conv_impl 'xla' vs 'auto'")
  mode.add_argument('--g-inference', action='store_true', help="G's forward pass, frames/s")
  mode.add_argument('--startup', action='store_true', help='init / compile times before and after issue 12')
  parser.add_argument('--startup-reps', type=int, default=2, help='with --startup: cold inits of each kind')
  parser.add_argument('--startup-child', default='', help=argparse.SUPPRESS)
  parser.add_argument('--vs-torch', action='store_true', help='with --g-step: also the PyTorch twin of G')
  args = parser.parse_args(argv)
  if args.vs_torch and not args.g_step:
    parser.error('--vs-torch goes with --g-step')
  runner = (run_compare_conv if args.compare_conv else run_g_step if args.g_step
            else run_g_inference if args.g_inference else run_startup if args.startup else run)
  try:
    result = runner(args)
  except HeadGANError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  _print_summary(result)
  print(json.dumps(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
