"""A saved config.json in an older layout -> today's layout, so that old work folders still evaluate, reenact and
resume (issue 23 item 2).

    migrate(json.load(f)) -> the same config with every moved field under its new name

The layout of configs/paper.py groups fields by who reads them, under the names the readers use: config.model is
Generator's fields plus model.blocks (BlockSettings's fields), config.runtime how the networks are computed, and
the conditioning image is a data choice. Older runs saved the flat config.model of before; `migrate` recognises
that layout by its field names (no version field), so it is idempotent and leaves a new-layout config unchanged.
Pure: the argument is not modified. Bottom layer (imports only errors).
"""
from __future__ import annotations

import copy
from typing import Any, Callable

from headgan_jax.errors import ConfigError


def _affine(path: str) -> Callable[[Any], bool]:
  """The old 'affine' / 'plain' instance-norm choice -> BlockSettings.affine_norm."""
  def convert(value: Any) -> bool:
    if value not in ('affine', 'plain'):
      raise ConfigError(f"config.{path} = {value!r} (old layout): expected 'affine' or 'plain'")
    return value == 'affine'
  return convert


# Old dotted path -> (new dotted path, value conversion or None).
MOVED: dict[str, tuple[str, Callable[[Any], Any] | None]] = {
    'model.spade_hidden': ('model.blocks.spade_hidden', None),
    'model.spade_resize': ('model.blocks.spade_resize', None),
    'model.block_shortcut': ('model.blocks.shortcut', None),
    'model.block_spectral_norm': ('model.blocks.spectral_norm', None),
    'model.encoder_spectral_norm': ('model.blocks.encoder_spectral_norm', None),
    'model.encoder_norm': ('model.blocks.affine_norm', _affine('model.encoder_norm')),
    'model.padding_7x7': ('model.blocks.padding_7x7', None),
    'model.dead_conv_biases': ('model.blocks.dead_conv_biases', None),
    'model.lrelu_slope': ('model.blocks.lrelu_slope', None),
    'model.init_gain': ('model.blocks.init_gain', None),
    'model.compute_dtype': ('runtime.compute_dtype', None),
    'model.conv_impl': ('runtime.conv_impl', None),
    'model.remat': ('runtime.remat', None),
    'model.conditioning': ('data.conditioning', None),
    'disc.norm': ('disc.affine_norm', _affine('disc.norm')),
    'model.upsample_init': ('model.blocks.upsample_init', None),
}
# Fields added after runs were saved -> the value that reproduces what those runs did (filled in when missing, so
# that the resume check sees no difference and an old run resumes).
ADDED: dict[str, Any] = {
    'model.blocks.upsample_init': 'default',  # Xavier before each pixel shuffle, as every run before ICNR.
    'data.num_workers': 0,  # In-process reading, as every run before worker processes.
}


def _section(config: dict, path: list[str], create: bool) -> dict | None:
  node = config
  for key in path:
    if not isinstance(node.get(key), dict):
      if not create or key in node:
        return None
      node[key] = {}
    node = node[key]
  return node


def migrate(config: dict[str, Any]) -> dict[str, Any]:
  """`config` (a config.json's dict) in today's layout: each MOVED field that is present goes to its new path, each
  ADDED field that is missing gets the value old runs had.
  ConfigError when a config holds a field under both its old and its new name, or an old value that does not
  convert."""
  out = copy.deepcopy(config)
  for old, (new, convert) in MOVED.items():
    *old_parents, old_key = old.split('.')
    source = _section(out, old_parents, create=False)
    if source is None or old_key not in source:
      continue
    *new_parents, new_key = new.split('.')
    target = _section(out, new_parents, create=True)
    if target is None or new_key in target:
      raise ConfigError(f'config holds both config.{old} (old layout) and config.{new}: one of them only')
    value = source.pop(old_key)
    target[new_key] = convert(value) if convert else value
  for path, value in ADDED.items():
    *parents, key = path.split('.')
    section = _section(out, parents, create=False)
    if section is not None and key not in section:
      section[key] = value
  return out
