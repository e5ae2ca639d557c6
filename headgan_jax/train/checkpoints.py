"""Reading a training work folder: its checkpoints, its config.json, G's variables and the training assets.

The one place that knows the work folder's layout (train/loop.py writes it):

  WORKDIR/config.json                 the run's resolved config (CONFIG_FILE)
  WORKDIR/checkpoints/<N>/state       orbax checkpoint of the TrainState after N steps (CHECKPOINT_DIR)
  WORKDIR/assets/face_model.npz       the training set's 3DMM, the model x_t was rendered with (ASSETS_DIR)
  WORKDIR/assets/audio_stats.json     the training set's audio feature statistics ({mean, std, count}, the format
                                      of the dataset's metadata 'audio_stats'); absent when the set has none
  WORKDIR/assets/landmark_map.txt     a copy of config.track.landmark_map (a converted 3DMM's detector points);
                                      absent when the config has none

  find(path, step)        -> Location: a work folder's latest checkpoint (or `step`), or one checkpoint's folder
  load(path, step)        -> Checkpoint: config + G's variables only (a partial restore: D, D_m and the optimiser
                             states are never read), checked against the config (CheckpointError naming the arrays
                             that differ when the checkpoint was written for another config)
  write_assets / read_assets: the assets above, so that a copied work folder reenacts without its dataset.

The training loop restores the whole TrainState itself (Trainer.restore / restore_or_init: it needs D and the
optimisers) but finds the checkpoint with `find` too.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from headgan_jax import errors

CHECKPOINT_DIR = 'checkpoints'
CONFIG_FILE = 'config.json'
STATE_ITEM = 'state'  # The TrainState's item in a checkpoint folder (the loop's Composite name).
ASSETS_DIR = 'assets'
FACE_MODEL_FILE = 'face_model.npz'
AUDIO_STATS_FILE = 'audio_stats.json'
LANDMARK_MAP_FILE = 'landmark_map.txt'


@dataclasses.dataclass(frozen=True)
class Location:
  """Where one checkpoint of a run is."""
  workdir: str
  folder: str  # WORKDIR/checkpoints/<step>
  step: int
  config_path: str  # WORKDIR/config.json


@dataclasses.dataclass
class Checkpoint:
  """G's variables ('params', 'batch_stats') restored from a training checkpoint, with the run's config."""
  config: Any  # ml_collections.ConfigDict
  variables: dict
  step: int
  path: str  # The checkpoint's folder (WORKDIR/checkpoints/<step>).
  config_path: str
  workdir: str


@dataclasses.dataclass
class Assets:
  """What G was trained with beyond its weights: the 3DMM of x_t and the audio statistics of h^(a)."""
  model: Any  # face3d.morphable.MorphableModel
  audio_stats: Any  # audio.stats.FeatureStats or None
  source: str  # Where they were read: the work folder's assets folder or the dataset's folder.
  landmark_map: str | None = None  # The work folder's copy of config.track.landmark_map, else the config's path.


def checkpoint_steps(workdir: str | os.PathLike) -> list[int]:
  """The steps of WORKDIR's complete checkpoints, ascending (orbax's temporary folders are not digits)."""
  root = os.path.join(os.fspath(workdir), CHECKPOINT_DIR)
  if not os.path.isdir(root):
    return []
  return sorted(int(n) for n in os.listdir(root) if n.isdigit() and os.path.isdir(os.path.join(root, n, STATE_ITEM)))


def find(path: str | os.PathLike, step: int | None = None, *, step_flag: str = 'step') -> Location:
  """The checkpoint `step` (default the latest) of a training work folder, or the checkpoint folder `path`
  (WORKDIR/checkpoints/<N>, its config.json two levels up: `config_path`, not checked here). CheckpointError
  naming the folder when there is none; `step_flag` names the step in that message as the caller's user gave it
  (e.g. '--checkpoint')."""
  path = os.path.abspath(os.fspath(path))
  if not os.path.isdir(path):
    raise errors.CheckpointError(f'{path}: no such folder (a training work folder or one of its '
                                 f'{CHECKPOINT_DIR}/<step> folders is expected).')
  if os.path.isdir(os.path.join(path, STATE_ITEM)):  # One checkpoint's folder.
    name = os.path.basename(path)
    if not name.isdigit():
      raise errors.CheckpointError(f'{path}: a checkpoint folder is named after its step ({CHECKPOINT_DIR}/<step>).')
    if step is not None and step != int(name):
      raise errors.CheckpointError(f'{step_flag} {step}: {path} is the checkpoint of step {name}.')
    workdir, folder, found = os.path.dirname(os.path.dirname(path)), path, int(name)
  else:
    workdir, root = path, os.path.join(path, CHECKPOINT_DIR)
    steps = checkpoint_steps(path)
    if not steps:
      raise errors.CheckpointError(f'{path}: holds no checkpoint ({root}/<step>/{STATE_ITEM}); train first with '
                                   f'train.py --workdir {path}.')
    if step is not None and step not in steps:
      raise errors.CheckpointError(f'{step_flag} {step}: {root} has checkpoints at steps {steps}')
    found = steps[-1] if step is None else int(step)
    folder = os.path.join(root, str(found))
  return Location(workdir=workdir, folder=folder, step=found, config_path=os.path.join(workdir, CONFIG_FILE))


def read_config(path: str | os.PathLike):
  """The ml_collections config of a run's config.json (CheckpointError naming the file when unreadable)."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  path = os.fspath(path)
  try:
    with open(path, encoding='utf-8') as f:
      return ml_collections.ConfigDict(json.load(f))
  except (OSError, json.JSONDecodeError) as e:
    raise errors.CheckpointError(f'{path}: not a readable config.json: {e}') from e


def _flat(tree) -> dict[str, tuple]:
  import jax  # pylint: disable=import-outside-toplevel
  return {'/'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in p): tuple(getattr(v, 'shape', ()))
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def restore_generator(location: Location, config, sharding=None) -> dict:
  """G's flax variables ({'params', 'batch_stats'}) of the checkpoint at `location`, read alone from the TrainState
  (a partial restore) onto `sharding` (default: the first local device). CheckpointError naming the first arrays
  that differ when the checkpoint was written for another config than `config`."""
  import jax  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  from headgan_jax.nn import generator as gen_lib  # pylint: disable=import-outside-toplevel
  try:
    generator = gen_lib.make_generator(config)
    abstract = jax.eval_shape(lambda k: generator.init(k, *gen_lib.example_inputs(config)), jax.random.key(0))
  except (errors.HeadGANError, KeyError, AttributeError, TypeError, ValueError) as e:
    raise errors.CheckpointError(f'{location.config_path}: not a usable HeadGAN config: {e}') from e
  want = {'params': abstract['params'], 'stats': abstract.get('batch_stats', {})}  # NetState's field names.
  state_dir = os.path.join(location.folder, STATE_ITEM)
  checkpointer = ocp.PyTreeCheckpointer()
  try:
    meta = checkpointer.metadata(state_dir)
    meta = getattr(meta, 'item_metadata', meta) or meta
    saved_g = meta['g'] if isinstance(meta, dict) else meta.tree['g']
    saved = _flat({'params': saved_g['params'], 'stats': saved_g['stats']})
  except (KeyError, TypeError, FileNotFoundError, ValueError, AttributeError) as e:
    raise errors.CheckpointError(f'{state_dir}: not a readable HeadGAN train-state checkpoint: {e}') from e
  expected = _flat(want)
  differ = [f'{k}: {saved.get(k, "absent")} in the checkpoint, {expected.get(k, "absent")} for the config'
            for k in sorted(set(saved) | set(expected)) if saved.get(k) != expected.get(k)]
  if differ:
    raise errors.CheckpointError(
        f'{location.folder} was written for another config than {location.config_path} (image_size '
        f'{config.image_size}, model.ngf {config.model.ngf}): {len(differ)} of G\'s arrays differ, e.g.\n  ' +
        '\n  '.join(differ[:4]) + '\nUse the config.json of the run that wrote the checkpoint.')
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  item = {'g': jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), want)}
  try:
    restored = checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True))
  except (ValueError, KeyError, FileNotFoundError) as e:
    raise errors.CheckpointError(f'{state_dir}: cannot restore G from it: {e}') from e
  return {'params': restored['g']['params'], 'batch_stats': restored['g']['stats']}


def load(path: str | os.PathLike, step: int | None = None, *, config=None, sharding=None,
         step_flag: str = 'step') -> Checkpoint:
  """G's variables of checkpoint `step` (default the latest) of the work folder `path`, or of the checkpoint folder
  `path`, with the run's config (or `config`, e.g. an evaluation's, when given)."""
  location = find(path, step, step_flag=step_flag)
  if config is None:
    if not os.path.isfile(location.config_path):
      raise errors.CheckpointError(f'{location.config_path}: not found; a checkpoint is read with the config of its '
                                   'run, saved there by train.py.')
    config = read_config(location.config_path)
  variables = restore_generator(location, config, sharding)
  return Checkpoint(config=config, variables=variables, step=location.step, path=location.folder,
                    config_path=location.config_path, workdir=location.workdir)


# --- Training assets -------------------------------------------------------------------------------------------


def assets_dir(workdir: str | os.PathLike) -> str:
  return os.path.join(os.fspath(workdir), ASSETS_DIR)


def write_assets(config, workdir: str | os.PathLike) -> list[str]:
  """Copies the training set's 3DMM and audio statistics into WORKDIR/assets (atomically: temp file, then rename);
  the files written. Nothing for a source that is not a built dataset (synthetic data has neither). Call it on one
  process only."""
  from headgan_jax.data import building, clips, pipeline  # pylint: disable=import-outside-toplevel
  from headgan_jax.face3d import morphable  # pylint: disable=import-outside-toplevel
  if str(config.data.source) not in pipeline.DATASETS:
    return []
  ds = pipeline.open_dataset(config)
  folder = assets_dir(workdir)
  written = [os.path.join(folder, FACE_MODEL_FILE)]
  morphable.save(ds.model, written[0])  # Atomic.
  stats_path = os.path.join(folder, AUDIO_STATS_FILE)
  if ds.audio_stats is not None:
    clips.write_atomic(stats_path, json.dumps(building.stats_to_json(ds.audio_stats)).encode())
    written.append(stats_path)
  elif os.path.exists(stats_path):  # A rebuilt dataset without statistics: do not leave the old ones behind.
    os.remove(stats_path)
  if config.track.landmark_map:
    written.append(os.path.join(folder, LANDMARK_MAP_FILE))
    try:
      with open(config.track.landmark_map, 'rb') as f:
        clips.write_atomic(written[-1], f.read())
    except OSError as e:
      raise errors.ConfigError(f'config.track.landmark_map = {config.track.landmark_map}: cannot be read: {e}') from e
  return written


def read_assets(config, workdir: str | os.PathLike | None = None) -> Assets:
  """The 3DMM and audio statistics a run trained with: WORKDIR/assets when train.py wrote them there, else (a work
  folder written before it did so, or no work folder) the dataset config.data.source names. CheckpointError when
  neither is there."""
  from headgan_jax.face3d import morphable  # pylint: disable=import-outside-toplevel
  folder = assets_dir(workdir) if workdir is not None else None
  if folder is not None and os.path.isfile(os.path.join(folder, FACE_MODEL_FILE)):
    model = morphable.load(os.path.join(folder, FACE_MODEL_FILE))
    stats_path = os.path.join(folder, AUDIO_STATS_FILE)
    stats = read_stats(stats_path) if os.path.exists(stats_path) else None
    table = os.path.join(folder, LANDMARK_MAP_FILE)
    return Assets(model=model, audio_stats=stats, source=folder,
                  landmark_map=table if os.path.isfile(table) else (config.track.landmark_map or None))
  from headgan_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  try:
    ds = pipeline.open_dataset(config)
  except errors.DatasetError as e:
    where = (f'{os.path.join(folder, FACE_MODEL_FILE)} does not exist (a work folder from before train.py saved '
             'its assets there)') if folder is not None else 'no work folder was given'
    raise errors.CheckpointError(f'the training assets (3DMM, audio statistics) are not found: {where}, and the '
                                 f'training dataset is not at hand either: {e}') from e
  return Assets(model=ds.model, audio_stats=ds.audio_stats, source=ds.path,
                landmark_map=config.track.landmark_map or None)


def read_stats(path: str):
  """FeatureStats from an audio_stats.json (CheckpointError naming the file when it is malformed)."""
  from headgan_jax.data import building  # pylint: disable=import-outside-toplevel
  try:
    with open(path, encoding='utf-8') as f:
      stats = building.stats_from_json(json.load(f))
  except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
    raise errors.CheckpointError(f'{path}: not an audio statistics file ({{mean, std, count}}): {e}') from e
  if stats.mean.ndim != 1 or stats.mean.shape != stats.std.shape:
    raise errors.CheckpointError(f'{path}: mean {stats.mean.shape} and std {stats.std.shape} must be vectors of one '
                                 'length.')
  return stats
