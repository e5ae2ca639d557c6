"""headgan-convert / python -m headgan_jax.face3d.converters: a licensed 3DMM file (LSFM, BFM 2009 / 2017, FLAME,
Surrey Face Model) -> the project's `.npz` (headgan_jax/face3d/converters.py).

  python -m headgan_jax.face3d.converters sfm sfm_shape_3448.bin --blendshapes expression_blendshapes_3448.bin
      --ibug ibug_to_sfm.txt --out sfm.npz

Exit status: 0 written; 1 the model file could not be converted; 2 bad flags (one message, no traceback).
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

from absl import flags

from headgan_jax import commands
from headgan_jax.commands import parsing
from headgan_jax.errors import FaceModelError
from headgan_jax.face3d import converters, morphable

KINDS = ('lsfm', 'bfm2009', 'bfm2017', 'flame', 'sfm')
USAGE = 'python -m headgan_jax.face3d.converters {' + ','.join(KINDS) + '} PATH --out OUT.npz'


def define_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_string('out', None, 'output .npz', flag_values=fv)
  flags.DEFINE_string('expression', None, 'LSFM / BFM 2009: expression model .mat (LSFM layout)', flag_values=fv)
  flags.DEFINE_string('blendshapes', None, 'SFM: expression blendshapes .bin', flag_values=fv)
  flags.DEFINE_string('ibug', None, 'SFM: ibug_to_sfm.txt (mouth indices from points 49-68)', flag_values=fv)
  flags.DEFINE_integer('max-landmarks', 1000, 'landmarks: an evenly spaced subset of this many vertices',
                       flag_values=fv)
  return fv


def convert(kind: str, path: str, fv: flags.FlagValues) -> morphable.MorphableModel:
  """The model in `path` read by the converter of `kind`, with the flags' extra files."""
  kw: dict[str, Any] = dict(max_landmarks=fv['max-landmarks'].value)
  if kind == 'lsfm':
    return converters.convert_lsfm(path, fv.expression, **kw)
  if kind == 'bfm2009':
    return converters.convert_bfm2009(path, fv.expression, **kw)
  if kind == 'bfm2017':
    return converters.convert_bfm2017(path, **kw)
  if kind == 'flame':
    return converters.convert_flame(path, **kw)
  return converters.convert_sfm(path, fv.blendshapes, fv.ibug, **kw)


def main(argv: Sequence[str] | None = None) -> int:
  fv = define_flags()
  try:
    kind, path = parsing.parse(fv, argv, converters.__doc__, USAGE, positionals=('kind', 'path'),
                               required=('out',), choices={'kind': KINDS})
  except parsing.Exit as e:
    return e.code
  try:
    model = convert(kind, path, fv)
    morphable.save(model, fv.out)
  except FaceModelError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'{fv.out}: {model.num_vertices} vertices, {model.faces.shape[0]} triangles, {model.num_id} identity and '
        f'{model.num_exp} expression components, {model.num_landmarks} landmarks, {model.mouth_indices.shape[0]} '
        f'mouth vertices')
  return 0


if __name__ == '__main__':
  sys.exit(commands.start('convert'))
