"""Where a training step's time goes on this backend: a JAX profile of G's training step (or the full train step)
aggregated by what the XLA ops compute (convolutions, im2col weight gradients, instance norms, spectral norm, ...).

  python bench/profile_step.py --config configs/paper.py --batch 1 [--full] [--conv-impl xla] [--top 25]

One warm-up step, then `--steps` profiled steps (jax.profiler.trace); every executed XLA op (thunk) of the step is
attributed, through the compiled HLO's metadata (the JAX source op and the Flax module path), to one category. The
summed op time is CPU time over all threads, so shares are of that sum, not of wall time. The G step is the one of
`bench/train_step.py --g-step` (forward, L1, backward, Adam on `batch` frames); --full profiles the whole train step
(G on 2 x batch frames, D, D_m). Prints figures, then ONE JSON line.
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import pathlib
import re
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.profiler import ProfileData  # noqa: E402

import g_step  # noqa: E402
from headgan_jax import config_files, host_malloc  # noqa: E402

# (category, test on (opcode, op_name)) in priority order; the first match wins.
CATEGORIES = (
    ('conv weight grad (im2col matmul)', lambda op, name: 'im2col_weight_grad' in name),
    # XLA lowers a weight gradient to a convolution whose window is the output gradient (larger than any kernel).
    ('conv weight grad (XLA)', lambda op, name: op == 'convolution' and _window(name) > 8),
    ('conv (XLA: forward / input grad)', lambda op, name: op == 'convolution' or 'conv_general_dilated' in name),
    ('spectral norm (power iteration)', lambda op, name: '/sn/' in name or 'l2_normalize' in name),
    ('instance norm', lambda op, name: re.search(r'/norm(_\d+)?/(norm|reduce|mean|var|sub|mul|rsqrt|add|div)', name)
     is not None or '/norm/' in name),
    ('warp (bilinear gather)', lambda op, name: 'gather' in op or 'scatter' in op or 'warp' in name),
    ('Adam / optimiser', lambda op, name: 'adam' in name.lower() or 'apply_updates' in name),
    ('copy / transpose / layout', lambda op, name: op in ('copy', 'transpose', 'bitcast', 'concatenate', 'pad',
                                                           'slice', 'dynamic-slice', 'dynamic-update-slice')),
)


def _window(text: str) -> int:
  m = re.search(r'window=\{size=(\d+)', text)
  return int(m.group(1)) if m else 0


def _hlo_index(hlo_text: str) -> dict[str, tuple[str, str]]:
  """HLO instruction name -> (opcode, metadata op_name) for every instruction of the compiled module."""
  out = {}
  pattern = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = [^=]*? ([\w\-]+)\((.*)$')
  for line in hlo_text.splitlines():
    m = pattern.match(line)
    if not m:
      continue
    name, opcode, rest = m.groups()
    op_name = re.search(r'op_name="([^"]*)"', rest)
    window = re.search(r'window=\{[^}]*\}', rest)  # Kept for the weight-gradient test of CATEGORIES.
    out[name] = (opcode, (op_name.group(1) if op_name else '') + (' ' + window.group(0) if window else ''))
  return out


def _fusion_op_names(hlo_text: str) -> dict[str, str]:
  """fused computation name -> the op_names of its instructions joined (for fusions without own metadata)."""
  out, current = {}, None
  for line in hlo_text.splitlines():
    m = re.match(r'^%?([\w.\-]+) .*\{$', line)
    if m:
      current = m.group(1)
      out[current] = []
      continue
    if current is not None:
      op = re.search(r'op_name="([^"]*)"', line)
      if op:
        out[current].append(op.group(1))
  return {k: ' '.join(v) for k, v in out.items()}


def categorise(opcode: str, op_name: str) -> str:
  for category, test in CATEGORIES:
    if test(opcode, op_name):
      return category
  return 'other elementwise / reductions'


def profile(fn, steps: int, hlo_text: str) -> dict:
  index = _hlo_index(hlo_text)
  fused = _fusion_op_names(hlo_text)
  calls = re.findall(r'%?([\w.\-]+) = [^\n]*? fusion\([^\n]*calls=%?([\w.\-]+)', hlo_text)
  fusion_body = dict(calls)
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d):
      for _ in range(steps):
        fn()
    files = glob.glob(f'{d}/**/*.xplane.pb', recursive=True)
    data = ProfileData.from_file(files[0])
  by_op = collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      for event in line.events:
        stats = dict(event.stats)
        if 'hlo_op' in stats:
          by_op[stats['hlo_op']] += event.duration_ns / 1e6 / steps
  by_cat, unknown = collections.Counter(), 0.0
  rows = []
  for op, ms in by_op.items():
    opcode, op_name = index.get(op, ('?', ''))
    if not op_name and op in fusion_body:
      op_name = fused.get(fusion_body[op], '')
    if opcode == 'fusion' and op in fusion_body:
      op_name = op_name + ' ' + fused.get(fusion_body[op], '')
    if opcode == '?':
      unknown += ms
    category = categorise(opcode, op_name)
    by_cat[category] += ms
    rows.append((ms, op, opcode, category, op_name[:160]))
  rows.sort(reverse=True)
  return {'total_op_ms': sum(by_op.values()), 'by_category_ms': dict(by_cat.most_common()), 'top_ops': rows,
          'unmatched_ms': unknown}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', default=str(REPO / 'configs' / 'tiny.py'))
  parser.add_argument('--batch', type=int, default=0)
  parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='')
  parser.add_argument('--image-size', type=int, default=0)
  parser.add_argument('--conv-impl', choices=('auto', 'xla', 'im2col'), default='')
  parser.add_argument('--full', action='store_true', help='the whole train step instead of G alone')
  parser.add_argument('--steps', type=int, default=1)
  parser.add_argument('--top', type=int, default=25)
  args = parser.parse_args(argv)
  fn, hlo_text, label = _build(args)
  fn()  # Warm-up.
  result = profile(fn, args.steps, hlo_text)
  total = result['total_op_ms']
  print(f'{label}: summed op time {total:.0f} ms per step (all threads)')
  for category, ms in result['by_category_ms'].items():
    print(f'  {category:38} {ms:10.1f} ms  {100 * ms / total:5.1f}%')
  print(f'top {args.top} ops:')
  for ms, op, opcode, category, op_name in result['top_ops'][:args.top]:
    print(f'  {ms:9.1f} ms  {op:28} {opcode:12} {category:30} {op_name[:90]}')
  result['top_ops'] = [dict(ms=round(r[0], 2), op=r[1], opcode=r[2], category=r[3], op_name=r[4])
                       for r in result['top_ops'][:args.top]]
  print(json.dumps({'bench': 'profile_step', 'what': label, 'config': args.config, **result}))
  return 0


def _build(args):
  """(callable running one step to completion, compiled HLO text, label)."""
  config = g_step.apply_overrides(config_files.load(args.config), args)
  if args.full:
    from headgan_jax import sharding as sharding_lib  # pylint: disable=import-outside-toplevel
    from headgan_jax.data import batch as batch_lib  # pylint: disable=import-outside-toplevel
    from headgan_jax.nn import vgg as vgg_lib  # pylint: disable=import-outside-toplevel
    from headgan_jax.train import state as state_lib, step as step_lib  # pylint: disable=import-outside-toplevel
    mesh = sharding_lib.make_mesh()
    models, optimizers = state_lib.make_models(config), state_lib.make_optimizers(config)
    vgg_apply = vgg_params = None
    if config.loss.use_vgg:  # Random weights: the cost does not depend on them.
      vgg = vgg_lib.vgg19_module_from_config(config)
      vgg_params = vgg.init(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))['params']
      vgg_apply = lambda p, x: vgg.apply({'params': p}, x)  # noqa: E731
    state = step_lib.init_state_sharded(jax.random.key(0), config, models, optimizers, mesh)
    batch = sharding_lib.shard_batch(batch_lib.synthetic_batch(jax.random.key(0), config), mesh)
    compiled = step_lib.make_train_step(config, models, optimizers, mesh, vgg_apply, donate=False).jitted.lower(
        state, batch, vgg_params).compile()
    fn = lambda: jax.block_until_ready(compiled(state, batch, vgg_params)[1])  # noqa: E731
    return fn, compiled.as_text(), f'full train step, batch {config.train.batch_size}, conv_impl {config.runtime.conv_impl}'
  import optax  # pylint: disable=import-outside-toplevel
  from headgan_jax.nn import generator as generator_lib  # pylint: disable=import-outside-toplevel
  b, size = config.train.batch_size, config.image_size
  inputs, target = g_step.random_inputs(config, b)
  g = generator_lib.make_generator(config)
  variables = g_step.random_variables(g, inputs)
  tx = optax.adam(config.train.lr, b1=config.train.b1, b2=config.train.b2)

  def step(params, stats, opt_state, inputs, target):  # Frames as arguments: closed over, XLA would fold them.
    def loss_fn(params):
      out, new = g.apply({'params': params, 'batch_stats': stats}, *inputs, update_stats=True,
                         mutable=['batch_stats'])
      return jnp.mean(jnp.abs(out.image - target)) + jnp.mean(jnp.abs(out.warped_ref - target)), new
    (_, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new, opt_state

  carry = (variables['params'], variables['batch_stats'], tx.init(variables['params']))
  compiled = jax.jit(step).lower(*carry, inputs, target).compile()
  fn = lambda: jax.block_until_ready(compiled(*carry, inputs, target))  # noqa: E731
  return fn, compiled.as_text(), f'G step, {b} frame(s) of {size}x{size}, conv_impl {config.runtime.conv_impl}'


if __name__ == '__main__':
  host_malloc.reexec_with_tcmalloc()  # First: it may start this command again (headgan_jax/host_malloc.py).
  sys.exit(main())
