"""One-shot GPU check of HeadGAN (issue 21, item 6): `bash bench/gpu_check.sh` prints ONE JSON line.

  bash bench/gpu_check.sh                  # one H100 / H200: configs/paper.py, 256 px, per-device batch 6
  bash bench/gpu_check.sh --smoke          # anywhere (CPU): a tiny config, 2 steps, for a smoke check
  bash bench/gpu_check.sh --sections train_bfloat16,inference --budget-s 300 --out result.json

Sections, each in its own process (so each reports its own peak device memory, and a failure or an out-of-memory
stops only that section), run in this order while the time budget (--budget-s, default 450 s: the whole check
within 8 minutes, compiles included) lasts; a section that does not fit is listed under "skipped" with the reason:
  train_bfloat16, train_float32  the project's training step (`train/step.make_train_step`, config.runtime.conv_impl as
          the config says: 'auto' must resolve to XLA's convolution on a GPU, checked) on synthetic batches at the
          per-device batch, one device: both compiled variants (with and without the D update, config.train.d_update
          'two_steps'), one D cycle of warm-up, then --steps timed steps (whole D cycles): samples/s, step times,
          compile time, FLOPs per sample (XLA's `cost_analysis()` of the lowered steps, as bench/export.py and the
          budgets count them, mean over a D cycle; the compiled programs' own count beside it), MFU
          against the device's peak for the dtype (bf16 dense tensor-core peak for bfloat16; TF32 dense peak for
          float32, which XLA's default precision uses for float32 convolutions and matrix products on these GPUs;
          `mfu_vs_bf16_peak` too, the basis of docs/accelerators.md's budgets), peak device memory
          (`memory_stats()['peak_bytes_in_use']`), XLA's memory analysis of the compiled step, the custom calls of
          the compiled program (cuDNN's convolutions expected; none of oneDNN / the CPU);
  inference  G's forward pass (`generator.apply`, random initial weights) at batch 1 (latency, frames/s) and at
          --big-batch (32; frames/s), float32 and bfloat16;
  render     the input pipeline's device part (`data.pipeline.assemble`'s x images): the k + 3 frames of each of
          the per-device batch's examples rendered from 3DMM coefficients (the learned model, random coefficients,
          the face ~60 % of the crop wide) with the project's rasteriser: ms per example, and its fraction of the
          train step's time per example (bf16 step, else fp32);
  exported   `bench/export.py`'s programs, exported HERE for ('cuda', 'tpu') at once exactly as that script does (flat
          inputs, conv_impl 'xla', the batch sharded over a 'data' mesh), serialized, deserialized and called
          (`Exported.call`) on real inputs (initial state, a synthetic batch, random VGG weights): compile time, time
          per call, outputs finite. The mesh is this machine's device count (--devices): on one GPU these are the
          single-device variants; the 8-device files bench/export.py writes by default need 8 devices to run.
          Programs in order of importance (bf16 train step with the D update, G at batch 1 and 32, ...) while time
          lasts.
Random weights throughout (no VGG weight file exists offline; the cost does not depend on the values) and synthetic
batches (no input pipeline: bench/pipeline_appetite.py measures the host's part).

--smoke: a tiny config (16 px, narrow, VGG off), per-device batch 2, big batch 4, 2 timed steps, platform of this machine
(cpu), budget 110 s: for tests/test_gpu_check.py and to try the script without a GPU. Never measures anything worth
reporting.

Output: progress on stderr; on stdout ONE JSON line (also written atomically to --out): the machine (device kind,
jax version), the settings, a dict per section, "skipped" and "errors" (section -> reason) and "ok" (every section
ran without error).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import pathlib
import re
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
# bench/export.py sets JAX_PLATFORMS=cpu when unset (it only lowers); here the accelerator must be used.
os.environ.setdefault('JAX_PLATFORMS', '')

from headgan_jax.files import write_atomic  # noqa: E402  (after JAX_PLATFORMS)

SECTIONS = ('train_bfloat16', 'train_float32', 'inference', 'render', 'exported')
DTYPES = ('float32', 'bfloat16')
SUFFIX = {'float32': 'fp32', 'bfloat16': 'bf16'}
# Peak dense FLOP/s per device for (bfloat16, float32 at XLA's default precision = TF32), NVIDIA data sheets.
PEAK_FLOPS = {'H100 PCIe': (756e12, 378e12), 'H100': (989.4e12, 494.7e12), 'H200': (989.4e12, 494.7e12),
              'A100': (312e12, 156e12)}
SMOKE_XLA_FLAGS = ('--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true '
                   '--xla_cpu_use_fusion_emitters=false')
CPU_ONLY_WORDS = ('onednn', 'dnnl', 'xla_ffi_python', 'callback')
_CUSTOM_CALL = re.compile(r'custom_call_target="([^"]+)"')


def log(msg: str) -> None:
  print(f'[gpu_check {time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Settings.

def smoke_config():
  """A tiny config with the parts of the paper's training step (F with its flow, R, D, D_m, two compiled steps) at
  16 px, one down level, one-scale two-layer discriminators (tests/train_configs.py's loop size), VGG off: every
  compile takes seconds on a CPU."""
  from configs import tiny
  c = tiny.get_config()
  c.image_size = 16
  c.model.ngf = 8
  c.model.num_down = 1
  c.model.blocks.spade_hidden = 8
  c.model.flow_low_blocks = 1
  c.disc.ndf = 4
  c.disc.max_channels = 16
  c.disc.num_scales = 1
  c.disc.num_layers = 2
  c.disc.mouth_size = 8
  c.loss.use_vgg = False
  c.train.d_every = 2
  return c


def base_config(args):
  """The config of the check: paper.py (or --smoke's), the per-device batch, a fixed epoch for the schedule."""
  if args.smoke:
    config = smoke_config()
  else:
    from configs import paper
    config = paper.get_config()
  if args.batch:
    config.train.batch_size = args.batch
  elif args.smoke:
    config.train.batch_size = 2
  if not config.train.steps_per_epoch:
    config.train.steps_per_epoch = 1000  # Synthetic data has no epoch; only the learning-rate value depends on it.
  return config


def peak_flops(device, dtype: str) -> tuple[float | None, str | None]:
  """(peak FLOP/s, what it is) of a known GPU for `dtype`; (None, None) elsewhere (e.g. the CPU)."""
  if device.platform != 'gpu':
    return None, None
  for name in sorted(PEAK_FLOPS, key=len, reverse=True):  # 'H100 PCIe' before 'H100'.
    if name in device.device_kind:
      bf16, tf32 = PEAK_FLOPS[name]
      return (bf16, f'{name} bf16 dense') if dtype == 'bfloat16' else (tf32, f'{name} TF32 dense')
  return None, None


def peak_bytes(device) -> int | None:
  """peak_bytes_in_use of the device's allocator since this process started (None where not reported: CPU)."""
  stats = device.memory_stats()
  return int(stats['peak_bytes_in_use']) if stats and 'peak_bytes_in_use' in stats else None


def host_max_rss() -> int:
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def compiled_flops(compiled) -> float | None:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost['flops']) if cost and 'flops' in cost else None


def memory_analysis(compiled) -> dict | None:
  m = compiled.memory_analysis()
  if m is None:
    return None
  return {k: int(getattr(m, f'{k}_size_in_bytes')) for k in ('temp', 'argument', 'output', 'alias')
          if hasattr(m, f'{k}_size_in_bytes')}


def custom_calls(compiled) -> list[str]:
  """Custom-call targets of a compiled program's HLO (cuDNN convolutions on a GPU)."""
  try:
    text = compiled.as_text()
  except Exception:  # pylint: disable=broad-except  (some backends cannot print the optimised HLO)
    return []
  return sorted(set(_CUSTOM_CALL.findall(text or '')))


def cpu_only(targets) -> list[str]:
  return [t for t in targets if any(w in t.lower() for w in CPU_ONLY_WORDS)]


def conv_resolution() -> str:
  """What config.runtime.conv_impl 'auto' resolves to in this process (on a GPU: XLA's own)."""
  from headgan_jax.kernels import conv
  fn = conv.conv_general_dilated_for('auto')
  import jax
  return 'xla' if fn is jax.lax.conv_general_dilated else f'{fn.__module__}.{fn.__name__}'


def vgg_setup(config, mesh):
  """(vgg_apply, replicated random VGG19 params) or (None, None) without the VGG terms."""
  import jax
  import jax.numpy as jnp
  from headgan_jax import sharding as sharding_lib
  from headgan_jax.nn import vgg as vgg_lib
  if not config.loss.use_vgg:
    return None, None
  model = vgg_lib.vgg19_module_from_config(config)
  params = model.init(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))['params']
  return (lambda p, x: model.apply({'params': p}, x)), jax.device_put(params, sharding_lib.replicated(mesh))


def _finite(tree) -> bool:
  import jax
  import numpy as np
  return all(bool(np.isfinite(np.asarray(x, np.float32)).all()) for x in jax.tree.leaves(tree)
             if np.issubdtype(np.asarray(x).dtype, np.floating) or str(np.asarray(x).dtype) == 'bfloat16')


# ----------------------------------------------------------------------------------------------------------------
# Sections (each runs in its own process: `--section NAME --result FILE`).

def section_train(args, dtype: str) -> dict:
  import jax
  import numpy as np
  from headgan_jax import sharding as sharding_lib
  from headgan_jax.data import batch as batch_lib
  from headgan_jax.train import state as state_lib, step as step_lib
  config = base_config(args)
  config.runtime.compute_dtype = dtype
  devices = jax.devices()[:args.devices]
  mesh = sharding_lib.make_mesh(devices)
  per_device = int(config.train.batch_size)
  config.train.batch_size = per_device * len(devices)  # The project's config holds the global batch.
  models, optimizers = state_lib.make_models(config), state_lib.make_optimizers(config)
  vgg_apply, vgg_params = vgg_setup(config, mesh)
  t0 = time.perf_counter()
  state = step_lib.init_state_sharded(jax.random.key(config.seed), config, models, optimizers, mesh)
  batch = sharding_lib.shard_batch(batch_lib.synthetic_batch(jax.random.key(0), config), mesh)
  jax.block_until_ready((state, batch))
  init_s = time.perf_counter() - t0
  train_step = step_lib.make_train_step(config, models, optimizers, mesh, vgg_apply)
  d_every = int(config.train.d_every)
  t0 = time.perf_counter()
  compiled, names, lowered_flops = {}, {}, {}
  for s in range(d_every):
    fn = train_step.jitted_for(s)
    if fn not in compiled:
      lowered = train_step.lower(state, batch, vgg_params, step=s)
      names[fn] = 'd' if train_step.updates_d(s) or train_step.jitted_with_d is None else 'no_d'
      lowered_flops[names[fn]] = compiled_flops(lowered)
      compiled[fn] = lowered.compile()
  compile_s = time.perf_counter() - t0
  log(f'train {dtype}: compiled {len(compiled)} step(s) in {compile_s:.1f} s')
  for s in range(d_every):  # Warm-up: one D cycle (first executions allocate).
    state, metrics = compiled[train_step.jitted_for(s)](state, batch, vgg_params)
  jax.block_until_ready(metrics)
  steps = max(d_every, args.steps // d_every * d_every)  # Whole D cycles: a fair mean.
  times = {'d': [], 'no_d': []}
  t_all = time.perf_counter()
  for s in range(steps):
    fn = train_step.jitted_for(s)
    t0 = time.perf_counter()
    state, metrics = compiled[fn](state, batch, vgg_params)
    jax.block_until_ready(metrics)
    times[names[fn]].append(time.perf_counter() - t0)
  total = time.perf_counter() - t_all
  # FLOPs: XLA's count of the lowered (unoptimised) HLO, the basis of bench/export.py and docs/accelerators.md's
  # budgets; the compiled program's own count is reported beside it (a backend may not count its library calls).
  compiled_count = {names[fn]: compiled_flops(c) for fn, c in compiled.items()}
  flops, flops_source = lowered_flops, 'XLA cost_analysis of the lowered steps (as bench/export.py)'
  if None in flops.values():
    flops, flops_source = compiled_count, 'XLA cost_analysis of the compiled steps'
  n_no_d = sum(1 for s in range(d_every) if names[train_step.jitted_for(s)] == 'no_d')
  cycle_flops = None if None in flops.values() else (
      flops.get('no_d', 0.0) * n_no_d + flops['d'] * (d_every - n_no_d))
  step_mean = total / steps
  flops_per_step = None if cycle_flops is None else cycle_flops / d_every  # Per device program.
  peak, peak_name = peak_flops(devices[0], dtype)
  bf16_peak, _ = peak_flops(devices[0], 'bfloat16')
  achieved = None if flops_per_step is None else flops_per_step / step_mean
  targets = sorted({t for c in compiled.values() for t in custom_calls(c)})
  resolved = conv_resolution()
  return {
      'dtype': dtype, 'image_size': int(config.image_size), 'per_device_batch': per_device, 'devices': len(devices),
      'conv_impl': str(config.runtime.conv_impl), 'conv_impl_auto_resolves_to': resolved,
      'xla_conv_on_gpu': None if devices[0].platform != 'gpu' else resolved == 'xla',
      'd_every': d_every, 'init_s': round(init_s, 2), 'compile_s': round(compile_s, 2), 'steps_timed': steps,
      'samples_per_s': round(config.train.batch_size * steps / total, 3),
      'samples_per_s_per_device': round(per_device * steps / total, 3),
      'step_ms_mean': round(1e3 * step_mean, 3),
      'step_ms_median': {k: round(1e3 * float(np.median(v)), 3) for k, v in times.items() if v},
      'flops_per_sample': None if flops_per_step is None else flops_per_step / per_device,
      'flops_per_step_by_variant': flops, 'flops_source': flops_source,
      'flops_per_step_compiled_count': compiled_count, 'achieved_tflops': None if achieved is None else round(achieved / 1e12, 2),
      'peak_tflops': None if peak is None else peak / 1e12, 'peak_basis': peak_name,
      'mfu': None if peak is None or achieved is None else round(achieved / peak, 4),
      'mfu_vs_bf16_peak': None if bf16_peak is None or achieved is None else round(achieved / bf16_peak, 4),
      'peak_bytes_in_use': peak_bytes(devices[0]), 'host_max_rss_bytes': host_max_rss(),
      'xla_memory_analysis': {names[fn]: memory_analysis(c) for fn, c in compiled.items()},
      'compiled_custom_calls': targets, 'cpu_only_custom_calls': cpu_only(targets),
      'metrics_finite': _finite(metrics), 'g_loss_last': float(metrics['g_total']),
  }


def section_inference(args) -> dict:
  import jax
  import numpy as np
  from headgan_jax.nn import generator as gen_lib
  from headgan_jax.train import state as state_lib
  device = jax.devices()[0]
  out = {}
  for dtype in args.inference_dtypes.split(','):
    config = base_config(args)
    config.runtime.compute_dtype = dtype
    g = state_lib.make_models(config).generator
    variables = jax.jit(g.init)(jax.random.key(0), *gen_lib.example_inputs(config, 1))
    apply = jax.jit(lambda v, *x: g.apply(v, *x).image)
    entry = {}
    for batch in (1, args.big_batch):
      keys = jax.random.split(jax.random.key(batch), 4)
      xs = [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, gen_lib.example_inputs(config, batch))]
      t0 = time.perf_counter()
      lowered = apply.lower(variables, *xs)
      compiled = lowered.compile()
      compile_s = time.perf_counter() - t0
      y = jax.block_until_ready(compiled(variables, *xs))
      times = []
      for _ in range(args.inference_calls):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(variables, *xs))
        times.append(time.perf_counter() - t0)
      med = float(np.median(times))
      flops = compiled_flops(lowered)  # As the train sections and bench/export.py count.
      entry[f'b{batch}'] = {'batch': batch, 'compile_s': round(compile_s, 2), 'calls_timed': len(times),
                            'latency_ms_median': round(1e3 * med, 3), 'latency_ms_min': round(1e3 * min(times), 3),
                            'frames_per_s': round(batch / med, 2),
                            'flops_per_frame': None if flops is None else flops / batch,
                            'output_shape': list(y.shape), 'output_finite': _finite(y)}
      log(f'inference {dtype} b{batch}: {batch / med:.1f} frames/s ({1e3 * med:.2f} ms per call), compile '
          f'{compile_s:.1f} s')
    out[dtype] = entry
  out['image_size'] = int(base_config(args).image_size)
  out['conv_impl_auto_resolves_to'] = conv_resolution()
  out['peak_bytes_in_use'] = peak_bytes(device)
  out['host_max_rss_bytes'] = host_max_rss()
  return out


def section_render(args) -> dict:
  """The input pipeline's device part: x of the k + 3 frames of every example (t-1-k .. t and ref) rendered from
  3DMM coefficients with the project's rasteriser, as `data.pipeline.assemble` does, at the per-device batch."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from headgan_jax.face3d import camera as cam_lib, morphable, render
  config = base_config(args)
  size, k, b = int(config.image_size), int(config.model.num_past_frames), int(config.train.batch_size)
  n = b * (k + 3)
  learned = REPO / 'headgan_jax' / 'tracking' / 'learned_face_model.npz'  # The tracker's default model (datasets').
  model = morphable.load(learned) if learned.exists() else morphable.load_default()
  rng = np.random.default_rng(0)
  extent = float(np.ptp(np.asarray(model.mean)[:, 0]))
  cam = cam_lib.Camera(rotation=jnp.tile(jnp.float32([1, 0, 0, 0, 1, 0]), (n, 1)),
                       translation=jnp.full((n, 2), size / 2, jnp.float32),
                       scale=jnp.full((n,), 0.6 * size / extent, jnp.float32))  # The face ~60 % of the crop wide.
  p_id = jnp.asarray(rng.normal(0, 0.5, (n, model.num_id)), jnp.float32)
  p_exp = jnp.asarray(rng.normal(0, 0.5, (n, model.exp_basis.shape[0])), jnp.float32)

  @jax.jit
  def render_all(p_id, p_exp, cam):
    verts = cam_lib.project(morphable.identity_adaptation(model, p_id, p_exp), cam)
    return render.render_face(model, verts, size, size, config.face3d.x_image_mode)

  t0 = time.perf_counter()
  compiled = render_all.lower(p_id, p_exp, cam).compile()
  compile_s = time.perf_counter() - t0
  x = jax.block_until_ready(compiled(p_id, p_exp, cam))
  times = []
  for _ in range(args.inference_calls):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(p_id, p_exp, cam))
    times.append(time.perf_counter() - t0)
  med = float(np.median(times))
  covered = float(np.mean(np.asarray(x).any(axis=-1)))
  log(f'render: {n} x images of {size} px in {1e3 * med:.2f} ms ({1e3 * med / b:.2f} ms per example)')
  return {'image_size': size, 'per_device_batch': b, 'frames_per_example': k + 3, 'faces': int(model.faces.shape[0]),
          'compile_s': round(compile_s, 2), 'calls_timed': len(times), 'ms_per_batch': round(1e3 * med, 3),
          'ms_per_example': round(1e3 * med / b, 3), 'face_pixel_fraction': round(covered, 3),
          'output_finite': _finite(x), 'peak_bytes_in_use': peak_bytes(jax.devices()[0])}


def _load_export_module():
  spec = importlib.util.spec_from_file_location('bench_export', REPO / 'bench' / 'export.py')
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # Its dataclasses look their module up there.
  spec.loader.exec_module(module)
  return module


def exported_order(big_batch: int) -> list[str]:
  """bench/export.py's program names, most important first (the order the exported section calls them in)."""
  order = [f'{n}_{SUFFIX[d]}' for d in ('bfloat16', 'float32')
           for n in ('train_step_d', 'g_inference_b1', f'g_inference_b{big_batch}')]
  return order + [f'train_step_no_d_{SUFFIX[d]}' for d in ('bfloat16', 'float32')]


class _ExportInputs:
  """Per compute dtype: bench/export.py's programs for this machine's mesh, and real inputs for them, made when first
  needed (the initial train state only for a train step; G's own initial variables otherwise)."""

  def __init__(self, args, ex, n_devices: int):
    self.args, self.ex, self.n_devices, self._cache = args, ex, n_devices, {}

  def _for(self, dtype: str) -> dict:
    from headgan_jax.train import state as state_lib
    if dtype not in self._cache:
      config = self.ex.prepare_config(base_config(self.args), dtype, None)  # conv_impl 'xla', as the script.
      models, optimizers = state_lib.make_models(config), state_lib.make_optimizers(config)
      spec = self.ex.state_spec(config, models, optimizers)
      progs = self.ex.train_programs(config, self.n_devices, models, optimizers, spec)
      progs += [self.ex.inference_program(config, self.n_devices, models, spec, b) for b in (1, self.args.big_batch)]
      self._cache[dtype] = dict(config=config, models=models, optimizers=optimizers,
                                programs={p.name: p for p in progs})
    return self._cache[dtype]

  def program(self, name: str):
    dtype = {v: k for k, v in SUFFIX.items()}[name.rsplit('_', 1)[1]]
    return self._for(dtype)['programs'][name], dtype

  def inputs(self, program, dtype: str) -> list:
    """The program's flat inputs in bench/export.py's order: real values of the shapes it was exported for."""
    import jax
    import jax.numpy as jnp
    from headgan_jax.data import batch as batch_lib
    from headgan_jax.nn import generator as gen_lib, vgg as vgg_lib
    from headgan_jax.train import state as state_lib
    c = self._for(dtype)
    config, models = c['config'], c['models']
    if program.kind == 'train_step':
      if 'state' not in c:
        c['state'] = state_lib.jit_init_state(config, models, c['optimizers'])(jax.random.key(config.seed))
        c['vgg'] = None
        if config.loss.use_vgg:
          vgg = vgg_lib.vgg19_module_from_config(config)
          c['vgg'] = jax.jit(vgg.init)(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))['params']
      global_config = config.copy_and_resolve_references()
      global_config.train.batch_size = program.global_batch
      return jax.tree.leaves((c['state'], batch_lib.synthetic_batch(jax.random.key(0), global_config), c['vgg']))
    if 'g_variables' not in c:
      c['g_variables'] = jax.jit(models.generator.init)(jax.random.key(0), *gen_lib.example_inputs(config, 1))
    keys = jax.random.split(jax.random.key(2), 4)
    xs = dict(zip(('x_drive', 'y_ref', 'x_ref', 'audio'), (jax.random.normal(k, x.shape, x.dtype) for k, x in zip(
        keys, gen_lib.example_inputs(config, program.global_batch)))))
    v = c['g_variables']
    return jax.tree.leaves(({'params': v['params'], 'batch_stats': v.get('batch_stats', {})}, xs))


def section_exported(args, emit=lambda partial: None) -> dict:
  """bench/export.py's programs exported here, serialized, deserialized and called on real inputs (docstring)."""
  import jax
  from jax import export as jax_export
  ex = _load_export_module()
  devices = jax.devices()[:args.devices]
  platforms = ('cpu',) if args.smoke else tuple(args.platforms.split(','))
  source = _ExportInputs(args, ex, len(devices))
  names = [n.strip() for n in args.exported.split(',') if n.strip()] if args.exported else exported_order(
      args.big_batch)
  programs, skipped, took = [], [], {}

  def summary() -> dict:
    return {'platforms': list(platforms), 'devices': len(devices),
            'note': (f'exported here for {len(devices)} device(s) with bench/export.py\'s functions; the files '
                     'bench/export.py writes by default are 8-device programs, which need 8 devices to be called')
            if len(devices) < 8 else f'exported here for {len(devices)} devices, as bench/export.py does by default',
            'programs': programs, 'not_run_for_time': skipped, 'peak_bytes_in_use': peak_bytes(devices[0]),
            'host_max_rss_bytes': host_max_rss()}

  for full in names:
    kind = 'train_step' if full.startswith('train_step') else 'g_inference'
    if time.time() + took.get(kind, 0.0) > args.deadline:  # As long as the last one of its kind took.
      skipped.append(full)
      continue
    entry, started = {'name': full}, time.time()
    try:
      program, dtype = source.program(full)
      entry.update(kind=program.kind, global_batch=program.global_batch)
      t0 = time.perf_counter()
      blob = jax_export.export(program.jitted, platforms=platforms)(*program.in_specs).serialize()
      exp = jax_export.deserialize(bytearray(blob))
      entry.update(export_s=round(time.perf_counter() - t0, 2), bytes=len(blob), platforms=list(exp.platforms),
                   nr_devices=exp.nr_devices,
                   bad_custom_calls=ex.bad_custom_calls(ex.custom_call_targets(exp.mlir_module())))
      inputs = source.inputs(program, dtype)
      if [tuple(a.shape) for a in inputs] != [tuple(a.shape) for a in exp.in_avals]:
        raise ValueError('the real inputs do not have the exported program\'s shapes')
      inputs = [jax.device_put(a, sh) for a, sh in zip(inputs, _placements(exp, devices))]
      t0 = time.perf_counter()
      call = jax.jit(exp.call).lower(*inputs).compile()
      entry['compile_s'] = round(time.perf_counter() - t0, 2)
      jax.block_until_ready(call(*inputs))
      t0 = time.perf_counter()
      outs = jax.block_until_ready(call(*inputs))
      entry.update(call_ms=round(1e3 * (time.perf_counter() - t0), 3), outputs=len(jax.tree.leaves(outs)),
                   outputs_finite=_finite(outs), called=True)
    except Exception as e:  # pylint: disable=broad-except  (reported in the JSON: the check goes on)
      entry.update(called=False, error=f'{type(e).__name__}: {str(e)[:300]}')
    log(f'exported {full}: ' + (f'called, compile {entry.get("compile_s")} s, {entry.get("call_ms")} ms per call'
                                if entry.get('called') else entry.get('error', '')))
    programs.append(entry)
    took[kind] = max(took.get(kind, 0.0), time.time() - started)
    emit(summary())  # Kept if the section is stopped at the time budget during the next program.
  return summary()


def _placements(exp, devices):
  """Where each input of a deserialized program goes: its sharding on a mesh of `devices` (one device: there)."""
  import jax
  from jax.sharding import Mesh, NamedSharding
  if exp.nr_devices == 1:
    return [jax.sharding.SingleDeviceSharding(devices[0])] * len(exp.in_avals)
  import numpy as np
  mesh = Mesh(np.asarray(devices[:exp.nr_devices]), ('data',))
  out = []
  for sh, aval in zip(exp.in_shardings_hlo, exp.in_avals):
    tiled = sh is not None and sh.is_tiled() and list(sh.tile_assignment_dimensions())[:1] == [exp.nr_devices]
    spec = jax.sharding.PartitionSpec('data', *([None] * (len(aval.shape) - 1))) if tiled else \
        jax.sharding.PartitionSpec()
    out.append(NamedSharding(mesh, spec))
  return out


def run_section(args) -> dict:
  import jax
  from headgan_jax import compilation_cache
  cache = compilation_cache.enable()  # As the project's entry points ($HEADGAN_JAX_COMPILATION_CACHE=off: off).
  log(f'section {args.section}: {jax.devices()[:args.devices]}, compilation cache {cache}')
  if args.section.startswith('train_'):
    out = section_train(args, args.section.split('_', 1)[1])
  elif args.section == 'inference':
    out = section_inference(args)
  elif args.section == 'render':
    out = section_render(args)
  else:
    out = section_exported(args, emit=lambda partial: write_atomic(args.result, json.dumps(partial)))
  out['compilation_cache'] = None if cache is None else str(cache)
  out['machine'] = machine_info()
  return out


# ----------------------------------------------------------------------------------------------------------------
# The driver: one process per section, within the time budget.

def child_argv(args, section: str, result: str, deadline: float) -> list[str]:
  argv = [sys.executable, os.path.abspath(__file__), '--section', section, '--result', result,
          '--deadline', str(deadline), '--steps', str(args.steps), '--devices', str(args.devices),
          '--big-batch', str(args.big_batch), '--inference-calls', str(args.inference_calls),
          '--platforms', args.platforms, '--exported', args.exported,
          '--inference-dtypes', args.inference_dtypes]
  if args.batch:
    argv += ['--batch', str(args.batch)]
  return argv + (['--smoke'] if args.smoke else [])


def child_env(args) -> dict:
  """The sections' environment: --smoke compiles with LLVM at -O0 on the CPU (the tests' flags; XLA's GPU compile
  is not affected), so each compile takes seconds."""
  env = dict(os.environ)
  if args.smoke:
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' ' + SMOKE_XLA_FLAGS).strip()
  return env


def machine_info() -> dict:
  """The device and versions (each section reports them; the driver process never starts jax's backends)."""
  import jax
  import jaxlib
  d = jax.devices()[0]
  return dict(platform=d.platform, device_kind=d.device_kind, device_count=jax.device_count(), jax=jax.__version__,
              jaxlib=jaxlib.__version__)


def machine() -> dict:
  """machine_info() from a separate process (when no section ran)."""
  code = (f'import json, runpy; gpu_check = runpy.run_path({os.path.abspath(__file__)!r}); '
          "print(json.dumps(gpu_check['machine_info']()))")
  try:
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
  except (subprocess.SubprocessError, ValueError, IndexError) as e:
    return {'machine_error': f'{type(e).__name__}: {e}'[:300]}


def gpu_conv_problem(section: dict) -> str | None:
  """Why a train section's program is not what a GPU must run (conv_impl 'auto' not XLA's, a CPU custom call)."""
  if section.get('xla_conv_on_gpu') is False:
    return f"conv_impl 'auto' resolved to {section.get('conv_impl_auto_resolves_to')} on the GPU, not XLA's"
  if section.get('xla_conv_on_gpu') and section.get('cpu_only_custom_calls'):
    return f"CPU-only custom calls in the GPU program: {section['cpu_only_custom_calls']}"
  return None


def drive(args) -> dict:
  start = time.time()
  deadline = start + args.budget_s
  sections = [s.strip() for s in args.sections.split(',') if s.strip()]
  result: dict[str, Any] = {
      'bench': 'gpu_check', 'date': time.strftime('%Y-%m-%d %H:%M %Z'), 'smoke': bool(args.smoke),
      'config': 'smoke (tiny, 16 px)' if args.smoke else 'configs/paper.py',
      'per_device_batch': int(base_config(args).train.batch_size), 'image_size': int(base_config(args).image_size),
      'steps_timed': args.steps, 'big_batch': args.big_batch, 'budget_s': args.budget_s,
      'weights': 'random: initial G, D, D_m' + ('; VGG19 random' if base_config(args).loss.use_vgg else
                                                '; VGG terms off'), 'batches': 'synthetic', 'sections_run': [],
      'skipped': {}, 'errors': {}}
  log(f'sections {sections}; budget {args.budget_s:.0f} s')
  for section in sections:
    left = deadline - time.time()
    if left < args.min_section_s:
      result['skipped'][section] = f'time budget spent ({args.budget_s:.0f} s; {left:.0f} s left)'
      continue
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, 'section.json')
      t0 = time.time()
      try:
        proc = subprocess.run(child_argv(args, section, path, deadline - 20), stdout=sys.stderr,
                              stderr=sys.stderr, timeout=max(1.0, deadline - time.time()), check=False,
                              env=child_env(args))
        rc = proc.returncode
      except subprocess.TimeoutExpired:
        rc = 'timeout'
      seconds = round(time.time() - t0, 1)
      if os.path.exists(path):
        result[section] = json.loads(pathlib.Path(path).read_text())
        result[section]['section_s'] = seconds
        if rc != 0:  # The exported section keeps what it called before it was stopped.
          result[section]['stopped'] = 'at the time budget' if rc == 'timeout' else f'exit status {rc}'
        result['sections_run'].append(section)
        problem = gpu_conv_problem(result[section])
        if problem:
          result['errors'][section] = problem
      elif rc == 'timeout':
        result['errors'][section] = f'stopped at the time budget after {seconds} s'
      else:
        result['errors'][section] = f'exit status {rc} after {seconds} s (its log is on stderr above)'
  render, train = result.get('render'), result.get('train_bfloat16') or result.get('train_float32')
  if render and train and train.get('samples_per_s_per_device'):
    # x is rendered on the same device as the step: its share of a step's time per example.
    render['fraction_of_train_step'] = round(
        render['ms_per_example'] / (1e3 / train['samples_per_s_per_device']), 4)
  first = next((result[s] for s in result['sections_run'] if 'machine' in result[s]), None)
  info = first.pop('machine') if first else machine()
  for s_name in result['sections_run']:
    result[s_name].pop('machine', None)
  result.update(info)
  result['total_s'] = round(time.time() - start, 1)
  result['ok'] = not result['errors'] and all(
      p.get('called') for p in result.get('exported', {}).get('programs', []))
  return result


def parse_args(argv=None) -> argparse.Namespace:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument('--smoke', action='store_true', default=os.environ.get('GPU_CHECK_SMOKE', '') not in ('', '0'),
                  help='tiny config on any machine (also: GPU_CHECK_SMOKE=1)')
  ap.add_argument('--sections', default=','.join(SECTIONS), help=f'comma-separated, of {SECTIONS}')
  ap.add_argument('--budget-s', type=float, default=0.0, help='whole check (default 450; --smoke 110)')
  ap.add_argument('--min-section-s', type=float, default=20.0, help='do not start a section with less time left')
  ap.add_argument('--steps', type=int, default=0, help='timed train steps (default 8; --smoke 2)')
  ap.add_argument('--batch', type=int, default=0, help='per-device batch (default paper.py\'s 6; --smoke 2)')
  ap.add_argument('--big-batch', type=int, default=0, help='G inference throughput batch (default 32; --smoke 4)')
  ap.add_argument('--inference-calls', type=int, default=0, help='timed G calls per batch (default 20; --smoke 2)')
  ap.add_argument('--exported', default='', help='exported programs to call, comma-separated (default: '
                  'all 8, most important first; --smoke: train_step_d_bf16,g_inference_b1_bf16)')
  ap.add_argument('--inference-dtypes', default='bfloat16,float32', help='compute dtypes of G\'s inference section')
  ap.add_argument('--devices', type=int, default=1, help='devices used (default 1: per-device figures)')
  ap.add_argument('--platforms', default='cuda,tpu', help='platforms of the exported programs (--smoke: cpu)')
  ap.add_argument('--out', default='', help='also write the JSON here (atomically)')
  ap.add_argument('--section', default='', help=argparse.SUPPRESS)  # Internal: run one section in this process.
  ap.add_argument('--result', default='', help=argparse.SUPPRESS)
  ap.add_argument('--deadline', type=float, default=0.0, help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  args.budget_s = args.budget_s or (110.0 if args.smoke else 450.0)
  args.steps = args.steps or (2 if args.smoke else 8)
  args.big_batch = args.big_batch or (4 if args.smoke else 32)
  args.inference_calls = args.inference_calls or (2 if args.smoke else 20)
  if not args.exported and args.smoke:
    args.exported = 'train_step_d_bf16,g_inference_b1_bf16'
  known = exported_order(args.big_batch)
  if any(n.strip() not in known for n in args.exported.split(',') if n.strip()):
    ap.error(f'--exported: programs are {", ".join(known)}')
  args.deadline = args.deadline or (time.time() + args.budget_s)
  bad = [s for s in args.sections.split(',') if s.strip() and s.strip() not in SECTIONS]
  if bad or (args.section and args.section not in SECTIONS):
    ap.error(f'unknown section {bad or args.section}; sections: {", ".join(SECTIONS)}')
  if any(d not in DTYPES for d in args.inference_dtypes.split(',')):
    ap.error(f'--inference-dtypes: of {", ".join(DTYPES)}')
  if args.devices < 1 or args.steps < 1:
    ap.error('--devices and --steps must be >= 1')
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.section:  # A child: one section, its dict to --result.
    with contextlib.redirect_stdout(sys.stderr):
      out = run_section(args)
    write_atomic(args.result, json.dumps(out))
    return 0
  result = drive(args)
  line = json.dumps(result)
  if args.out:
    write_atomic(args.out, line + '\n')
  print(line, flush=True)
  return 0 if result['ok'] else 1


if __name__ == '__main__':
  sys.exit(main())
