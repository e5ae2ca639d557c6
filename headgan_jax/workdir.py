"""A training work folder: its layout, its checkpoints, its config.json, G's variables and the training assets.

The one place that knows the work folder's layout. train/loop.py writes it; the readers (evaluate.py, reenact.py,
main_job.py, train/baselines.py) find what they need here, below the training code (this module imports no
headgan_jax.train):

  WORKDIR/config.json                 the run's resolved config (CONFIG_FILE)
  WORKDIR/checkpoints/<N>/state       orbax checkpoint of the TrainState after N steps (CHECKPOINT_DIR)
  WORKDIR/assets/face_model.npz       the training set's 3DMM, the model x_t was rendered with (ASSETS_DIR)
  WORKDIR/assets/audio_stats.json     the training set's audio feature statistics ({mean, std, count}, the format
                                      of the dataset's metadata 'audio_stats'); absent when the set has none
  WORKDIR/assets/landmark_map.txt     a copy of config.track.landmark_map (a converted 3DMM's detector points);
                                      absent when the config has none
  WORKDIR/checkpoints/<N>/checksums.json
                                      size and CRC-32 of every file of checkpoint N (CHECKSUMS_FILE), written by the
                                      loop once orbax has finished writing it: what `damage` checks against
  WORKDIR/checkpoints_damaged/<N>-<UTC time>/
                                      damaged checkpoints the training loop moved aside (DAMAGED_DIR), out of the
                                      sight of orbax's CheckpointManager, which lists WORKDIR/checkpoints
  WORKDIR/run.lock                    flock(2)ed by the process training in WORKDIR (LOCK_FILE); holds its pid, host,
                                      start time and command
  WORKDIR/tensorboard/                the run's TensorBoard event files (TENSORBOARD_DIR)
  WORKDIR/eval.json                   evaluate.py's default output (EVAL_FILE)

  find(path, step)        -> Location: a work folder's newest whole checkpoint (a newer damaged one is skipped with
                             one line on stderr saying why), or checkpoint `step`, or one checkpoint's folder
                             (CheckpointError naming the damaged file and the newest whole alternative when that
                             one is damaged)
  load(path, step)        -> Checkpoint: config + G's variables only (a partial restore: D, D_m and the optimiser
                             states are never read), checked against the config (CheckpointError naming the arrays
                             that differ when the checkpoint was written for another config)
  write_assets / read_assets: the assets above, so that a copied work folder reenacts without its dataset.
  damage(folder)          -> why a checkpoint would not restore completely (naming the file), or None when whole
  newest_whole / set_aside / write_checksums: the training loop's resume (train/loop.py) on top of `damage`
  lock_workdir / workdir_holder: one training run per work folder (WorkdirBusyError naming the other process)
  stop_on_no_space(workdir): the training loop's writes that fail for lack of space -> CheckpointError in one line

The training loop restores the whole TrainState itself (Trainer.restore / restore_or_init: it needs D and the
optimisers) but finds the checkpoint here too (`find`; on resume `newest_whole`, moving newer damaged ones aside).
"""
from __future__ import annotations

import dataclasses
import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import re
import socket
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

from headgan_jax import config_files, errors
from headgan_jax.files import write_atomic

CHECKPOINT_DIR = 'checkpoints'
CONFIG_FILE = 'config.json'
TENSORBOARD_DIR = 'tensorboard'
EVAL_FILE = 'eval.json'
STATE_ITEM = 'state'  # The TrainState's item in a checkpoint folder (the loop's Composite name).
DATA_ITEM = 'data'  # Every process's data-iterator position (the loop's JSON item).
CHECKSUMS_FILE = 'checksums.json'
DAMAGED_DIR = 'checkpoints_damaged'
LOCK_FILE = 'run.lock'
# Names a process that holds WORKDIR's lock for a child running part of its run (main_job's train.py stage): the
# number of the inherited descriptor of the locked file.
LOCK_FD_ENV = 'HEADGAN_WORKDIR_LOCK_FD'
# The files a checkpoint cannot restore without, and orbax's JSON files in an item folder (the tree's metadata, its
# shardings, the JSON item, and the per-process array metadata below 'array_metadatas/').
_REQUIRED_FILES = (f'{STATE_ITEM}/_METADATA', f'{DATA_ITEM}/metadata')
_JSON_NAMES = ('_METADATA', '_sharding', 'metadata')
_JSON_FOLDERS = ('array_metadatas',)
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
  """The steps of WORKDIR's checkpoints that have a state, ascending (orbax's temporary folders are not digits);
  whether each is whole: `damage`."""
  root = os.path.join(os.fspath(workdir), CHECKPOINT_DIR)
  if not os.path.isdir(root):
    return []
  return sorted(int(n) for n in os.listdir(root) if n.isdigit() and os.path.isdir(os.path.join(root, n, STATE_ITEM)))


def say(line: str) -> None:
  """One line for the user on stderr (where the commands' own messages go)."""
  print(line, file=sys.stderr, flush=True)


def find(path: str | os.PathLike, step: int | None = None, *, step_flag: str = 'step',
         report: Callable[[str], None] = say) -> Location:
  """The newest whole checkpoint (`damage`) of a training work folder, or its checkpoint `step`, or the checkpoint
  folder `path` (WORKDIR/checkpoints/<N>, its config.json two levels up: `config_path`, not checked here).

  Each newer damaged checkpoint skipped is `report`ed in one line (step, folder, why); nothing is moved (a reader may
  run beside training: only the training loop, holding the work folder's lock, moves damaged checkpoints aside).
  CheckpointError naming the folder when there is none, and naming the damaged file and the newest whole alternative
  when the checkpoint asked for is damaged; `step_flag` names the step in those messages as the caller's user gave it
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
    _refuse_if_damaged(workdir, found, folder, asked=path)
  else:
    workdir, root = path, os.path.join(path, CHECKPOINT_DIR)
    steps = checkpoint_steps(path)
    if not step_folders(path):
      raise errors.CheckpointError(f'{path}: holds no checkpoint ({root}/<step>/{STATE_ITEM}); train first with '
                                   f'train.py --workdir {path}.')
    if step is not None:
      if step not in steps:
        raise errors.CheckpointError(f'{step_flag} {step}: {root} has checkpoints at steps {steps}')
      found = int(step)
      _refuse_if_damaged(workdir, found, os.path.join(root, str(found)), asked=f'{step_flag} {step}')
    else:
      found, damaged = newest_whole(path)
      if found is None:
        raise errors.CheckpointError(f'{root}: no checkpoint there is whole: {describe(damaged)}.')
      for d in damaged:
        report(f'skipping checkpoint step {d.step} ({d.folder}): {d.reason}')
    folder = os.path.join(root, str(found))
  return Location(workdir=workdir, folder=folder, step=found, config_path=os.path.join(workdir, CONFIG_FILE))


def _refuse_if_damaged(workdir: str, step: int, folder: str, asked: str) -> None:
  """CheckpointError naming the damaged file of `folder` (what the user `asked` for) and the newest whole checkpoint
  of `workdir` besides it."""
  reason = damage(folder)
  if reason is None:
    return
  other, _ = newest_whole(workdir, skip=(step,))
  instead = (f'the newest whole checkpoint there is step {other}: {os.path.join(workdir, CHECKPOINT_DIR, str(other))}'
             if other is not None else f'no other checkpoint of {workdir} is whole')
  where = '' if asked == folder else f' {folder}'
  raise errors.CheckpointError(f'{asked}: checkpoint{where} is damaged: {reason}; {instead}.')


# --- Whole or damaged ------------------------------------------------------------------------------------------
# A checkpoint is whole when it would restore completely. Checked against the checksums.json the training loop
# writes once orbax has finished a checkpoint (every file's size and CRC-32: truncation, a missing file, changed
# bytes anywhere); a checkpoint without one (written before checksums existed, or its run killed between orbax's
# finish and the checksums) is read back instead: every JSON metadata file parses and every array of the state reads
# (tensorstore fails on a truncated or missing data file). Reading back cannot see bytes changed inside an array
# file (orbax restores them without complaint: measured), which is why the checksums are written.


@dataclasses.dataclass(frozen=True)
class Damaged:
  """A checkpoint that would not restore completely, and why (naming the file)."""
  step: int
  folder: str
  reason: str


def step_folders(workdir: str | os.PathLike) -> dict[int, str]:
  """{step: folder} of every WORKDIR/checkpoints/<step> folder, whole or not: the steps orbax's CheckpointManager
  lists (its temporary folders are not digits)."""
  root = os.path.join(os.fspath(workdir), CHECKPOINT_DIR)
  if not os.path.isdir(root):
    return {}
  steps = sorted(int(n) for n in os.listdir(root) if n.isdigit() and os.path.isdir(os.path.join(root, n)))
  return {step: os.path.join(root, str(step)) for step in steps}


def item_files(folder: str) -> list[str]:
  """The files of checkpoint `folder`'s items (state/, data/), relative to it, sorted. The step folder's own files
  (orbax's _CHECKPOINT_METADATA and commit markers, checksums.json) are not among them: restoring reads none."""
  found = []
  for entry in os.listdir(folder):
    if os.path.isdir(os.path.join(folder, entry)):
      for parent, _, files in os.walk(os.path.join(folder, entry)):
        found += [os.path.relpath(os.path.join(parent, f), folder) for f in files]
  return sorted(found)


def crc32(path: str) -> int:
  """CRC-32 of a file's bytes (zlib's: fast, and enough to see damage; not a defence against tampering)."""
  value = 0
  with open(path, 'rb') as f:
    while chunk := f.read(1 << 22):
      value = zlib.crc32(chunk, value)
  return value


def write_checksums(folder: str) -> str:
  """Writes FOLDER/checksums.json ({relative path: [size, CRC-32]} of every item file; atomic) and returns its path.
  Call it on one process, once orbax has finished writing the checkpoint, or after it was read back whole."""
  files = {rel: [os.path.getsize(os.path.join(folder, rel)), crc32(os.path.join(folder, rel))]
           for rel in item_files(folder)}
  path = os.path.join(folder, CHECKSUMS_FILE)
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump({'algorithm': 'crc32', 'files': files}, f, indent=0, sort_keys=True)
  os.replace(tmp, path)
  return path


def _read_checksums(path: str) -> dict[str, tuple[int, int]]:
  with open(path, encoding='utf-8') as f:
    saved = json.load(f)
  if saved.get('algorithm') != 'crc32':
    raise ValueError(f'unknown algorithm {saved.get("algorithm")!r}')
  return {str(rel): (int(size), int(crc)) for rel, (size, crc) in saved['files'].items()}


def _checksum_damage(folder: str, recorded: dict[str, tuple[int, int]]) -> str | None:
  """The first file of `folder` that is missing or differs from `recorded` (sizes first: no reading), or None."""
  for rel, (size, _) in sorted(recorded.items()):
    path = os.path.join(folder, rel)
    if not os.path.isfile(path):
      return f'{rel} is missing'
    now = os.path.getsize(path)
    if now != size:
      return f'{rel} is {now} bytes, {size} when written ({"truncated" if now < size else "grown"})'
  for rel, (_, value) in sorted(recorded.items()):
    if crc32(os.path.join(folder, rel)) != value:
      return f'{rel} holds other bytes than were written (its CRC-32 differs from {CHECKSUMS_FILE})'
  return None


def _first_line(e: BaseException, limit: int = 300) -> str:
  text = (str(e).strip().splitlines() or [type(e).__name__])[0].split(' [tensorstore_spec=')[0]
  return text if len(text) <= limit else text[:limit] + '...'


def _read_back_damage(folder: str) -> str | None:
  """Without checksums: the first JSON metadata file that does not parse, or array of the state's tree that does not
  read back, or None."""
  for rel in item_files(folder):
    parts = rel.split(os.sep)
    if parts[-1] in _JSON_NAMES or any(p in _JSON_FOLDERS for p in parts[:-1]):
      try:
        with open(os.path.join(folder, rel), encoding='utf-8') as f:
          json.load(f)
      except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors.
        return f'{rel} is not valid JSON ({_first_line(e, 120)})'
  return _unreadable_array(os.path.join(folder, STATE_ITEM))


def _array_names(metadata: dict) -> list[str]:
  """The stored names of the arrays in an orbax PyTree's _METADATA (keys joined by '.', as orbax names them)."""
  if not isinstance(metadata, dict):
    raise TypeError(f'a JSON {type(metadata).__name__}, not an object')
  names = []
  for entry in metadata['tree_metadata'].values():
    value = entry.get('value_metadata') or {}
    if value.get('value_type') in ('jax.Array', 'np.ndarray', 'scalar') and not value.get('skip_deserialize'):
      names.append('.'.join(str(k['key']) for k in entry['key_metadata']))
  return names


def _unreadable_array(state_dir: str) -> str | None:
  """The first array named in the state's _METADATA that does not read back (decoded, one at a time), or None.
  Read through tensorstore directly and synchronously: orbax's own restore of a damaged checkpoint printed dozens of
  'Event loop is closed' tracebacks from its reader threads (measured), and needs the model's tree and devices."""
  import tensorstore as ts  # pylint: disable=import-outside-toplevel
  with open(os.path.join(state_dir, '_METADATA'), encoding='utf-8') as f:
    metadata = json.load(f)
  try:
    names = _array_names(metadata)
  except (KeyError, TypeError, AttributeError) as e:  # Valid JSON, but not orbax's layout.
    return f'{STATE_ITEM}/_METADATA does not describe a tree of arrays ({_first_line(e, 120)})'
  driver = 'zarr3' if metadata.get('use_zarr3') else 'zarr'
  base = f'file://{os.path.abspath(state_dir)}/'
  context = ts.Context()  # Shared by the arrays: the OCDBT manifest is read once.
  for name in names:
    kvstore = ({'driver': 'ocdbt', 'base': base, 'path': f'{name}/'} if metadata.get('use_ocdbt', True)
               else f'{base}{name}/')
    try:
      ts.open({'driver': driver, 'kvstore': kvstore}, open=True, read=True, context=context).result().read().result()
    except Exception as e:  # pylint: disable=broad-exception-caught  # tensorstore's errors are ValueErrors and more.
      return f'{STATE_ITEM}/: array {name} does not read back ({_first_line(e)})'
  return None


def damage(folder: str) -> str | None:
  """Why checkpoint `folder` (WORKDIR/checkpoints/<N>) would not restore completely, naming the file, or None when it
  is whole: checked against its checksums.json, else read back (see above)."""
  for rel in _REQUIRED_FILES:
    if not os.path.isfile(os.path.join(folder, rel)):
      return f'{rel} is missing'
  sums = os.path.join(folder, CHECKSUMS_FILE)
  if not os.path.exists(sums):
    return _read_back_damage(folder)
  try:
    recorded = _read_checksums(sums)
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    return f'{CHECKSUMS_FILE} is unreadable ({_first_line(e, 120)})'
  return _checksum_damage(folder, recorded)


def newest_whole(workdir: str | os.PathLike, skip: tuple[int, ...] = ()) -> tuple[int | None, list[Damaged]]:
  """(The newest step of WORKDIR whose checkpoint is whole, or None; the damaged checkpoints newer than it, newest
  first). Older checkpoints are not checked; steps in `skip` are passed over."""
  damaged = []
  for step, folder in sorted(step_folders(workdir).items(), reverse=True):
    if step in skip:
      continue
    reason = damage(folder)
    if reason is None:
      return step, damaged
    damaged.append(Damaged(step, folder, reason))
  return None, damaged


def describe(damaged: list[Damaged]) -> str:
  return '; '.join(f'step {d.step}: {d.reason}' for d in damaged)


def set_aside(workdir: str | os.PathLike, damaged: Damaged) -> str:
  """Moves a damaged checkpoint to WORKDIR/checkpoints_damaged/<step>-<UTC time> (nothing is deleted; orbax's
  CheckpointManager no longer sees it there) and returns where. CheckpointError when it cannot be moved."""
  root = os.path.join(os.fspath(workdir), DAMAGED_DIR)
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
  dest = os.path.join(root, f'{damaged.step}-{stamp}')
  n = 1
  while os.path.exists(dest):
    dest, n = os.path.join(root, f'{damaged.step}-{stamp}-{n}'), n + 1
  try:
    os.makedirs(root, exist_ok=True)
    os.rename(damaged.folder, dest)  # The same file system as the checkpoint: a rename, not a copy.
  except OSError as e:
    raise errors.CheckpointError(f'{damaged.folder} is damaged ({damaged.reason}) and cannot be moved to {dest}: '
                                 f'{e}; move it out of {os.path.dirname(damaged.folder)} by hand and run again.'
                                 ) from e
  return dest


def read_config(path: str | os.PathLike):
  """The ml_collections config of a run's config.json (config_files.load_json; CheckpointError naming the file when
  unreadable)."""
  path = os.fspath(path)
  try:
    return config_files.load_json(path)
  except errors.ConfigError as e:
    raise errors.CheckpointError(f'{path}: not a readable config.json: {e.__cause__ or e}') from e


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
         step_flag: str = 'step', report: Callable[[str], None] = say) -> Checkpoint:
  """G's variables of checkpoint `step` (default the newest whole one: `find`) of the work folder `path`, or of the
  checkpoint folder `path`, with the run's config (or `config`, e.g. an evaluation's, when given)."""
  location = find(path, step, step_flag=step_flag, report=report)
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
  from headgan_jax.data import building, pipeline  # pylint: disable=import-outside-toplevel
  from headgan_jax.face3d import morphable  # pylint: disable=import-outside-toplevel
  if str(config.data.source) not in pipeline.DATASETS:
    return []
  ds = pipeline.open_dataset(config)
  folder = assets_dir(workdir)
  written = [os.path.join(folder, FACE_MODEL_FILE)]
  morphable.save(ds.model, written[0])  # Atomic.
  stats_path = os.path.join(folder, AUDIO_STATS_FILE)
  if ds.audio_stats is not None:
    write_atomic(stats_path, json.dumps(building.stats_to_json(ds.audio_stats)).encode())
    written.append(stats_path)
  elif os.path.exists(stats_path):  # A rebuilt dataset without statistics: do not leave the old ones behind.
    os.remove(stats_path)
  if config.track.landmark_map:
    written.append(os.path.join(folder, LANDMARK_MAP_FILE))
    try:
      with open(config.track.landmark_map, 'rb') as f:
        write_atomic(written[-1], f.read())
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


# --- Writes that fail for lack of space ---------------------------------------------------------------------

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # A full disk, a quota, a file size limit (ulimit -f).
# tensorstore (orbax's array writes) reports the OS error as "... [os_error_code='28']" inside a ValueError; an OSError
# turned into text reads "[Errno 28] ...".
_ERROR_CODE = re.compile(r"os_error_code='(\d+)'|\[Errno (\d+)\]")


def no_space(e: BaseException | None) -> str | None:
  """The OS's words for the cause ('No space left on device', ...) when `e`, or an exception it was raised from or
  during, is a write that failed for lack of space; else None."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in _NO_SPACE:
      return os.strerror(e.errno)
    for match in _ERROR_CODE.finditer(str(e)):
      code = int(match.group(1) or match.group(2))
      if code in _NO_SPACE:
        return os.strerror(code)
    e = e.__cause__ or e.__context__
  return None


def no_space_message(workdir: str, e: BaseException, cause: str) -> str:
  """One line: what could not be written (a file, or WORKDIR/checkpoints for orbax's writes), why, and the
  checkpoint the same command resumes from once there is space."""
  filename = e.filename if isinstance(e, OSError) and e.filename else None
  where = filename or os.path.join(workdir, CHECKPOINT_DIR)
  what = f'{where}' if filename else f'checkpoint step {_unfinished_step(workdir)} to {where}'
  step, _ = newest_whole(workdir)
  resume = (f'the newest whole checkpoint is step {step}: {os.path.join(workdir, CHECKPOINT_DIR, str(step))}'
            if step is not None else 'no checkpoint was written yet')
  return (f'cannot write {what}: {cause}. Training stopped; {resume}. Free some space (or raise the limit) and run '
          'the same command to resume.')


def _unfinished_step(workdir: str) -> str:
  """The step of orbax's unfinished checkpoint folder (<step>.orbax-checkpoint-tmp...) in WORKDIR, '?' if none."""
  root = os.path.join(workdir, CHECKPOINT_DIR)
  steps = sorted(int(n.split('.')[0]) for n in (os.listdir(root) if os.path.isdir(root) else ())
                 if '.orbax-checkpoint-tmp' in n and n.split('.')[0].isdigit())
  return str(steps[-1]) if steps else '?'


def _noise(e: BaseException | None) -> bool:
  """Whether `e` is one of the reports orbax's and tensorstore's threads print when a write failed for lack of space:
  the failure again, the asyncio loop orbax closed on it ('Event loop is closed': tensorstore's writes still in flight
  complete into it), or the same at interpreter exit. The run's own error (a HeadGANError) is never noise."""
  if e is None or isinstance(e, errors.HeadGANError):
    return False
  text = str(e)
  return (no_space(e) is not None or (isinstance(e, RuntimeError) and 'Event loop is closed' in text) or
          (isinstance(e, ImportError) and 'shutting down' in text))


class _DropNoSpaceLogs(logging.Filter):
  """Drops the error records (with tracebacks) that orbax's threads (absl) and asyncio log for `_noise`."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.ERROR:
      return True
    return not _noise(record.exc_info[1] if record.exc_info else None) and not _noise(Exception(record.getMessage()))


@contextlib.contextmanager
def stop_on_no_space(workdir: str):
  """Turns a write that failed for lack of space into CheckpointError with `no_space_message` (train.py: that one
  line, exit status 2), without the dozens of tracebacks orbax's and tensorstore's threads print for it (`_noise`:
  dropped from the absl and asyncio logs, sys.excepthook and sys.unraisablehook while this is active, and, once such
  a failure happened, until the process ends: the abandoned writes go on reporting until then). Other reports pass."""
  quiet, loggers = _DropNoSpaceLogs(), [logging.getLogger(name) for name in ('absl', 'asyncio')]
  excepthook, unraisablehook = sys.excepthook, sys.unraisablehook

  def quiet_excepthook(kind, value, traceback):
    if not _noise(value):
      excepthook(kind, value, traceback)

  def quiet_unraisablehook(unraisable):
    if not _noise(unraisable.exc_value):
      unraisablehook(unraisable)

  for logger in loggers:
    logger.addFilter(quiet)
  sys.excepthook, sys.unraisablehook = quiet_excepthook, quiet_unraisablehook
  failed = False
  try:
    yield
  except Exception as e:  # pylint: disable=broad-exception-caught  # orbax raises tensorstore's ValueErrors and more.
    cause = no_space(e)
    if cause is None:
      raise
    failed = True
    raise errors.CheckpointError(no_space_message(workdir, e, cause)) from e
  finally:
    if not failed:
      for logger in loggers:
        logger.removeFilter(quiet)
      sys.excepthook, sys.unraisablehook = excepthook, unraisablehook


# --- One training run per work folder --------------------------------------------------------------------------
# flock(2) on WORKDIR/run.lock, held while a run trains: the kernel releases it when the process ends, however it
# ends (SIGKILL and crashes included), so a killed run never leaves a stale lock on a local disk; the file's text (the
# holder's pid, host, start time, command) is only read to name the holder. On NFS, Linux emulates flock with the
# server's byte-range locks: runs on different hosts exclude each other, and the lock of a host that died is dropped
# when the server's lease on it expires (NFSv4: about 90 s). A file system without locks (some FUSE mounts) answers
# ENOLCK / EOPNOTSUPP: then a warning line, and two runs are not prevented. gcsfuse locks within one host only.
# A gs:// URL is no path for this module (os.path): such a work folder is used through a mount.
# Several hosts: one run uses one work folder for all its hosts, and only its process 0 takes the lock (loop.py): on
# NFS, every process taking it would make the hosts of one run refuse each other.


@dataclasses.dataclass
class WorkdirLock:
  """WORKDIR's run lock as held by this process: `fd` the locked descriptor, None when the lock is held for this
  process by the one that started it (inherited descriptor) or cannot be taken (file system without locks)."""
  path: str
  fd: int | None

  def release(self) -> None:
    if self.fd is not None:
      os.close(self.fd)  # The lock goes with the last descriptor of the open file (a child's inherited copy keeps it).
      self.fd = None

  def __enter__(self) -> 'WorkdirLock':
    return self

  def __exit__(self, *exc) -> None:
    self.release()

  def __del__(self) -> None:  # A lock nobody holds a reference to any more is released (a caller's error path).
    self.release()

  def for_child(self) -> dict[str, Any]:
    """subprocess keyword arguments (pass_fds, env) with which a child process running part of this run (e.g.
    main_job's train.py stage) holds this lock too instead of being refused by it."""
    if self.fd is None:
      return {}
    return {'pass_fds': (self.fd,), 'env': dict(os.environ, **{LOCK_FD_ENV: str(self.fd)})}


def _holder_text() -> str:
  started = datetime.datetime.now().astimezone().isoformat(timespec='seconds')
  return json.dumps({'pid': os.getpid(), 'host': socket.gethostname(), 'started': started,
                     'command': ' '.join(sys.argv)[:300]})


def _busy_message(workdir: str, text: str) -> str:
  try:
    h = json.loads(text)
    holder = f'pid {h["pid"]} on {h["host"]}, started {h["started"]}: {h["command"]}'
  except (ValueError, KeyError, TypeError):
    holder = 'a process that has not written its details (yet)'
  return (f'{workdir} is in use by another training run ({holder}; or a process it started). Wait for it to end or '
          'stop it, or use another work folder.')


def _read_text(fd: int) -> str:
  return os.pread(fd, 4096, 0).decode('utf-8', 'replace')


def _inherited(path: str) -> bool:
  """Whether this process was started with the descriptor of `path` that its parent holds the lock through."""
  fd = os.environ.get(LOCK_FD_ENV, '')
  if not fd.isdigit():
    return False
  try:
    a, b = os.fstat(int(fd)), os.stat(path)
  except OSError:
    return False
  return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def lock_workdir(workdir: str | os.PathLike, attempts: int = 5) -> WorkdirLock:
  """Takes WORKDIR's run lock (creating the folder) for as long as this process lives or until `release`.
  WorkdirBusyError naming the holder (pid, host, start time, command) when another live process holds it. A few
  `attempts` 0.1 s apart ride over another process's `workdir_holder` probe."""
  workdir = os.path.abspath(os.fspath(workdir))
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  if _inherited(path):
    return WorkdirLock(path, None)
  fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
  for attempt in range(attempts):
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      break
    except BlockingIOError:
      if attempt + 1 == attempts:
        text = _read_text(fd)
        os.close(fd)
        raise errors.WorkdirBusyError(_busy_message(workdir, text)) from None
      time.sleep(0.1)
    except OSError as e:  # ENOLCK, EOPNOTSUPP: a file system without locks.
      os.close(fd)
      say(f'warning: {path} cannot be locked ({e.strerror}): a second run in {workdir} would not be refused.')
      return WorkdirLock(path, None)
  os.ftruncate(fd, 0)
  os.pwrite(fd, _holder_text().encode(), 0)
  return WorkdirLock(path, fd)


def workdir_holder(workdir: str | os.PathLike) -> str | None:
  """The WorkdirBusyError message when a live process holds WORKDIR's run lock, else None. A probe: it creates
  nothing (a shared lock for an instant, which a starting run's `lock_workdir` waits out)."""
  path = os.path.join(os.path.abspath(os.fspath(workdir)), LOCK_FILE)
  if not os.path.isfile(path) or _inherited(path):
    return None
  try:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
  except OSError:
    return None
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except BlockingIOError:
    return _busy_message(os.path.dirname(path), _read_text(fd))
  except OSError:  # No locks on this file system: nothing to see.
    return None
  finally:
    os.close(fd)
  return None
