"""Accelerator programs of HeadGAN, exported with `jax.export` on a CPU-only machine (issue 21, item 1).

  python bench/export.py --config configs/paper.py --platforms cuda,tpu --out DIR \
      [--devices 8] [--dtypes float32,bfloat16] [--batches 1,32] [--steps-per-epoch 1000] [--no-flops]

For every compute dtype (config.runtime.compute_dtype) it lowers, for all the given platforms at once (one file holds
every platform; `jax.export` adds a platform index argument and keeps one module):
  train_step_d_<dt>      the training step that updates G, D and D_m   (config.train.d_update 'two_steps' compiles
  train_step_no_d_<dt>   the training step that updates G only          these two; the loop picks one per step)
  g_inference_b<B>_<dt>  G's forward pass: (G's variables, x_drive, y_ref, x_ref, audio) -> y~_t, for each --batches B
with <dt> 'fp32' or 'bf16', and writes each as `<name>.jaxexport` (`Exported.serialize()` bytes) plus `summary.json`.

The mesh: a 1-D `jax.sharding.AbstractMesh` of --devices N devices with the project's axis 'data'
(`sharding.py` DATA_AXIS), so no device of the target platform is needed to lower. The train step is exactly the
project's (`step.train_step_fn`, jitted as `step.make_train_step` does: state and VGG parameters replicated, the batch
sharded along 'data', the state donated) with the GLOBAL batch N x config.train.batch_size: the config's batch is
taken as the per-device batch here (paper.py: 6 per device, 48 on 8 devices). G's inference with a batch divisible
by N is data-parallel over the same mesh; any other batch (e.g. 1) is a one-device program (latency).

Inputs and outputs are FLAT lists of arrays: the program takes `jax.tree.leaves((state, batch, vgg_params))` (train
step) or `jax.tree.leaves((variables, dict(x_drive=, y_ref=, x_ref=, audio=)))` (inference) and returns the leaves
of `(new_state, metrics)` / the image. The project's pytrees (flax struct dataclasses, optax named tuples) would need
their serialization registered wherever the file is loaded; flat lists load anywhere. summary.json lists every
input leaf in order (its path in the pytree, shape, dtype, sharding), so a caller rebuilds the trees with
`jax.tree.flatten` of the same structures, e.g.
  exp = jax.export.deserialize(open('train_step_d_bf16.jaxexport', 'rb').read())
  outs = exp.call(*jax.tree.leaves((state, batch, vgg_params)))       # arrays placed as in_shardings say
  new_state, metrics = jax.tree.unflatten(jax.tree.structure((state, metrics_like)), outs)

Convolutions: config.runtime.conv_impl is forced to 'xla' (XLA's own convolution: cuDNN / the TPU compiler), whatever
the config says: 'auto' picks on the backend of the LOWERING process, which is CPU here, and would put the CPU
paths (oneDNN FFI custom calls, the im2col weight gradient) into an accelerator program.

Checks (each program, after a serialize / deserialize round trip; any failure exits with status 1):
  - `jax.export.deserialize` reads it and its platforms are exactly --platforms;
  - it is an N-device program (1 for the single-device inference programs) and every batch input is tiled N ways
    along its first axis and nothing else (HloSharding), the state and VGG parameters are replicated, and the
    module's mesh is the axis 'data' of size N;
  - no `stablehlo.custom_call` target outside XLA's own (ALLOWED_CUSTOM_CALLS), none naming oneDNN / FFI / a host
    callback, and no side effects (a host callback is an effect).

FLOPs: XLA's HLO cost analysis (`Lowered.cost_analysis()['flops']`) of the same function lowered for THIS machine's
CPU without the mesh (the global program: what the N devices do together; no compile needed), divided by the
global batch for FLOPs per sample. That counts the un-fused HLO's convolutions, dots and elementwise ops; an
accelerator's compiler neither adds nor removes the convolutions and matrix products that dominate it. --no-flops
skips it (one more trace and lowering per program).

The learning-rate schedule is part of the train step, with config.train.steps_per_epoch baked in: synthetic data
and paper.py leave it 0 (one pass over the dataset), so --steps-per-epoch (default 1000 when the config has 0)
fixes it; export again with the real value (train set size // global batch) for a run.
VGG19: with config.loss.use_vgg the step carries the perceptual terms; the VGG parameters are an input of the
program (replicated) and only their shapes are needed to lower, so no weight file is read.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import re
import sys
import time
from typing import Any, Callable

REPO = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault('JAX_PLATFORMS', 'cpu')  # Lowering only: no accelerator is needed or used.

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import export as jax_export  # noqa: E402
from jax.sharding import AbstractMesh  # noqa: E402

from headgan_jax import config_files  # noqa: E402
from headgan_jax import sharding as sharding_lib  # noqa: E402
from headgan_jax.data import batch as batch_lib  # noqa: E402
from headgan_jax.nn import vgg as vgg_lib  # noqa: E402
from headgan_jax.train import state as state_lib, step as step_lib  # noqa: E402

# Custom-call targets XLA itself puts into SPMD programs for every platform (sharding annotations and the
# manual-sharding boundaries of shard_map); anything else (oneDNN, any FFI handler, host callbacks) must not appear.
ALLOWED_CUSTOM_CALLS = frozenset({'Sharding', 'SPMDFullToShardShape', 'SPMDShardToFullShape', 'ShardBarrierFrom',
                                  'ShardBarrierTo', 'X64Combine', 'X64SplitLow', 'X64SplitHigh'})
FORBIDDEN_WORDS = ('onednn', 'dnnl', 'ffi', 'callback', 'cpu', 'host')
PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')
DTYPE_SUFFIX = {'float32': 'fp32', 'bfloat16': 'bf16'}
_CUSTOM_CALL_RES = (re.compile(r'custom_call\s*@([\w.$\-]+)'), re.compile(r'call_target_name\s*=\s*"([^"]+)"'))


def custom_call_targets(mlir_text: str) -> set[str]:
  """Every custom-call target named in a StableHLO module's text (pretty and generic forms)."""
  return {m for pattern in _CUSTOM_CALL_RES for m in pattern.findall(mlir_text)}


def bad_custom_calls(targets) -> list[str]:
  """The targets that are not XLA's own, or that name oneDNN / an FFI handler / a host callback."""
  return sorted(t for t in targets
                if t not in ALLOWED_CUSTOM_CALLS or any(w in t.lower() for w in FORBIDDEN_WORDS))


@dataclasses.dataclass
class Program:
  """One program to export: `fn(*leaves)` jitted with its shardings, the input leaves' specs and roles."""
  name: str
  kind: str  # 'train_step' or 'g_inference'.
  jitted: Callable
  in_specs: list[jax.ShapeDtypeStruct]
  in_paths: list[str]
  batch_leaves: list[int]  # Indices of the per-example inputs (the batch).
  n_devices: int  # Devices of the program; with more than one, the batch inputs are sharded along 'data'.
  global_batch: int
  per_device_batch: int
  unjitted: Callable  # The same function without shardings, for the CPU cost analysis.
  meta: dict


def _flat(tree) -> tuple[list, list[str], Any]:
  with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
  return [leaf for _, leaf in with_paths], [jax.tree_util.keystr(p) for p, _ in with_paths], treedef


def _spec(x) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(x.shape, x.dtype)


def prepare_config(config, dtype: str, steps_per_epoch: int | None):
  config = config.copy_and_resolve_references()
  config.runtime.compute_dtype = dtype
  config.runtime.conv_impl = 'xla'  # XLA's own convolution: no CPU-only path in an accelerator program.
  if steps_per_epoch:
    config.train.steps_per_epoch = int(steps_per_epoch)
  elif not config.train.steps_per_epoch:
    config.train.steps_per_epoch = 1000
  return config


def vgg_for(config):
  """(vgg_apply, VGG params as ShapeDtypeStructs) when the loss has the VGG terms, else (None, None)."""
  if not config.loss.use_vgg:
    return None, None
  model = vgg_lib.vgg19_module_from_config(config)
  shapes = jax.eval_shape(model.init, jax.random.key(1), jnp.zeros((1, 32, 32, 3), jnp.float32))['params']
  return (lambda p, x: model.apply({'params': p}, x)), jax.tree.map(_spec, shapes)


def state_spec(config, models, optimizers):
  return jax.eval_shape(lambda k: state_lib.init_state(k, config, models, optimizers), jax.random.key(config.seed))


def train_programs(config, n_devices: int, models, optimizers, state) -> list[Program]:
  """train_step_d and train_step_no_d at global batch n_devices x config.train.batch_size over the 'data' mesh."""
  per_device = int(config.train.batch_size)
  global_batch = n_devices * per_device
  config = config.copy_and_resolve_references()
  config.train.batch_size = global_batch  # The project's config holds the global batch.
  vgg_apply, vgg_params = vgg_for(config)
  batch = batch_lib.batch_spec(config, global_batch)
  leaves, paths, treedef = _flat((state, batch, vgg_params))
  n_state = len(jax.tree.leaves(state))
  n_batch = len(jax.tree.leaves(batch))
  mesh = AbstractMesh((n_devices,), (sharding_lib.DATA_AXIS,))
  repl, sharded = sharding_lib.replicated(mesh), sharding_lib.batch_sharding(mesh)
  in_shardings = tuple(sharded if n_state <= i < n_state + n_batch else repl for i in range(len(leaves)))
  out = []
  for update_d, name in ((True, 'train_step_d'), (False, 'train_step_no_d')):
    step_fn = step_lib.train_step_fn(config, models, optimizers, vgg_apply, update_d=update_d)

    def flat_fn(*xs, step_fn=step_fn):
      st, b, v = jax.tree.unflatten(treedef, xs)
      return tuple(jax.tree.leaves(step_fn(st, b, v)))

    # As step.make_train_step: state (and VGG) replicated, batch along 'data', outputs replicated, state donated.
    jitted = jax.jit(flat_fn, in_shardings=in_shardings, out_shardings=repl, donate_argnums=tuple(range(n_state)))
    out.append(Program(name=f'{name}_{DTYPE_SUFFIX[config.runtime.compute_dtype]}', kind='train_step',
                       jitted=jitted, in_specs=leaves, in_paths=paths,
                       batch_leaves=list(range(n_state, n_state + n_batch)), n_devices=n_devices,
                       global_batch=global_batch, per_device_batch=per_device, unjitted=flat_fn,
                       meta={'updates_d': update_d, 'vgg': 'on (parameters are an input)' if vgg_apply else 'off',
                             'metrics': list(step_lib.METRIC_NAMES), 'state_leaves': n_state,
                             'batch_leaves': n_batch, 'donated': 'the state leaves'}))
  return out


def inference_program(config, n_devices: int, models, state, batch_size: int) -> Program:
  """G's forward pass (inference: spectral-norm statistics read only) at `batch_size`."""
  from headgan_jax.nn import generator as gen_lib  # pylint: disable=import-outside-toplevel
  g = models.generator
  variables = {'params': state.g.params, 'batch_stats': state.g.stats}
  names = ('x_drive', 'y_ref', 'x_ref', 'audio')
  inputs = dict(zip(names, (_spec(x) for x in gen_lib.example_inputs(config, batch_size))))
  leaves, paths, treedef = _flat((variables, inputs))  # Inputs in key order: audio, x_drive, x_ref, y_ref.
  n_vars = len(jax.tree.leaves(variables))

  def flat_fn(*xs):
    v, x = jax.tree.unflatten(treedef, xs)
    return g.apply(v, x['x_drive'], x['y_ref'], x['x_ref'], x['audio']).image

  parallel = n_devices > 1 and batch_size % n_devices == 0
  devices = n_devices if parallel else 1
  if parallel:
    mesh = AbstractMesh((n_devices,), (sharding_lib.DATA_AXIS,))
    repl, sharded = sharding_lib.replicated(mesh), sharding_lib.batch_sharding(mesh)
    jitted = jax.jit(flat_fn, in_shardings=tuple(repl if i < n_vars else sharded for i in range(len(leaves))),
                     out_shardings=sharded)
  else:
    jitted = jax.jit(flat_fn)
  return Program(name=f'g_inference_b{batch_size}_{DTYPE_SUFFIX[config.runtime.compute_dtype]}', kind='g_inference',
                 jitted=jitted, in_specs=leaves, in_paths=paths,
                 batch_leaves=list(range(n_vars, len(leaves))), n_devices=devices,
                 global_batch=batch_size, per_device_batch=batch_size // devices, unjitted=flat_fn,
                 meta={'data_parallel': parallel, 'outputs': 'y~_t (B, H, W, 3) float32'})


def check_exported(exp, platforms: tuple[str, ...], program: Program) -> dict:
  """The checks of the module docstring on a deserialized `Exported`: {check: None if passed else why}."""
  checks = {}
  checks['platforms'] = None if tuple(exp.platforms) == tuple(platforms) else f'platforms {exp.platforms}'
  checks['devices'] = (None if exp.nr_devices == program.n_devices
                       else f'{exp.nr_devices} devices, expected {program.n_devices}')
  text = exp.mlir_module()
  bad = bad_custom_calls(custom_call_targets(text))
  lowered_text = text.lower()
  words = [w for w in ('onednn', 'dnnl', 'callback') if w in lowered_text]
  checks['custom_calls'] = None if not bad and not words else f'custom calls {bad}, words {words}'
  effects = list(exp.ordered_effects) + list(exp.unordered_effects)
  checks['effects'] = None if not effects else f'effects {effects}'
  problems = []
  if program.n_devices > 1:
    if not re.search(rf'sdy\.mesh @\w+ = <\["{sharding_lib.DATA_AXIS}"={program.n_devices}\]>', text) and \
       f'"{sharding_lib.DATA_AXIS}"' not in text:
      problems.append(f'no mesh axis {sharding_lib.DATA_AXIS!r} of size {program.n_devices} in the module')
    kept = set(exp.module_kept_var_idx)  # Inputs the program never reads are dropped (and carry no sharding).
    for i, (sharding, spec) in enumerate(zip(exp.in_shardings_hlo, exp.in_avals)):
      if i not in kept:
        continue
      if i in program.batch_leaves:
        dims = list(sharding.tile_assignment_dimensions()) if sharding is not None and sharding.is_tiled() else []
        want = [program.n_devices] + [1] * (len(spec.shape) - 1)
        if dims[:len(want)] != want or any(d != 1 for d in dims[len(want):]):
          problems.append(f'input {program.in_paths[i]} {spec.shape} has sharding {sharding}, not {want}')
        if spec.shape[0] != program.global_batch:
          problems.append(f'input {program.in_paths[i]} has batch {spec.shape[0]}, not {program.global_batch}')
      elif sharding is not None and not sharding.is_replicated():
        problems.append(f'input {program.in_paths[i]} is not replicated: {sharding}')
  checks['shardings'] = '; '.join(problems[:5]) or None
  return checks


def cpu_flops(program: Program) -> float | None:
  """XLA's cost analysis of the unpartitioned program lowered for the CPU (the global FLOPs)."""
  cost = jax.jit(program.unjitted).lower(*program.in_specs).cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost['flops']) if cost and 'flops' in cost else None


def describe(spec, path: str, sharding) -> list:
  """[path in the pytree, shape, dtype, sharding] of one input leaf."""
  if sharding is None:
    where = 'one device'
  else:
    where = 'replicated' if sharding.is_replicated() else str(sharding)
  return [path, list(spec.shape), str(spec.dtype), where]


def export_program(program: Program, platforms: tuple[str, ...], out_dir: pathlib.Path, flops: bool) -> dict:
  t0 = time.perf_counter()
  exp = jax_export.export(program.jitted, platforms=platforms)(*program.in_specs)
  blob = exp.serialize()
  export_s = time.perf_counter() - t0
  path = out_dir / f'{program.name}.jaxexport'
  path.write_bytes(blob)
  back = jax_export.deserialize(bytearray(path.read_bytes()))
  checks = check_exported(back, platforms, program)
  text = back.mlir_module()
  entry = {
      'name': program.name, 'file': path.name, 'bytes': len(blob), 'kind': program.kind,
      'platforms': list(back.platforms), 'nr_devices': back.nr_devices,
      'mesh': {sharding_lib.DATA_AXIS: program.n_devices} if program.n_devices > 1 else None,
      'global_batch': program.global_batch, 'per_device_batch': program.per_device_batch,
      'export_s': round(export_s, 1), 'stablehlo_chars': len(text),
      'custom_call_targets': sorted(custom_call_targets(text)),
      # The module is the GLOBAL program with sharding annotations: the target's compiler partitions it and inserts
      # the gradient all-reduce, so none appears here.
      'ops': {op: text.count(f'stablehlo.{op}') for op in ('convolution', 'dot_general', 'all_reduce', 'while')},
      'checks': {k: 'ok' if v is None else v for k, v in checks.items()},
      **program.meta,
  }
  entry['batch_inputs'] = [describe(back.in_avals[i], program.in_paths[i], back.in_shardings_hlo[i])
                           for i in program.batch_leaves]
  entry['inputs'] = len(back.in_avals)
  entry['unused_inputs'] = [program.in_paths[i] for i in range(len(back.in_avals))
                            if i not in set(back.module_kept_var_idx)]
  entry['input_bytes'] = int(sum(a.size * a.dtype.itemsize for a in back.in_avals))
  entry['input_leaves'] = [describe(a, p, s) for a, p, s in zip(back.in_avals, program.in_paths,
                                                                back.in_shardings_hlo)]
  entry['outputs'] = [[list(a.shape), str(a.dtype)] for a in back.out_avals]
  if flops:
    t0 = time.perf_counter()
    f = cpu_flops(program)
    entry['flops_global'] = f
    entry['flops_per_sample'] = None if f is None else f / program.global_batch
    entry['flops_per_device'] = None if f is None else f / program.n_devices
    entry['flops_source'] = 'XLA HLO cost analysis of the same function lowered for CPU, unpartitioned'
    entry['flops_s'] = round(time.perf_counter() - t0, 1)
  return entry


def run(args: argparse.Namespace) -> dict:
  platforms = tuple(p.strip() for p in args.platforms.split(',') if p.strip())
  for p in platforms:
    if p not in PLATFORMS:
      raise SystemExit(f'--platforms: {p!r} is not one of {PLATFORMS}')
  dtypes = [d.strip() for d in args.dtypes.split(',') if d.strip()]
  for d in dtypes:
    if d not in DTYPE_SUFFIX:
      raise SystemExit(f'--dtypes: {d!r} is not one of {tuple(DTYPE_SUFFIX)}')
  batches = [int(b) for b in args.batches.split(',') if b.strip()] if args.batches else []
  kinds = set(args.kinds.split(','))
  out_dir = pathlib.Path(args.out)
  out_dir.mkdir(parents=True, exist_ok=True)
  base = args.config_obj if getattr(args, 'config_obj', None) is not None else config_files.load(args.config)
  t_all = time.perf_counter()
  entries = []
  for dtype in dtypes:
    config = prepare_config(base, dtype, args.steps_per_epoch)
    models = state_lib.make_models(config)
    optimizers = state_lib.make_optimizers(config)
    state = state_spec(config, models, optimizers)
    programs = []
    if 'train' in kinds:
      programs += train_programs(config, args.devices, models, optimizers, state)
    if 'inference' in kinds:
      programs += [inference_program(config, args.devices, models, state, b) for b in batches]
    for program in programs:
      entry = export_program(program, platforms, out_dir, flops=not args.no_flops)
      entry.update(compute_dtype=dtype, conv_impl=config.runtime.conv_impl, image_size=config.image_size)
      entries.append(entry)
      fl = entry.get('flops_per_sample')
      print(f'{entry["name"]:24s} {entry["bytes"] / 2**20:7.2f} MiB  {entry["export_s"]:6.1f} s  devices '
            f'{entry["nr_devices"]}  batch {entry["global_batch"]:3d}  '
            f'{"" if fl is None else f"{fl / 1e9:8.1f} GFLOP/sample  "}'
            f'checks {"ok" if all(v == "ok" for v in entry["checks"].values()) else entry["checks"]}', flush=True)
  summary = {
      'command': 'python bench/export.py ' + ' '.join(sys.argv[1:]) if args.argv is None else args.argv,
      'config': args.config, 'platforms': list(platforms), 'devices': args.devices,
      'per_device_batch': int(base.train.batch_size), 'global_batch': args.devices * int(base.train.batch_size),
      'jax': jax.__version__, 'date': time.strftime('%Y-%m-%d %H:%M'), 'total_s': round(time.perf_counter() - t_all, 1),
      'steps_per_epoch': int(prepare_config(base, dtypes[0], args.steps_per_epoch).train.steps_per_epoch),
      'programs': entries,
      'all_checks_passed': all(v == 'ok' for e in entries for v in e['checks'].values()),
  }
  (out_dir / 'summary.json').write_text(json.dumps(summary, indent=1) + '\n')
  return summary


def parse_args(argv=None) -> argparse.Namespace:
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument('--config', required=True, help='FILE[:ARG]; config.train.batch_size is the per-device batch')
  ap.add_argument('--platforms', default='cuda,tpu')
  ap.add_argument('--out', required=True)
  ap.add_argument('--devices', type=int, default=8, help='devices of the data-parallel mesh (default 8)')
  ap.add_argument('--dtypes', default='float32,bfloat16')
  ap.add_argument('--batches', default='1,32', help="G inference batches ('' for none)")
  ap.add_argument('--kinds', default='train,inference')
  ap.add_argument('--steps-per-epoch', type=int, default=0,
                  help='baked into the learning-rate schedule; 0: the config\'s, or 1000 when that is 0')
  ap.add_argument('--no-flops', action='store_true', help='skip the CPU cost analysis')
  args = ap.parse_args(argv)
  args.argv = None if argv is None else 'python bench/export.py ' + ' '.join(argv)
  if args.devices < 1:
    ap.error('--devices must be >= 1')
  return args


def main(argv=None) -> int:
  summary = run(parse_args(argv))
  print(json.dumps({k: v for k, v in summary.items() if k != 'programs'}))
  if not summary['all_checks_passed']:
    print('FAILED: a program did not pass its checks (see summary.json)', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
