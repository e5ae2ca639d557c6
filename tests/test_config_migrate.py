"""Old work folders keep working (issue 23 item 2): headgan_jax/config_migrate.migrate turns a config.json saved in
the old layout (config.model mixing networks, runtime and data choices under renamed fields) into today's layout.

tests/data/long_demo_config.json is the config.json of a real configs/demo.py run saved before the change (with the
run's own command-line overrides of train.* and data.data_dir / demo_dir)."""
from __future__ import annotations

import json
import pathlib

import jax
import ml_collections
import pytest

from configs import demo, paper
from headgan_jax import config_migrate
from headgan_jax.errors import ConfigError

OLD = pathlib.Path(__file__).parent / 'data' / 'long_demo_config.json'
RUN_OVERRIDES = {'train.image_every', 'train.checkpoint_every', 'train.keep_checkpoints', 'train.steps_per_epoch',
                 'data.data_dir', 'data.demo_dir'}  # Set on that run's command line: not the demo config's values.


def flat(d: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in d.items():
    out.update(flat(v, f'{prefix}{k}.') if isinstance(v, dict) else {f'{prefix}{k}': v})
  return out


def new_demo() -> dict:
  return json.loads(demo.get_config().to_json())


def test_old_run_config_migrates_to_the_demo_config():
  old = json.loads(OLD.read_text())
  assert 'encoder_norm' in old['model'] and 'runtime' not in old  # Really the old layout.
  new = config_migrate.migrate(old)
  assert json.loads(OLD.read_text()) == old  # Pure: the argument is left as it was.
  got, want = flat(new), flat(new_demo())
  assert set(got) == set(want)  # Every field under its new name, none left behind.
  assert {k for k in got if got[k] != want[k]} <= RUN_OVERRIDES
  assert got['model.blocks.affine_norm'] is True and got['disc.affine_norm'] is True
  assert config_migrate.migrate(new) == new  # Idempotent.
  assert config_migrate.migrate(new_demo()) == new_demo()  # A new-layout config is unchanged.
  paper_json = json.loads(paper.get_config('ablation=landmarks').to_json())
  assert config_migrate.migrate(paper_json) == paper_json


def test_old_plain_norms_and_conflicts():
  old = json.loads(OLD.read_text())
  old['model']['encoder_norm'] = old['disc']['norm'] = 'plain'
  new = config_migrate.migrate(old)
  assert new['model']['blocks']['affine_norm'] is False and new['disc']['affine_norm'] is False
  old['disc']['norm'] = 'batch'
  with pytest.raises(ConfigError, match='disc.norm'):
    config_migrate.migrate(old)
  both = new_demo()
  both['model']['conv_impl'] = 'xla'  # Old name beside the new one.
  with pytest.raises(ConfigError, match='model.conv_impl'):
    config_migrate.migrate(both)


def test_migrated_old_config_builds_the_same_networks():
  """Checkpoint-free: G, D, D_m and the optimiser state built from the migrated old config have the parameter tree
  (names, shapes, dtypes) of those built from configs/demo.py."""
  from headgan_jax.train import state as state_lib  # pylint: disable=import-outside-toplevel
  migrated = ml_collections.ConfigDict(config_migrate.migrate(json.loads(OLD.read_text())))
  shapes = lambda c: jax.eval_shape(lambda k: state_lib.init_state(k, c), jax.random.key(0))  # noqa: E731
  got, want = shapes(migrated), shapes(demo.get_config())
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(
      lambda a, b: a.shape == b.shape and a.dtype == b.dtype, got, want))


def test_old_config_loads_and_resumes(tmp_path):
  """The readers of config.json take the old layout: the one loader (a config.json, a work folder), the run's
  checkpoint reader, and the resume check (no field differs from the same config in the new layout)."""
  from headgan_jax import config_files, workdir as checkpoints  # pylint: disable=import-outside-toplevel
  from headgan_jax.train import loop  # pylint: disable=import-outside-toplevel
  path = tmp_path / 'config.json'
  path.write_text(OLD.read_text())
  want = ml_collections.ConfigDict(config_migrate.migrate(json.loads(OLD.read_text())))
  for load in (config_files.load, config_files.load_json, checkpoints.read_config):
    assert load(str(path)).to_dict() == want.to_dict(), load
  assert config_files.load(str(tmp_path)).to_dict() == want.to_dict()
  loop.save_or_check_config(want, str(tmp_path))  # A resumed old run: no ConfigError.
