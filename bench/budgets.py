"""Memory and compute budgets of HeadGAN's train step per device, from XLA's own analyses (issue 21, item 2).

  python bench/budgets.py --config configs/paper.py [--sizes 256,512] [--batches 1,6,12] [--remat none,blocks]
      [--dtype float32] [--out budgets.jsonl] [--fast-compile] [--cpu-scheduler memory|concurrency]

For every (image size, per-device batch, remat policy) it compiles, for THIS machine's CPU and one device, the train
step that updates G, D and D_m (the larger of the two compiled steps; XLA's own convolutions, conv_impl 'xla', as on
an accelerator), and reads
  - `compiled.memory_analysis()`: argument bytes (state + batch + VGG), output bytes, aliased bytes (the donated
    state) and temp bytes: the step's activations and other temporaries at their peak as XLA's buffer assignment
    lays them out;
  - `compiled.cost_analysis()['flops']`: FLOPs of the step, per sample after dividing by the batch;
and the parameter and Adam-state bytes of G, D and D_m from the state's shapes (float32 whatever the compute dtype).
Each row is printed as one JSON line (and appended to --out) as soon as it is measured, so a run that is stopped
keeps what it measured; a table is printed at the end with the samples/s an H100 (989 TFLOP/s bf16 dense) and a TPU
v5e chip (197 TFLOP/s bf16) would reach at 40 % of that peak with these FLOPs.

A data-parallel device runs this same program on its share of the batch (plus the gradient all-reduce, whose
buffers are the size of the gradients), so these are per-device figures for a per-device batch. Where a GPU's or
TPU's compile differs from the CPU's: its fusion decisions (which intermediates are materialised at all: XLA:GPU
fuses more elementwise work into convolutions and reductions, so its temporaries are typically no larger), its
convolution layouts and cuDNN / TPU workspace (GPU: up to a few hundred MiB of scratch per convolution algorithm,
not in this count), and its memory-saving passes (the rematerialisation pass runs only under a memory limit). Treat
the temp figures as the order of magnitude and the remat on / off ratio as the useful number; `bash
bench/gpu_check.sh` (issue 21, item 6) measures the real peak on a GPU.

--fast-compile compiles with LLVM at -O0 (the tests' flags): the buffer assignment, and so the memory analysis, is
made before LLVM runs; it saves minutes per compile on 2 cores.

--cpu-scheduler: XLA:CPU orders the program's instructions with its concurrency-optimised scheduler by default
('concurrency'), which runs independent work early and so keeps more buffers alive at once (measured at 256 px,
per-device batch 1: 3.78 GiB of temporaries against 2.39 GiB with the memory-minimising scheduler). 'memory'
(default here; `--xla_cpu_enable_concurrency_optimized_scheduler=false`) is the closer proxy for an accelerator,
whose compilers order for memory within the device's capacity.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
if '--fast-compile' in sys.argv:
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0 '
                             '--xla_llvm_disable_expensive_passes=true')
CPU_SCHEDULER = 'concurrency' if '--cpu-scheduler=concurrency' in sys.argv or (
    '--cpu-scheduler' in sys.argv and sys.argv[sys.argv.index('--cpu-scheduler') + 1:][:1] == ['concurrency']) \
    else 'memory'
if CPU_SCHEDULER == 'memory':  # Must be set before jax starts its CPU client.
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_cpu_enable_concurrency_optimized_scheduler=false')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from headgan_jax import config_files  # noqa: E402
from headgan_jax.data import batch as batch_lib  # noqa: E402
from headgan_jax.nn import vgg as vgg_lib  # noqa: E402
from headgan_jax.train import state as state_lib, step as step_lib  # noqa: E402

PEAKS = {'H100 (bf16 989 TFLOP/s)': 989.4e12, 'TPU v5e (bf16 197 TFLOP/s)': 197e12}
EFFICIENCY = 0.4


def _bytes(tree) -> int:
  return int(sum(x.size * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def measure(base, size: int, batch: int, remat: str, dtype: str) -> dict:
  config = base.copy_and_resolve_references()
  config.image_size = size
  config.train.batch_size = batch
  config.runtime.remat = remat
  config.runtime.compute_dtype = dtype
  config.runtime.conv_impl = 'xla'
  if not config.train.steps_per_epoch:
    config.train.steps_per_epoch = 1000
  models = state_lib.make_models(config)
  optimizers = state_lib.make_optimizers(config)
  state = jax.eval_shape(lambda k: state_lib.init_state(k, config, models, optimizers), jax.random.key(0))
  vgg_apply = vgg_params = None
  if config.loss.use_vgg:  # Random weights' shapes: no file needed to compile.
    model = vgg_lib.vgg19_module_from_config(config)
    vgg_params = jax.eval_shape(model.init, jax.random.key(1), jnp.zeros((1, 32, 32, 3)))['params']
    vgg_apply = lambda p, x: model.apply({'params': p}, x)  # noqa: E731
  batch_spec = batch_lib.batch_spec(config, batch)
  fn = jax.jit(step_lib.train_step_fn(config, models, optimizers, vgg_apply, update_d=True), donate_argnums=(0,))
  t0 = time.perf_counter()
  lowered = fn.lower(state, batch_spec, vgg_params)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  flops = float(cost.get('flops', float('nan')))
  params = {n: _bytes(getattr(state, n).params) for n in ('g', 'd', 'dm')}
  opt = {n: _bytes(getattr(state, n).opt_state) for n in ('g', 'd', 'dm')}
  row = {
      'image_size': size, 'per_device_batch': batch, 'remat': remat, 'compute_dtype': dtype,
      'param_bytes': sum(params.values()), 'opt_state_bytes': sum(opt.values()),
      'param_bytes_by_net': params, 'opt_state_bytes_by_net': opt, 'vgg_param_bytes': _bytes(vgg_params),
      'temp_bytes': int(mem.temp_size_in_bytes), 'argument_bytes': int(mem.argument_size_in_bytes),
      'output_bytes': int(mem.output_size_in_bytes), 'alias_bytes': int(mem.alias_size_in_bytes),
      'generated_code_bytes': int(mem.generated_code_size_in_bytes),
      'flops_step': flops, 'flops_per_sample': flops / batch, 'compile_s': round(compile_s, 1),
      'platform': 'cpu (XLA:CPU compile as the proxy)', 'cpu_scheduler': CPU_SCHEDULER,
      'vgg': bool(config.loss.use_vgg),
      'date': time.strftime('%Y-%m-%d %H:%M'),
  }
  # Peak live bytes of the device program: arguments + temporaries + outputs not aliased to donated inputs.
  row['peak_bytes_estimate'] = row['argument_bytes'] + row['temp_bytes'] + row['output_bytes'] - row['alias_bytes']
  for name, peak in PEAKS.items():
    row[f'samples_per_s {name} at {int(EFFICIENCY * 100)}%'] = EFFICIENCY * peak / row['flops_per_sample']
  return row


def table(rows: list[dict]) -> str:
  gib = 2**30
  lines = ['| size | batch/device | remat | params + Adam (GiB) | temp (GiB) | peak est. (GiB) | GFLOP/sample | '
           'H100 samples/s @40% | v5e samples/s @40% | compile s |', '|' + '---|' * 10]
  for r in rows:
    rates = [v for k, v in r.items() if k.startswith('samples_per_s')]
    lines.append(f"| {r['image_size']} | {r['per_device_batch']} | {r['remat']} | "
                 f"{(r['param_bytes'] + r['opt_state_bytes']) / gib:.3f} | {r['temp_bytes'] / gib:.2f} | "
                 f"{r['peak_bytes_estimate'] / gib:.2f} | {r['flops_per_sample'] / 1e9:.0f} | {rates[0]:.0f} | "
                 f"{rates[1]:.0f} | {r['compile_s']} |")
  return '\n'.join(lines)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--config', default='configs/paper.py')
  ap.add_argument('--sizes', default='256,512')
  ap.add_argument('--batches', default='1,6,12')
  ap.add_argument('--remat', default='none,blocks')
  ap.add_argument('--dtype', default='float32')
  ap.add_argument('--out', default='')
  ap.add_argument('--fast-compile', action='store_true')
  ap.add_argument('--cpu-scheduler', choices=('memory', 'concurrency'), default='memory',
                  help='read before jax starts (see the module docstring)')
  args = ap.parse_args(argv)
  base = config_files.load(args.config)
  rows = []
  for size in (int(s) for s in args.sizes.split(',')):
    for batch in (int(b) for b in args.batches.split(',')):
      for remat in args.remat.split(','):
        row = measure(base, size, batch, remat, args.dtype)
        row['config'] = args.config
        rows.append(row)
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
          with open(args.out, 'a', encoding='utf-8') as f:
            f.write(line + '\n')
  print(table(rows))
  return 0


if __name__ == '__main__':
  sys.exit(main())
