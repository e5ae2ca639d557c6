"""workdir.py: one reader of a training work folder (checkpoint lookup, config.json, G's variables alone)
and the work folder's own training assets, on the README main job's work folder (1 step of configs/demo.py at 64 px,
shared with test_reenact.py): copied alone to another place, without its dataset, it still gives the 3DMM and audio
statistics of the dataset, bit for bit, and a Reenactor."""
import json
import pathlib
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from headgan_jax import errors, reenact
from headgan_jax import workdir as workdir_lib
from test_reenact import workdir  # noqa: F401  The README main job's work folder (session), as test_reenact.py.


def test_a_copied_work_folder_reenacts_without_its_dataset(workdir, tmp_path):  # noqa: F811
  from headgan_jax.data import pipeline
  from headgan_jax.face3d import morphable
  config = workdir_lib.read_config(workdir / 'config.json')
  dataset = pipeline.open_dataset(config)
  assert sorted(p.name for p in (workdir / 'assets').iterdir()) == ['audio_stats.json', 'face_model.npz']

  moved = tmp_path / 'moved'  # Only the work folder travels; its config's data_dir points nowhere.
  shutil.copytree(workdir, moved)
  saved = json.loads((moved / 'config.json').read_text())
  saved['data']['data_dir'] = str(tmp_path / 'no-dataset-here')
  (moved / 'config.json').write_text(json.dumps(saved))
  moved_config = workdir_lib.read_config(moved / 'config.json')
  with pytest.raises(errors.DatasetError):
    pipeline.open_dataset(moved_config)

  assets = workdir_lib.read_assets(moved_config, moved)
  assert assets.source == str(moved / 'assets')
  want, got = morphable.to_arrays(dataset.model), morphable.to_arrays(assets.model)
  assert want.keys() == got.keys()
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  np.testing.assert_array_equal(assets.audio_stats.mean, dataset.audio_stats.mean)
  np.testing.assert_array_equal(assets.audio_stats.std, dataset.audio_stats.std)
  assert assets.audio_stats.count == dataset.audio_stats.count

  r, ckpt = reenact.reenactor_from_checkpoint(str(moved))
  assert (ckpt.step, ckpt.workdir) == (1, str(moved)) and r.size == 64
  np.testing.assert_array_equal(np.asarray(r.tracker.model.mean), want['mean'])
  np.testing.assert_array_equal(r.audio_stats.mean, dataset.audio_stats.mean)

  # A work folder from before train.py wrote its assets: the dataset when it is there, else a clear error.
  shutil.rmtree(moved / 'assets')
  assert workdir_lib.read_assets(config, moved).source == dataset.path
  with pytest.raises(errors.CheckpointError) as e:
    reenact.training_assets(moved_config, moved)
  assert f'{moved / "assets" / "face_model.npz"} does not exist' in str(e.value)
  assert 'training dataset is not at hand' in str(e.value) and 'no-dataset-here' in str(e.value)

  # A converted 3DMM's landmark map (config.track.landmark_map) travels with the folder too.
  table = tmp_path / 'map.txt'
  table.write_text('\n'.join(str(i if i % 2 == 0 else -1) for i in range(468)))
  mapped = workdir_lib.read_config(workdir / 'config.json')
  mapped.track.landmark_map = str(table)
  assert [p.name for p in map(pathlib.Path, workdir_lib.write_assets(mapped, tmp_path / 'mapped'))] == [
      'face_model.npz', 'audio_stats.json', 'landmark_map.txt']
  table.unlink()
  model, points, _ = reenact.training_assets(mapped, tmp_path / 'mapped')
  assert points.tolist() == list(range(0, 468, 2)) and np.asarray(model.landmark_indices).tolist() == points.tolist()

  synthetic = workdir_lib.read_config(workdir / 'config.json')
  synthetic.data.source = 'synthetic'
  assert workdir_lib.write_assets(synthetic, tmp_path / 'synthetic') == []  # Nothing to copy.
  assert not (tmp_path / 'synthetic').exists()


def test_loader_reads_g_alone_and_refuses_bad_folders_clearly(workdir, tmp_path):  # noqa: F811
  root = workdir / 'checkpoints'
  # G's arrays, read alone, are the train state's own (the whole state restored without a target).
  ckpt = workdir_lib.load(workdir)
  assert (ckpt.step, ckpt.path, ckpt.config_path) == (1, str(root / '1'), str(workdir / 'config.json'))
  whole = ocp.PyTreeCheckpointer().restore(str(root / '1' / 'state'))
  for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(ckpt.variables['params']),
                               jax.tree.leaves(whole['g']['params']), strict=True):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=jax.tree_util.keystr(path))
  found = workdir_lib.find(root / '1')  # One checkpoint's folder, its config two levels up.
  assert (found.workdir, found.folder, found.step) == (str(workdir), str(root / '1'), 1)

  def refused(*args, **kwargs) -> str:
    with pytest.raises(errors.CheckpointError) as e:
      workdir_lib.load(*args, **kwargs)
    return str(e.value)

  assert refused(tmp_path / 'missing') == (f'{tmp_path / "missing"}: no such folder (a training work folder or one of '
                                           'its checkpoints/<step> folders is expected).')
  (tmp_path / 'empty').mkdir()
  assert refused(tmp_path / 'empty').startswith(f'{tmp_path / "empty"}: holds no checkpoint '
                                                f'({tmp_path / "empty" / "checkpoints"}/<step>/state); train first')
  assert refused(workdir, 7) == f'step 7: {root} has checkpoints at steps [1]'
  assert refused(workdir, 7, step_flag='--checkpoint') == f'--checkpoint 7: {root} has checkpoints at steps [1]'
  assert refused(root / '1', 7) == f'step 7: {root / "1"} is the checkpoint of step 1.'

  other = tmp_path / 'other'  # The checkpoint beside the config of another run.
  shutil.copytree(root, other / 'checkpoints')
  assert refused(other).startswith(f'{other / "config.json"}: not found; a checkpoint is read with the config')
  config = json.loads((workdir / 'config.json').read_text())
  config['model']['ngf'] = 16
  (other / 'config.json').write_text(json.dumps(config))
  message = refused(other)
  assert message.startswith(f'{other / "checkpoints" / "1"} was written for another config than '
                            f'{other / "config.json"} (image_size 64, model.ngf 16): ')
  assert "of G's arrays differ, e.g.\n  params/" in message and 'in the checkpoint,' in message
  assert message.endswith('Use the config.json of the run that wrote the checkpoint.')
  (other / 'config.json').write_text('{not json')
  assert refused(other).startswith(f'{other / "config.json"}: not a readable config.json')
