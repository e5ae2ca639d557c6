"""Layer output shapes and parameter counts of G (F, R), D and D_m - shapes only, nothing is computed.

  python -m headgan_jax.nn.summary --config configs/paper.py [--depth 2] [--batch 1]

Everything goes through jax.eval_shape, so the paper-size networks are summarised in seconds on a CPU.
`layer_shapes` records, in call order, the output of every module's __call__ (flax method interception), which is
also how the tests check Tables 2 and 3 row by row.
"""
from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from headgan_jax import errors
from headgan_jax.nn import discriminator, generator


def load_config(path: str) -> ml_collections.ConfigDict:
  """Loads `get_config()` from a config file such as configs/paper.py."""
  p = pathlib.Path(path)
  if not p.is_file():
    raise errors.ConfigError(f'config file {path} does not exist')
  repo = str(p.resolve().parent.parent)
  if repo not in sys.path:  # configs import each other as `configs.paper`.
    sys.path.insert(0, repo)
  spec = importlib.util.spec_from_file_location(f'_headgan_config_{p.stem}', p)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  if not hasattr(mod, 'get_config'):
    raise errors.ConfigError(f'config file {path} has no get_config()')
  return mod.get_config()


def param_count(tree: Any) -> int:
  """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
  return sum(int(x.size) for x in jax.tree.leaves(tree))


def _shapes(tree: Any) -> list[jax.ShapeDtypeStruct]:
  return [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in jax.tree.leaves(tree) if hasattr(x, 'shape')]


def layer_shapes(module: nn.Module, variables: Any, *args, depth: int | None = None,
                 **kwargs) -> list[tuple[str, str, list[jax.ShapeDtypeStruct]]]:
  """(path, module class, output ShapeDtypeStructs) of every submodule __call__, in the order the calls finish.

  `variables` may be ShapeDtypeStructs (from jax.eval_shape of init); the apply runs under jax.eval_shape too.
  `depth` keeps modules at most that many levels below `module` (1 = its direct children).
  """
  records: list[tuple[str, str, list[jax.ShapeDtypeStruct]]] = []

  def interceptor(next_fun: Callable, a: tuple, kw: dict, context: nn.module.InterceptorContext) -> Any:
    out = next_fun(*a, **kw)
    path = context.module.path
    if context.method_name == '__call__' and path and (depth is None or len(path) <= depth):
      records.append(('/'.join(path), type(context.module).__name__, _shapes(out)))
    return out

  def run(v):
    with nn.intercept_methods(interceptor):
      return module.apply(v, *args, **kwargs)

  jax.eval_shape(run, variables)
  return records


def generator_variables(config: ml_collections.ConfigDict, batch_size: int = 1):
  """(G, its variables as ShapeDtypeStructs, example inputs)."""
  g = generator.make_generator(config)
  inputs = generator.example_inputs(config, batch_size)
  variables = jax.eval_shape(lambda: g.init(jax.random.key(0), *inputs))
  return g, variables, inputs


def discriminator_variables(config: ml_collections.ConfigDict, batch_size: int = 1):
  """((D, its variables, its input), (D_m, its variables, its input)), variables as ShapeDtypeStructs."""
  d, d_m = discriminator.make_discriminators(config)
  s, m = config.image_size, config.disc.mouth_size
  x_d = jnp.zeros((batch_size, s, s, 6), jnp.float32)
  x_m = jnp.zeros((batch_size, m, m, 3 + config.model.audio_dim), jnp.float32)
  v_d = jax.eval_shape(lambda: d.init(jax.random.key(0), x_d))
  v_m = jax.eval_shape(lambda: d_m.init(jax.random.key(0), x_m))
  return (d, v_d, x_d), (d_m, v_m, x_m)


def parameter_counts(config: ml_collections.ConfigDict) -> dict[str, int]:
  """Trainable parameter counts of G, F, R, D and D_m (spectral-norm state in 'batch_stats' not included)."""
  _, v_g, _ = generator_variables(config)
  (_, v_d, _), (_, v_m, _) = discriminator_variables(config)
  p = v_g['params']
  f_key = 'flow_net' if 'flow_net' in p else 'reference_encoder'
  return {'G': param_count(p), 'F': param_count(p[f_key]), 'R': param_count(p['render_net']),
          'D': param_count(v_d['params']), 'D_m': param_count(v_m['params'])}


def format_table(title: str, records: list[tuple[str, str, list[jax.ShapeDtypeStruct]]]) -> str:
  width = max([len(r[0]) for r in records] + [10])
  lines = [f'== {title}', f'{"module":<{width}}  {"class":<24} output shape(s)']
  for path, cls, shapes in records:
    desc = ', '.join(f'{tuple(s.shape)} {jnp.dtype(s.dtype).name}' for s in shapes)
    lines.append(f'{path:<{width}}  {cls:<24} {desc}')
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='configs/paper.py')
  parser.add_argument('--depth', type=int, default=3, help='module nesting depth shown in the tables')
  parser.add_argument('--batch', type=int, default=1)
  args = parser.parse_args(argv)
  try:
    config = load_config(args.config)
    g, v_g, inputs = generator_variables(config, args.batch)
    print(format_table(f'G (input x_drive {inputs[0].shape}, y_ref/x_ref {inputs[1].shape}, audio {inputs[3].shape})',
                       layer_shapes(g, v_g, *inputs, depth=args.depth)))
    for name, (mod, v, x) in zip(('D', 'D_m'), discriminator_variables(config, args.batch)):
      print(format_table(f'{name} (input {x.shape})', layer_shapes(mod, v, x, depth=args.depth)))
    counts = parameter_counts(config)
  except errors.HeadGANError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print('== parameter counts')
  for k, n in counts.items():
    print(f'{k:<4} {n:>12,d}  ({n / 1e6:.2f} M)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
