"""Layer output shapes and parameter counts of G (F, R), D and D_m - shapes only, nothing is computed.

  python -m headgan_jax.nn.summary --config configs/paper.py [--depth 2] [--batch 1]

Everything goes through jax.eval_shape, so the paper-size networks are summarised in seconds on a CPU.
`layer_shapes` records, in call order, the output of every module's __call__ (flax method interception), which is
also how the tests check Tables 2 and 3 row by row.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from headgan_jax.nn import discriminator, generator


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
  x_m = jnp.zeros((batch_size, m, m, discriminator.mouth_disc_channels(config)), jnp.float32)
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


# The authors' per-module parameter counts: their public PyTorch code (github.com/michaildoukas/headGAN,
# models/generator.py and models/discriminator.py) with its default options (ngf 32, 256x256, 3 driving frames,
# 300 audio features, norm_G 'spectralspadeinstance3x3', norm_G_noadapt and norm_D 'spectralinstance', ndf 64,
# n_layers_D 4, num_D 2), counted from the code (facts only). With configs/paper.py ours differ only where
# `DIFFERENCES` says.
AUTHORS_PARAMETER_COUNTS = {
    'F encoder': 637_440,
    'F SPADE blocks': 29_964_032,
    'F flow + mask heads': 4_707,
    'R encoder': 642_144,
    'R SPADE blocks': 14_655_104,
    'R AdaIN blocks': 5_842_368,
    'R output conv': 4_707,
    'G': 51_750_502,
    'D': 5_537_410,  # 2 scales x (1024 * 6 input channels + 2,762,561).
    'D_m': 6_145_666,  # 2 scales x (1024 * 303 + 2,762,561).
}
DIFFERENCES = {
    'F SPADE blocks': 'no bias on conv_0 of each SPADE block (3 x 512 + 128): it feeds norm_1\'s parameter-free '
                      'instance norm, so its gradient is identically 0 (config.model.blocks.dead_conv_biases = True adds '
                      'it)',
    'R SPADE blocks': 'no bias on conv_0 of each SPADE block (512 + 128 + 32 + 32): dead, as in F',
    'R AdaIN blocks': 'no bias on conv_0 of each AdaIN block (512 + 128 + 32): it feeds norm_1\'s instance norm; dead',
    'G': 'the sum of the three rows above (3,040 dead biases)',
}


def module_parameter_counts(config: ml_collections.ConfigDict) -> dict[str, int]:
  """Our trainable parameter counts per module, keyed like AUTHORS_PARAMETER_COUNTS (F rows absent "w/o F";
  the D_m row counts the mouth discriminator with config.model.use_audio's input)."""
  _, v_g, _ = generator_variables(config)
  (_, v_d, _), (_, v_m, _) = discriminator_variables(config)
  p = v_g['params']
  r = p['render_net']
  pick = lambda tree, prefix: param_count({k: x for k, x in tree.items() if k.startswith(prefix)})  # noqa: E731
  counts = {}
  if 'flow_net' in p:
    f = p['flow_net']
    counts.update({'F encoder': param_count(f['encoder']), 'F SPADE blocks': pick(f, 'spade_'),
                   'F flow + mask heads': pick(f, 'flow_head') + pick(f, 'mask_head')})
  counts.update({'R encoder': param_count(r['encoder']), 'R SPADE blocks': pick(r, 'spade_'),
                 'R AdaIN blocks': pick(r, 'adain_'), 'R output conv': param_count(r['head']),
                 'G': param_count(p), 'D': param_count(v_d['params']), 'D_m': param_count(v_m['params'])})
  return counts


# The sizes the authors' counts are for (configs/paper.py's values); the image size does not change a count.
AUTHORS_SIZES = {'model.ngf': 32, 'model.num_down': 2, 'model.flow_low_blocks': 3, 'model.blocks.spade_hidden': 256,
                 'model.num_past_frames': 2, 'model.audio_dim': 300, 'disc.ndf': 64, 'disc.num_layers': 4,
                 'disc.num_scales': 2, 'disc.max_channels': 512}


def format_comparison(config: ml_collections.ConfigDict) -> str:
  """Ours vs the authors' parameter counts, one row per module, with the reason for every difference (only for
  the authors' network sizes)."""
  other = [f'{k} = {config[k]}' for k, v in AUTHORS_SIZES.items() if config[k] != v]
  if other:
    return f'== no comparison with the authors\' parameter counts: their network sizes differ ({", ".join(other)})'
  ours = module_parameter_counts(config)
  lines = ['== parameters per module: ours vs the authors\' code', f'{"module":<22}{"ours":>13}{"authors":>13}'
           f'{"diff":>8}  why']
  for name, theirs in AUTHORS_PARAMETER_COUNTS.items():
    if name not in ours:
      continue
    diff = ours[name] - theirs
    why = DIFFERENCES.get(name, '') if diff else ''
    lines.append(f'{name:<22}{ours[name]:>13,d}{theirs:>13,d}{diff:>8,d}  {why}')
  return '\n'.join(lines)


def format_table(title: str, records: list[tuple[str, str, list[jax.ShapeDtypeStruct]]]) -> str:
  width = max([len(r[0]) for r in records] + [10])
  lines = [f'== {title}', f'{"module":<{width}}  {"class":<24} output shape(s)']
  for path, cls, shapes in records:
    desc = ', '.join(f'{tuple(s.shape)} {jnp.dtype(s.dtype).name}' for s in shapes)
    lines.append(f'{path:<{width}}  {cls:<24} {desc}')
  return '\n'.join(lines)


if __name__ == '__main__':  # The command moved (headgan_jax/commands/summary.py); this spelling still runs it.
  import runpy
  runpy.run_module('headgan_jax.commands.summary', run_name='__main__', alter_sys=True)
