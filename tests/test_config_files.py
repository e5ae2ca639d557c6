"""headgan_jax/config_files.py: the one config loader (FILE.py[:ARG], a saved config.json or its work folder), its
--config.<field>=<value> overrides, its one-line errors, and the diff and flattening of configs."""
from __future__ import annotations

import json
import pathlib

import ml_collections
import pytest

from headgan_jax import config_files
from headgan_jax.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]
PAPER = str(REPO / 'configs' / 'paper.py')


def _write(path: pathlib.Path, text: str) -> str:
  path.write_text(text)
  return str(path)


def test_a_config_file_with_and_without_its_argument(tmp_path):
  full, no_flow = config_files.load(PAPER), config_files.load(f'{PAPER}:ablation=no_flow')
  assert full.model.use_flow and not no_flow.model.use_flow and no_flow.variant == 'no_flow'
  assert config_files.load(REPO / 'configs' / 'tiny.py').image_size == 64  # A path object too.
  # A get_config without a parameter is called without one when no ':' is given (tests/dataset_config.py).
  plain = _write(tmp_path / 'plain.py', 'import ml_collections\n\n\ndef get_config():\n'
                 '  return ml_collections.ConfigDict({"a": 1})\n')
  assert config_files.load(plain).a == 1


def test_a_saved_config_json_and_its_work_folder(tmp_path):
  config = config_files.load(PAPER)
  (tmp_path / 'config.json').write_text(config.to_json_best_effort(indent=2))
  for spec in (tmp_path / 'config.json', tmp_path):
    loaded = config_files.load(spec)
    assert isinstance(loaded, ml_collections.ConfigDict) and config_files.differences(config, loaded) == []


def test_bad_input_is_one_line_naming_the_file_or_field(tmp_path):
  (tmp_path / 'bad.json').write_text('{not json')
  (tmp_path / 'notes.txt').write_text('x')
  empty = tmp_path / 'empty'
  empty.mkdir()
  cases = {
      str(tmp_path / 'none.py'): f'config file {tmp_path / "none.py"} does not exist',
      str(tmp_path / 'none.json'): f'config file {tmp_path / "none.json"} does not exist',
      str(tmp_path / 'bad.json'): f'config file {tmp_path / "bad.json"} is not a valid config.json (Expecting',
      str(tmp_path / 'notes.txt'): 'notes.txt: expected a config file path.py[:arg] or a saved config.json',
      _write(tmp_path / 'noget.py', 'x = 1\n'): 'noget.py has no get_config()',
      _write(tmp_path / 'imp.py', 'import no_such_module_here\n'): "imp.py: No module named 'no_such_module_here' "
                                                                      '(install the project: pip install -e .',
      f'{PAPER}:ablation=no_mouth': 'config argument ablation=no_mouth: expected one of full, no_flow, no_audio',
      str(empty): f'{empty / "config.json"} does not exist: {empty} is not the work folder of a train.py run',
  }
  for spec, message in cases.items():
    with pytest.raises(ConfigError) as e:
      config_files.load(spec)
    assert message in str(e.value) and '\n' not in str(e.value), (spec, str(e.value))


def test_overrides_parse_each_value_as_its_field_type():
  base = config_files.load(PAPER)
  overrides, rest = config_files.split_overrides(['train.py', '--config.train.batch_size=12', '--workdir', '/tmp/x',
                                                  '--config.data.source', 'synthetic', '--noconfig.model.use_audio'])
  assert rest == ['train.py', '--workdir', '/tmp/x']
  config = config_files.override(base, overrides, 'paper.py')
  assert (config.train.batch_size, config.data.source, config.model.use_audio) == (12, 'synthetic', False)
  assert config is base and config.is_locked  # As config_flags does: the object itself (tests/config_reads.py).
  base = config_files.load(PAPER)
  with pytest.raises(ConfigError, match=r"^--config.train.batch_sise=3: paper.py has no config field 'train.batch_sise'$"):
    config_files.override(base, ['--config.train.batch_sise=3'], 'paper.py')
  with pytest.raises(ConfigError, match='batch_size=many'):
    config_files.override(base, ['--config.train.batch_size=many'], 'paper.py')


def test_differences_and_flatten():
  config = ml_collections.ConfigDict({'train': {'num_steps': 10, 'lr': 1e-4}, 'evals': {'fid': {'every': 5}},
                                      'model': {'sizes': (1, 2), 'weights': None}})
  assert config_files.flatten(config) == {'train.num_steps': 10, 'train.lr': 1e-4, 'evals.fid.every': 5,
                                          'model.sizes': '(1, 2)', 'model.weights': 'None'}
  saved = json.loads(config.to_json_best_effort())  # As config.json holds it: a tuple became a list.
  assert config_files.differences(saved, config) == []
  changed = config.copy_and_resolve_references()
  changed.train.num_steps, changed.train.lr, changed.evals.fid.every = 20, 2e-4, 1
  changed.model.new = 'x'
  assert config_files.differences(saved, changed) == [
      'evals.fid.every: 5 -> 1', "model.new: '(absent)' -> 'x'", 'train.lr: 0.0001 -> 0.0002',
      'train.num_steps: 10 -> 20']
  assert config_files.differences(saved, changed, ignore=('train.num_steps', 'evals.', 'model.new')) == [
      'train.lr: 0.0001 -> 0.0002']
