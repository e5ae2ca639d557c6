"""G alone on this backend: its training step (conv_impl 'xla' vs 'auto', and a PyTorch twin) and its inference.

  python bench/g_step.py --config configs/paper.py --batch 1 --vs-torch      # G's train step: before / after / torch
  python bench/g_step.py --config configs/paper.py --inference --batch 32    # G's forward pass, frames/s (+ MFU)

Train step: G's forward pass on `batch` frames, L1 of the image and of the warped reference to a target, backward,
Adam with the paper's settings, spectral-norm vectors updated; built with each of --impls (default 'xla' (before
issue 12) and 'auto' (after: oneDNN's convolutions on CPU when built, XLA's own elsewhere)), and with --vs-torch for
`bench/torch_generator.py`, a PyTorch twin of our G loaded with the same parameters (its output is checked against
ours first). All of them run interleaved in ONE process (xla, auto, torch, xla, auto, torch, ...) and the medians
are compared, so the ratios hold on a shared machine. Parameters are random (N(0, 0.02^2)) with init's shapes: a
step's cost does not depend on their values, and this skips compiling the init.

--inference: G's forward pass (jit, no gradients) at `batch` frames: frames/s, and MFU on known GPUs (the peak
table of bench/train_step.py). Figures are printed for humans, then ONE JSON line.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import pathlib
import resource
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from headgan_jax import config_files, host_malloc  # noqa: E402
from headgan_jax.errors import HeadGANError  # noqa: E402
from headgan_jax.nn import generator as generator_lib  # noqa: E402
from train_step import apply_overrides, compiled_flops, peak_flops  # noqa: E402


def _return_freed_memory_to_the_os() -> None:
  """glibc: serve every allocation over 1 MiB by mmap, so a buffer XLA or PyTorch frees leaves the process at once;
  otherwise the heap keeps the larger of the two frameworks' step peaks AND the other's, and the process' memory is
  their sum rather than their maximum."""
  try:
    libc = ctypes.CDLL('libc.so.6')
  except OSError:
    return
  m_mmap_threshold = -3
  libc.mallopt(m_mmap_threshold, 1 << 20)


def _device_info(config) -> dict:
  devices = jax.devices()
  return {'image_size': config.image_size, 'dtype': config.runtime.compute_dtype, 'devices': len(devices),
          'device_kind': devices[0].device_kind, 'platform': devices[0].platform, 'malloc': host_malloc.active()}


def random_inputs(config, batch: int, seed: int = 1):
  """G's inputs (x_drive, y_ref, x_ref, audio) and a target image, uniform in [-1, 1] (NumPy: no jax.random
  compile)."""
  rng = np.random.default_rng(seed)
  inputs = tuple(jnp.asarray(rng.uniform(-1, 1, s.shape).astype(np.float32))
                 for s in generator_lib.example_inputs(config, batch))
  target = jnp.asarray(rng.uniform(-1, 1, (batch, config.image_size, config.image_size, 3)).astype(np.float32))
  return inputs, target


def random_variables(module, inputs, seed: int = 0):
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


def run_train(args: argparse.Namespace) -> dict:
  """G's training step (fwd + L1 + bwd + Adam, SN vectors updated): conv_impl 'xla', 'auto' [and PyTorch]."""
  import optax  # pylint: disable=import-outside-toplevel
  config = apply_overrides(config_files.load(args.config), args)
  b = config.train.batch_size
  inputs, target = random_inputs(config, b)
  t = config.train
  tx = optax.adam(t.lr, b1=t.b1, b2=t.b2)
  if args.vs_torch:
    # Before any conv_impl is chosen: loading the oneDNN handlers may set OMP_WAIT_POLICY
    # (headgan_jax/kernels/onednn.py), which PyTorch's own OpenMP runtime must not see (it reads it when it loads).
    import torch  # noqa: F401  # pylint: disable=import-outside-toplevel,unused-import
  nets = {}
  for impl in args.impls.split(','):
    config.runtime.conv_impl = impl
    nets[impl] = generator_lib.make_generator(config)
  variables = random_variables(next(iter(nets.values())), inputs)

  def make_step(g):
    def loss_fn(params, stats, inputs, target):
      out, new = g.apply({'params': params, 'batch_stats': stats}, *inputs, update_stats=True,
                         mutable=['batch_stats'])
      loss = jnp.mean(jnp.abs(out.image - target)) + jnp.mean(jnp.abs(out.warped_ref - target))
      return loss, new['batch_stats']

    # The frames are arguments, as in the real train step: closed over, XLA would constant-fold work on them.
    def step(params, stats, opt_state, inputs, target):
      (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, inputs, target)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), stats, opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1, 2))

  # ONE train state, stepped by whichever implementation's turn it is: both compute the same maths, and a second
  # copy of G's parameters and Adam moments (0.6 GB at the paper size) would only add memory.
  carry = [jax.tree.map(jnp.copy, variables['params']), jax.tree.map(jnp.copy, variables['batch_stats'])]
  carry.append(tx.init(carry[0]))
  fns, compile_s = {}, {}
  for impl, g in nets.items():
    t0 = time.perf_counter()
    compiled = make_step(g).lower(*carry, inputs, target).compile()
    compile_s[impl] = round(time.perf_counter() - t0, 1)
    print(f'compiled the G step with conv_impl={impl!r} in {compile_s[impl]:.1f} s', flush=True)

    def run_once(compiled=compiled):
      *carry[:], loss = compiled(*carry, inputs, target)
      return float(loss)

    fns[impl] = run_once
  result = {'bench': 'g_step', 'mode': 'train', 'config': args.config, 'batch': b, **_device_info(config),
            'compile_s': compile_s, 'loss': 'L1(image) + L1(warped_ref), Adam'}
  if args.vs_torch:
    fns['torch'], result['torch'] = _torch_g_step(config, variables, next(iter(nets.values())), inputs, target)
  for fn in fns.values():  # Warm-up.
    fn()
  times = _summary(_interleaved(fns, args.steps))
  result['times'] = times
  result['max_rss_gb'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
  if 'xla' in times and 'auto' in times:
    result['speedup_auto_over_xla'] = round(times['xla']['median_ms'] / times['auto']['median_ms'], 3)
  if args.vs_torch:
    for impl in nets:
      result[f'ratio_{impl}_over_torch'] = round(times[impl]['median_ms'] / times['torch']['median_ms'], 3)
  return result


def _torch_g_step(config, variables, g, inputs, target):
  """A step callable of the PyTorch twin, after checking its forward pass against ours on the same inputs."""
  import torch  # pylint: disable=import-outside-toplevel
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
  image_j = np.asarray(jax.jit(lambda v, x: g.apply(v, *x).image)(variables, inputs))
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


def run_inference(args: argparse.Namespace) -> dict:
  """G's forward pass (jit, no gradients) at `batch` frames: frames/s."""
  config = apply_overrides(config_files.load(args.config), args)
  b = config.train.batch_size
  g = generator_lib.make_generator(config)
  inputs, _ = random_inputs(config, b)
  variables = random_variables(g, inputs)
  t0 = time.perf_counter()
  compiled = jax.jit(lambda v, *x: g.apply(v, *x).image).lower(variables, *inputs).compile()
  compile_s = time.perf_counter() - t0
  flops = compiled_flops(compiled)
  jax.block_until_ready(compiled(variables, *inputs))
  times = _interleaved({'g': lambda: jax.block_until_ready(compiled(variables, *inputs))}, args.steps)['g']
  step_s = float(np.median(times))
  peak = peak_flops(jax.devices()[0], config.runtime.compute_dtype)
  return {'bench': 'g_step', 'mode': 'inference', 'config': args.config, 'batch': b, **_device_info(config),
          'conv_impl': config.runtime.conv_impl, 'compile_s': round(compile_s, 2),
          'batch_ms_median': round(1e3 * step_s, 2), 'frames_per_s': round(b / step_s, 2),
          'flops_per_frame': None if flops is None else flops / b,
          'mfu': None if not (peak and flops) else round(flops / step_s / peak, 4)}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', default=str(REPO / 'configs' / 'tiny.py'), help='config file with get_config()')
  parser.add_argument('--batch', type=int, default=0, help='frames per step (default config.train.batch_size)')
  parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='', help='config.runtime.compute_dtype')
  parser.add_argument('--image-size', type=int, default=0, help='override config.image_size')
  parser.add_argument('--impls', default='xla,auto',
                      help="train mode: the conv_impl values to time side by side, e.g. 'xla,im2col,onednn'")
  parser.add_argument('--conv-impl', choices=('auto', 'xla', 'im2col', 'onednn'), default='',
                      help='with --inference: config.runtime.conv_impl')
  parser.add_argument('--steps', type=int, default=5, help='timed rounds (after one warm-up)')
  parser.add_argument('--vs-torch', action='store_true', help='also time the PyTorch twin of G (CPU torch)')
  parser.add_argument('--inference', action='store_true', help="G's forward pass instead of its train step")
  args = parser.parse_args(argv)
  _return_freed_memory_to_the_os()
  try:
    result = run_inference(args) if args.inference else run_train(args)
  except HeadGANError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f"device: {result['devices']} x {result['device_kind']} ({result['platform']}), dtype {result['dtype']}, "
        f"{result['image_size']}x{result['image_size']}, batch {result['batch']}")
  if args.inference:
    print(f"G forward: {result['batch_ms_median']:.1f} ms per batch, {result['frames_per_s']:.2f} frames/s"
          + ('' if result['mfu'] is None else f", MFU {100 * result['mfu']:.2f}%"))
  else:
    for name, t in result['times'].items():
      print(f"{name:6} median {t['median_ms']:10.1f} ms  (min {t['min_ms']:.1f}; all {t['all_ms']})")
    if 'speedup_auto_over_xla' in result:
      print(f"speed-up of conv_impl 'auto' over 'xla': {result['speedup_auto_over_xla']:.2f}x")
    print(f"process peak memory {result['max_rss_gb']:.2f} GiB")
    for key, value in result.items():
      if key.startswith('ratio_'):
        print(f"ours (conv_impl {key[len('ratio_'):-len('_over_torch')]!r}) / PyTorch time: {value:.3f}")
  print(json.dumps(result))
  return 0


if __name__ == '__main__':
  host_malloc.reexec_with_tcmalloc()  # First: it may start this command again (headgan_jax/host_malloc.py).
  sys.exit(main())
