"""Config files: the one way every command and bench loads, overrides, compares and flattens a config.

  load('configs/paper.py:ablation=no_flow')   get_config('ablation=no_flow') of the file (get_config() without ':')
  load('runs/demo/config.json')               a work folder's saved config (train.py writes one per run)
  load('runs/demo')                           the same, given the work folder
  override(config, ['--config.train.num_steps=2'])   ml_collections config_flags' --config.<field>=<value> parsing

Bad input raises ConfigError with one line naming the file or the field (a missing file, a file that is neither
.py nor .json, a bad get_config argument, invalid JSON, an unknown field). Bottom layer: imports ml_collections,
absl and headgan_jax.errors only. A config file imports others as `configs.paper`: the project is installed into
its environment (scripts/setup.sh: pip install -e .), or the command runs from the repository root.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from headgan_jax import config_migrate
from headgan_jax.errors import ConfigError

CONFIG_JSON = 'config.json'  # A work folder's saved config (train/loop.py writes it).
_OVERRIDE = re.compile(r'^-{1,2}(no)?config\.')


def load_json(path: str | os.PathLike) -> ml_collections.ConfigDict:
  """The config saved in a config.json file, in today's layout also when an older run saved it
  (config_migrate.migrate); ConfigError naming the file when missing or not JSON."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ConfigError(f'config file {path} does not exist')
  try:
    with open(path, encoding='utf-8') as f:
      return ml_collections.ConfigDict(config_migrate.migrate(json.load(f)))
  except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
    raise ConfigError(f'config file {path} is not a valid config.json ({e})') from e
  except OSError as e:
    raise ConfigError(f'config file {path} cannot be read ({e})') from e


def load(spec: str | os.PathLike) -> ml_collections.ConfigDict:
  """get_config(arg) of 'path/to/config.py[:arg]', a saved 'config.json', or a work folder's config.json."""
  spec = os.fspath(spec)
  if os.path.isdir(spec):
    path = os.path.join(spec, CONFIG_JSON)
    if not os.path.isfile(path):
      raise ConfigError(f'{path} does not exist: {spec} is not the work folder of a train.py run')
    return load_json(path)
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise ConfigError(f'config file {path} does not exist')
  if path.endswith('.json'):
    return load_json(path)
  if not path.endswith('.py'):
    raise ConfigError(f'config file {path}: expected a config file path.py[:arg] or a saved config.json')
  name = 'headgan_config_' + re.sub(r'\W', '_', os.path.splitext(os.path.basename(path))[0])
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except ImportError as e:  # Most often `configs` itself: the project is neither installed nor the working folder.
    raise ConfigError(f'config file {path}: {e} (install the project: pip install -e . in the repository, as '
                      'scripts/setup.sh does, or run from the repository root)') from e
  if not hasattr(module, 'get_config'):
    raise ConfigError(f'config file {path} has no get_config()')
  return module.get_config(arg) if arg else module.get_config()


def is_override(arg: str) -> bool:
  """Whether a command-line argument is a --config.<field>=<value> (or --noconfig.<field>) override."""
  return bool(_OVERRIDE.match(arg))


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """(the --config.<field> overrides of argv, each as one '--config.<field>=<value>' argument, the other arguments).
  '--config.<field> <value>' (the value as the next argument) is joined as absl would read it."""
  overrides, rest, argv = [], [], list(argv)
  i = 0
  while i < len(argv):
    arg = argv[i]
    if not is_override(arg):
      rest.append(arg)
    elif '=' in arg or arg.startswith(('--no', '-no')) or i + 1 == len(argv) or argv[i + 1].startswith('-'):
      overrides.append(arg)
    else:
      overrides.append(f'{arg}={argv[i + 1]}')
      i += 1
    i += 1
  return overrides, rest


def _check_fields(overrides: Sequence[str], config: ml_collections.ConfigDict, spec: str) -> None:
  """ConfigError naming the first override that is not a field of `config` (config_flags would add it or fail
  with a long message)."""
  for arg in overrides:
    if not is_override(arg):
      raise ConfigError(f'{arg}: not a --config.<field>=<value> override')
    path = _OVERRIDE.sub('', arg.split('=', 1)[0])
    node = config
    for part in path.split('.'):
      if not hasattr(node, 'keys') or part not in node:
        raise ConfigError(f'{arg}: {spec} has no config field {path!r}')
      node = node[part]


def override(config: ml_collections.ConfigDict, overrides: Sequence[str],
             spec: str = 'the config') -> ml_collections.ConfigDict:
  """`config` with command-line overrides ('--config.train.num_steps=2', '--noconfig.x') applied by ml_collections
  config_flags, which parses each value as its field's type, exactly as train.py always has; set on `config` itself
  (as config_flags does: field references follow, and no copy hides the object from tests/config_reads.py), which is
  then locked and returned. `spec` names the config in the messages."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  overrides = list(overrides)
  _check_fields(overrides, config, spec)
  argv = ['headgan', *overrides]
  fv = flags.FlagValues()
  flag = config_flags.DEFINE_config_dict('config', config, flag_values=fv, lock_config=True,
                                         sys_argv=argv)
  try:
    fv(argv)
  except flags.Error as e:
    raise ConfigError(str(e).splitlines()[0]) from e
  return flag.value


def flatten(config: ml_collections.ConfigDict | Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """{'train.batch_size': 6, ...}: leaves of a (nested) config; tuples / lists / None become strings."""
  out = {}
  items = config.items() if isinstance(config, Mapping) else config.to_dict().items()
  for key, value in items:
    name = f'{prefix}{key}'
    if isinstance(value, (Mapping, ml_collections.ConfigDict)):
      out.update(flatten(value, name + '.'))
    elif isinstance(value, (bool, int, float, str)):
      out[name] = value
    else:
      out[name] = str(value)
  return out


def _plain(config: ml_collections.ConfigDict | Mapping[str, Any]) -> Mapping[str, Any]:
  """A config as config.json holds it (JSON types), so a saved config and a live one compare field by field."""
  if isinstance(config, ml_collections.ConfigDict):
    return json.loads(config.to_json_best_effort(sort_keys=True))
  return config


def differences(old: ml_collections.ConfigDict | Mapping[str, Any], new: ml_collections.ConfigDict | Mapping[str, Any],
                ignore: Sequence[str] = ()) -> list[str]:
  """'field: old -> new' for every field that differs, in field order; a field equal to an entry of `ignore`, or
  under one ending in '.', is left out."""
  a, b = flatten(_plain(old)), flatten(_plain(new))
  missing = '(absent)'

  def ignored(field: str) -> bool:
    return any(field == f or (f.endswith('.') and field.startswith(f)) for f in ignore)

  return [f'{k}: {a.get(k, missing)!r} -> {b.get(k, missing)!r}' for k in sorted(set(a) | set(b))
          if a.get(k, missing) != b.get(k, missing) and not ignored(k)]
