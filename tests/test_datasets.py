"""The TFDS builders (datasets/) on short cuts of the real clips: the demo set's held-out protocol and counts, the
VoxCeleb builder through the Beam DirectRunner on a tiny VoxCeleb-layout tree (a good clip, a corrupt one, one
without a face, one without sound), and a Beam build killed halfway and started again."""
import contextlib
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import dataset_config as dataset_config_module
import dataset_helpers
from headgan_jax import errors
from headgan_jax.data import building, clips as clips_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
SECONDS = 0.7  # Length of each short cut of the VoxCeleb tree: 15-21 frames (the demo build: conftest.py).


def dataset_config(data_dir: pathlib.Path):
  c = dataset_config_module.get_config()
  c.data.data_dir = str(data_dir)
  return c


def read_split(builder, split: str) -> dict[str, dict]:
  source = builder.as_data_source()[split]
  return {r['key']: r for r in (source[i] for i in range(len(source)))}


def assert_same_records(a: dict[str, dict], b: dict[str, dict]) -> None:
  """Two builds' records of a split are the same: keys, fields, arrays to 1e-5 (the fit runs in other processes)."""
  assert a.keys() == b.keys() and a
  for key in a:
    assert set(a[key]) == set(b[key])
    for field in a[key]:
      if isinstance(a[key][field], np.ndarray) and a[key][field].dtype != object:
        np.testing.assert_allclose(a[key][field], b[key][field], rtol=1e-5, atol=1e-5, err_msg=field)
      else:
        assert list(np.atleast_1d(a[key][field])) == list(np.atleast_1d(b[key][field])), field


@pytest.fixture(scope='session')
def voxceleb_tree(tmp_path_factory, fixtures_dir, make_speech):
  root = tmp_path_factory.mktemp('vox') / 'mp4'
  expected = dataset_helpers.voxceleb_tree(root, fixtures_dir, make_speech('one two three four five'), SECONDS)
  return root, expected


@pytest.fixture(scope='session')
def voxceleb_build(tmp_path_factory, voxceleb_tree):
  from headgan_jax.data import build
  root, expected = voxceleb_tree
  config = dataset_config(tmp_path_factory.mktemp('voxdata'))
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    builder = build.build('headgan_voxceleb', config, manual_dir=str(root))
  return config, builder, out.getvalue(), expected


def test_demo_counts_and_held_out_protocol(demo_build):
  config, builder, printed = demo_build
  train, test = read_split(builder, 'train'), read_split(builder, 'test')
  counts = builder.info.metadata['counts']
  # The counts per split are printed, and they are what the records hold.
  for split, records in (('train', train), ('test', test)):
    c = counts[split]
    assert f'split {split}: clips {c["clips"]}, records {c["records"]}, frames {c["frames"]}' in printed
    assert c['records'] == len(records)
    assert c['frames'] == sum(len(r['frames']) for r in records.values())
    assert c['identities'] == len({r['identity'] for r in records.values()})
  # One identity held out entirely; the training identities' last 20% of frames are test frames.
  train_ids = {r['identity'].decode() for r in train.values()}
  assert train_ids == {'driving'}
  assert 'talk-05' not in train_ids
  assert {r['identity'].decode() for r in test.values()} == {'driving', 'talk-05'}
  rows = {r['clip']: r for r in map(json.loads, (pathlib.Path(builder.data_dir) / 'report.jsonl').open())}
  assert all(r['status'] == 'ok' for r in rows.values()), rows
  for clip, row in rows.items():
    n = row['frames']
    spans = sorted((int(r['start']), int(r['start']) + len(r['frames']), split)
                   for split, recs in (('train', train), ('test', test)) for r in recs.values()
                   if r['clip'].decode() == clip)
    cut = 0 if clip == 'talk-05' else round(n * 0.8)
    train_spans = [(a, b) for a, b, s in spans if s == 'train']
    # 4-frame sequences from frame 0; the shorter tail of the train part is dropped (the authors').
    assert train_spans == [(a, a + 4) for a in range(0, cut - cut % 4, 4)], (clip, spans)
    assert [(a, b) for a, b, s in spans if s == 'test'] == [(cut, n)]  # Test clips are whole, for evaluation.
  assert counts['train']['frames'] == sum(round(r['frames'] * 0.8) // 4 * 4 for c, r in rows.items()
                                          if c != 'talk-05')


def test_cut_drops_or_keeps_short_tails():
  assert clips_lib.cut(11, 4, 3, keep_short_tails=False) == [(0, 4), (4, 8)]  # The authors': the tail is dropped.
  assert clips_lib.cut(11, 4, 3, keep_short_tails=True) == [(0, 4), (4, 8), (8, 11)]
  assert clips_lib.cut(10, 4, 3, keep_short_tails=True) == [(0, 4), (4, 10)]  # Shorter than min_length: joins.
  assert clips_lib.cut(3, 4, 3, keep_short_tails=False) == []
  assert clips_lib.cut(8, 4, 3, keep_short_tails=False) == [(0, 4), (4, 8)]


def test_reference_set_spans_the_poses_sorted():
  """8 frames evenly spaced along the first principal component of the standardised camera parameters, sorted by
  it, only tracked frames, the same order whatever the SVD's sign."""
  rng = np.random.default_rng(0)
  n = 40
  yaw = np.linspace(-1, 1, n)[rng.permutation(n)]  # A head turning: one pose carries the variation.
  rotation = np.tile(np.float32([1, 0, 0, 0, 1, 0]), (n, 1))
  rotation[:, 0], rotation[:, 2] = np.cos(yaw), np.sin(yaw)
  translation = np.stack([30 + 5 * yaw, np.full(n, 32.0)], 1)  # The face centre moves with the turn.
  scale = np.full(n, 20.0)
  valid = np.ones(n, bool)
  valid[np.argmax(yaw)] = False  # The most extreme pose is untracked: never a reference.
  refs = clips_lib.reference_set(rotation, translation, scale, valid, 8)
  assert refs.shape == (8,) and valid[refs].all() and len(set(refs.tolist())) == 8
  picked = yaw[refs]
  assert np.all(np.diff(picked) > 0) or np.all(np.diff(picked) < 0)  # Sorted by pose.
  tracked = np.sort(yaw[valid])
  assert {picked.min(), picked.max()} == {tracked[0], tracked[-1]}  # From one end of the poses to the other.
  np.testing.assert_allclose(np.sort(picked), tracked[np.linspace(0, len(tracked) - 1, 8).round().astype(int)])
  flipped = clips_lib.reference_set(rotation * [1, 1, -1, 1, 1, 1], translation * [-1, 1], scale, valid, 8)
  assert flipped.tolist() in (refs.tolist(), refs[::-1].tolist())
  assert clips_lib.middle_reference(refs) == 4
  few = clips_lib.reference_set(rotation[:3], translation[:3], scale[:3], np.ones(3, bool), 8)
  assert few.shape == (8,) and set(few.tolist()) == {0, 1, 2}
  with pytest.raises(errors.DatasetError):
    clips_lib.reference_set(rotation, translation, scale, np.zeros(n, bool), 8)


def test_demo_records_carry_their_videos_reference_set(demo_build):
  """Every record of a clip stores the same 8 references, their frames and fits exactly the clip's: taken from the
  clip's train records when it has any (a training identity's held-out frames too), else from its own (talk-05)."""
  config, builder, _ = demo_build
  train, test = read_split(builder, 'train'), read_split(builder, 'test')
  frames = {}  # (clip, frame number) -> (JPEG bytes, record, index), from every record.
  by_clip: dict[bytes, list] = {}
  for split, recs in (('train', train), ('test', test)):
    for r in recs.values():
      by_clip.setdefault(r['clip'], []).append((split, r))
      for i, b in enumerate(r['frames']):
        frames[(r['clip'], int(r['start']) + i)] = (b, r, i)
  for clip, rs in by_clip.items():
    source = [r for split, r in rs if split == 'train'] or [r for _, r in rs]
    lo = min(int(r['start']) for r in source)
    hi = max(int(r['start']) + len(r['frames']) for r in source)
    assert (clip == b'talk-05') == (not any(split == 'train' for split, _ in rs))
    for _, r in rs:
      np.testing.assert_array_equal(r['ref_index'], rs[0][1]['ref_index'])
      assert r['ref_index'].shape == (8,) and np.all((lo <= r['ref_index']) & (r['ref_index'] < hi))
      for j, f in enumerate(r['ref_index']):
        data, rec, i = frames[(clip, int(f))]
        assert r['ref_frames'][j] == data and bool(rec['valid'][i])
        for name in ('p_exp', 'rotation', 'landmarks', 'frame_p_id', 'frame_p_exp', 'frame_scale'):
          np.testing.assert_array_equal(r[f'ref_{name}'][j], rec[name][i])
  assert builder.info.metadata['build']['num_references'] == 8


def test_demo_records_and_files(demo_build):
  from headgan_jax.data import pipeline
  from headgan_jax.face3d import morphable
  config, builder, _ = demo_build
  out = pathlib.Path(builder.data_dir)
  model = morphable.load(out / 'face_model.npz')
  record = next(iter(read_split(builder, 'train').values()))
  dec = pipeline.decode_record(record)
  t = len(dec['frames'])
  assert dec['frames'].shape == (t, 64, 64, 3) and dec['frames'].dtype == np.uint8
  assert dec['masks'].shape == (t, 64, 64) and 0 <= dec['masks'].min() and dec['masks'].max() <= 1
  assert dec['masks'].mean() > 0.2  # A person fills a good part of a talking-head crop.
  assert dec['landmarks'].shape == (t, 468, 2) and dec['p_exp'].shape == (t, model.num_exp)
  assert dec['frame_p_id'].shape == (t, model.num_id) and dec['frame_p_exp'].shape == (t, model.num_exp)
  assert dec['p_id'].shape == (model.num_id,) and dec['rotation'].shape == (t, 6)
  assert dec['audio'].shape == (t, 300)
  # Raw features: the 216 character values are one-hot per part (not normalised).
  chars = dec['audio'][:, 84:].reshape(t, 8, 27)
  np.testing.assert_array_equal(chars.sum(-1), 1.0)
  # The landmarks lie on the face: inside the crop, near the 3DMM's projection (small fit error).
  assert 0 < dec['landmarks'].min() and dec['landmarks'].max() < 64
  assert np.median(dec['fit_rms']) < 2.0
  # Statistics of the train split's raw audio are stored beside the records.
  stats = builder.info.metadata['audio_stats']
  assert stats['count'] == builder.info.metadata['counts']['train']['frames']
  assert len(stats['mean']) == 300 and np.all(np.asarray(stats['std']) >= 0)
  assert (out / 'summary.txt').read_text().startswith('clips: 2 (ok 2)')


def test_demo_rebuild_uses_cache(demo_build):
  """A second build of the same clips (new data dir, same cache) redoes no clip and gives the same records."""
  from headgan_jax.data import build
  config, builder, _ = demo_build
  c = config.copy_and_resolve_references()
  c.data.cache_dir = str(pathlib.Path(builder._data_dir_root) / 'headgan_cache')
  c.data.data_dir = str(pathlib.Path(builder._data_dir_root).parent / 'tfds-again')
  with contextlib.redirect_stdout(io.StringIO()):
    again = build.build('headgan_demo', c)
  rows = [json.loads(line) for line in (pathlib.Path(again.data_dir) / 'report.jsonl').open()]
  assert all(r['cached'] for r in rows)
  a, b = read_split(builder, 'train'), read_split(again, 'train')
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key]['p_exp'], b[key]['p_exp'])
    assert list(a[key]['frames']) == list(b[key]['frames'])


def test_voxceleb_beam_tiny_tree(voxceleb_build):
  config, builder, printed, expected = voxceleb_build
  rows = {r['clip']: r for r in map(json.loads, (pathlib.Path(builder.data_dir) / 'report.jsonl').open())}
  assert {c: r['status'] for c, r in rows.items()} == expected
  assert 'not a readable video file' in rows['id10001/vidA/00002']['reason']
  assert 'No face found' in rows['id10002/vidB/00001']['reason']
  assert 'no audio stream' in rows['id10002/vidB/00002']['reason']
  assert rows['id10002/vidB/00001']['frames'] == 12  # Failed clips still count their frames as dropped.
  train = read_split(builder, 'train')
  assert {r['clip'].decode() for r in train.values()} == {'id10001/vidA/00001'}
  assert sum(len(r['frames']) for r in train.values()) == rows['id10001/vidA/00001']['kept']
  assert builder.info.metadata['audio_stats']['count'] == sum(len(r['frames']) for r in train.values())
  assert 'clips: 4 (corrupt 1, no_audio 1, no_face 1, ok 1)' in printed
  assert (pathlib.Path(builder.data_dir) / 'face_model.npz').exists()


def test_voxceleb_official_splits(tmp_path):
  """VoxCeleb2's dev/test folders and VoxCeleb1's test identities (id10270-id10309); never one identity in both."""
  for rel in ('dev/mp4/id00012/v1/00001.mp4', 'dev/mp4/id00015/v2/00001.mp4', 'test/mp4/id00017/v3/00001.mp4'):
    (tmp_path / 'vox2' / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / 'vox2' / rel).write_bytes(b'x')
  got = building.list_voxceleb_clips(tmp_path / 'vox2')
  assert {(s, c.identity) for s, c in got} == {('train', 'id00012'), ('train', 'id00015'), ('test', 'id00017')}
  for rel in ('id10001/a/00001.mp4', 'id10270/b/00001.mp4', 'id10309/c/00002.mp4', 'id10310/d/00001.mp4'):
    (tmp_path / 'vox1' / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / 'vox1' / rel).write_bytes(b'x')
  got = building.list_voxceleb_clips(tmp_path / 'vox1')
  assert {c.clip_id: s for s, c in got} == {'id10001/a/00001': 'train', 'id10270/b/00001': 'test',
                                           'id10309/c/00002': 'test', 'id10310/d/00001': 'train'}
  (tmp_path / 'vox2' / 'test' / 'mp4' / 'id00012' / 'v9').mkdir(parents=True)
  (tmp_path / 'vox2' / 'test' / 'mp4' / 'id00012' / 'v9' / '00001.mp4').write_bytes(b'x')
  with pytest.raises(errors.DatasetError, match='in both dev and test'):
    building.list_voxceleb_clips(tmp_path / 'vox2')
  with pytest.raises(errors.DatasetError, match='does not exist'):
    building.list_voxceleb_clips(tmp_path / 'nothing')


def test_missing_dataset_names_the_build_command(tmp_path):
  from configs import tiny
  from headgan_jax.data import pipeline
  c = tiny.get_config()
  c.data.data_dir = str(tmp_path)
  with pytest.raises(errors.DatasetError, match='python -m headgan_jax.data.build demo --image_size 64'):
    pipeline.open_dataset(c, 'headgan_demo')


@pytest.mark.slow
def test_voxceleb_killed_and_restarted_gives_the_same_dataset(voxceleb_build, voxceleb_tree, tmp_path):
  """A Beam build killed (SIGKILL) once its first clip is cached, then started again, redoes no cached clip and
  writes the same records as the uninterrupted build."""
  config, builder, _, _ = voxceleb_build
  root, _ = voxceleb_tree
  data_dir, cache_dir = tmp_path / 'tfds', tmp_path / 'cache'
  cmd = [sys.executable, '-m', 'headgan_jax.data.build', 'voxceleb',
         '--config', str(REPO / 'tests' / 'dataset_config.py'), '--manual_dir', str(root),
         '--data_dir', str(data_dir), '--cache_dir', str(cache_dir)]
  env = dict(os.environ, PYTHONPATH=str(REPO))
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 400
  cached = []
  while time.monotonic() < deadline and proc.poll() is None:
    cached = list(cache_dir.rglob('*.npz'))
    if any(p.name != 'face_model.npz' for p in cached):
      break
    time.sleep(0.2)
  assert proc.poll() is None, 'the build finished before a clip was cached: nothing to kill'
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  before = {p.name: p.stat().st_mtime_ns for p in cache_dir.rglob('*.npz') if p.name != 'face_model.npz'}
  assert 1 <= len(before) < 4
  assert not (data_dir / 'headgan_voxceleb' / '64px' / building.DATASET_VERSION).exists()
  from headgan_jax.data import build  # Started again in this process (its models are loaded already).
  c = config.copy_and_resolve_references()
  c.data.data_dir, c.data.cache_dir = str(data_dir), str(cache_dir)
  with contextlib.redirect_stdout(io.StringIO()):
    build.build('headgan_voxceleb', c, manual_dir=str(root))
  out = data_dir / 'headgan_voxceleb' / '64px' / building.DATASET_VERSION
  rows = {r['clip']: r for r in map(json.loads, (out / 'report.jsonl').open())}
  assert sum(r['cached'] for r in rows.values()) == len(before)  # Cached clips were not done again ...
  assert {p.name: p.stat().st_mtime_ns for p in cache_dir.rglob('*.npz') if p.name in before} == before
  import tensorflow_datasets as tfds
  again = tfds.builder_from_directory(str(out))
  assert_same_records(read_split(builder, 'train'), read_split(again, 'train'))  # ... and the dataset is the same.


def test_voxceleb_multi_process_build_equals_the_one_process_build(voxceleb_build, voxceleb_tree, tmp_path):
  """Beam's multi-process mode (DirectRunner, 2 worker processes: the clips are shuffled onto separate processes,
  as on a cluster's workers) writes the same dataset as the one-process build: records, report, counts, audio
  statistics and the learned face model."""
  config, builder, _, _ = voxceleb_build
  root, _ = voxceleb_tree
  from headgan_jax.data import build
  c = config.copy_and_resolve_references()
  c.data.data_dir = str(tmp_path / 'tfds')
  with contextlib.redirect_stdout(io.StringIO()):
    multi = build.build('headgan_voxceleb', c, manual_dir=str(root), direct_num_workers=2)
  one_dir, multi_dir = pathlib.Path(builder.data_dir), pathlib.Path(multi.data_dir)
  assert multi_dir != one_dir
  timing = {'cached', 'seconds', 'stage_seconds'}  # How long and whether from cache: not what was written.
  rows = [{r['clip']: {k: v for k, v in r.items() if k not in timing} for r in map(json.loads, (d / 'report.jsonl').open())}
          for d in (one_dir, multi_dir)]
  assert rows[0] == rows[1]
  assert multi.info.metadata['counts'] == builder.info.metadata['counts']
  for key, value in builder.info.metadata['audio_stats'].items():
    np.testing.assert_allclose(multi.info.metadata['audio_stats'][key], value, rtol=1e-5, atol=1e-6, err_msg=key)
  assert (multi_dir / 'face_model.npz').read_bytes() == (one_dir / 'face_model.npz').read_bytes()
  for split in builder.info.splits:
    assert_same_records(read_split(builder, split), read_split(multi, split))

def test_transcript_depends_on_the_clip_only(fixtures_dir):
  """The speech recogniser's state does not carry from clip to clip (a resumed build meets clips in another order)."""
  from headgan_jax.audio import asr, io as audio_io
  a = audio_io.load_audio(str(fixtures_dir / 'driving.mp4'), 16000)[:16000]  # (Shorter cuts do not show it.)
  b = audio_io.load_audio(str(fixtures_dir / 'demo' / 'talk-03.mp4'), 16000)[:32000]
  backend = asr.PocketSphinxBackend()
  first = backend.transcribe(a, 16000)
  backend.transcribe(b, 16000)
  assert backend.transcribe(a, 16000) == first == asr.PocketSphinxBackend().transcribe(a, 16000)


# --- The input pipeline on the demo build ------------------------------------------------------------------------

def pipeline_config(demo_build, **overrides):
  from configs import tiny
  config, _, _ = demo_build
  c = tiny.get_config()  # 64 x 64, k = 2.
  c.data.data_dir = config.data.data_dir
  c.data.source = 'headgan_demo'
  c.train.batch_size = 2
  for k, v in overrides.items():
    section, field = k.split('.') if '.' in k else (None, k)
    (c[section] if section else c)[field] = v
  return c


def two_device_mesh():
  import jax
  from headgan_jax import sharding as sharding_lib
  return sharding_lib.make_mesh(jax.devices()[:2])


def leaves(fields) -> list[np.ndarray]:
  return [np.asarray(fields[k]) for k in sorted(fields)]


def test_pipeline_batches_have_the_batch_shapes(demo_build):
  from headgan_jax import sharding as sharding_lib
  from headgan_jax.data import pipeline
  from headgan_jax.data import batch as batch_lib
  c = pipeline_config(demo_build)
  mesh = two_device_mesh()
  it = pipeline.TrainIterator(c, mesh)
  fields = it.next_fields()
  batch = pipeline.to_batch(fields)
  batch_lib.check_batch(batch, c)  # Every Batch field with the shape and dtype the train step expects.
  assert batch.y.sharding.is_equivalent_to(sharding_lib.batch_sharding(mesh), batch.y.ndim)
  fg = np.asarray(fields['foreground'])
  assert fg.shape == (2, 64, 64, 1) and fg.dtype == np.float32 and set(np.unique(fg)) <= {0.0, 1.0}
  assert 0.2 < fg.mean() < 0.95
  for name in ('y', 'y_ref'):
    v = np.asarray(fields[name])
    assert -1 <= v.min() and v.max() <= 1 and v.std() > 0.1
  for x in (np.asarray(batch.x_t), np.asarray(fields['x_ref'])):
    face = x.sum(-1) > c.loss.face_mask_threshold
    assert 0.05 < face.mean() < 0.8 and x.max() <= 1  # A face drawn, where the person is.
    assert (fg[..., 0][face] > 0).mean() > 0.9
  # Audio normalised with the dataset statistics: the low-level part is O(1), not raw (e.g. 2.9 for entropy).
  assert np.abs(np.asarray(batch.audio)[:, :84]).max() < 20


def test_pipeline_example_is_the_record_frame(demo_build):
  """A training example: target t with its k past frames inside the record, the reference one of the video's
  stored 8 (any sequence), x_t rendered on the device from the frame's OWN fit (face3d.train_identity
  'per_frame'); 'per_clip' renders the clip's shared fit."""
  from headgan_jax.audio import stats as stats_lib
  from headgan_jax.data import pipeline
  from headgan_jax.tracking import track
  from headgan_jax.data import batch as batch_lib
  from headgan_jax.face3d import camera as cam_lib
  c = pipeline_config(demo_build)
  ds = pipeline.open_dataset(c)
  src = ds.split('train')
  hd = pipeline.host_dataset(src, c, 0, 1, None, ds.audio_stats)
  ex, other = hd[3], hd[4]
  record = src[int(ex['record_index'])]
  t, ref = int(ex['t']), int(ex['ref'])
  k = c.model.num_past_frames
  assert record['valid'][t] and record['valid'][t - 1] and t >= k + 1  # Past frames never padded in training.
  assert ref in record['ref_index'].tolist()  # One of the video's 8 references (a clip frame number).
  j = record['ref_index'].tolist().index(ref)
  np.testing.assert_array_equal(ex['y'], pipeline.decode_record(record)['frames'][t])
  np.testing.assert_array_equal(ex['y_ref'], clips_lib.decode_image(record['ref_frames'][j]))
  np.testing.assert_array_equal(ex['p_id'][-1], record['ref_frame_p_id'][j])
  np.testing.assert_allclose(ex['audio'], stats_lib.normalise(record['audio'][t], ds.audio_stats), rtol=1e-6)
  fields = pipeline.Assembler(c, two_device_mesh(), ds, 2)({k: np.stack([ex[k], other[k]]) for k in
                                                           pipeline.HOST_FIELDS})

  def render(prefix: str, p_id):
    cam = cam_lib.Camera(record[f'{prefix}rotation'][[t]], record[f'{prefix}translation'][[t]],
                         record[f'{prefix}scale'][[t]])
    return track.render_x(ds.model, p_id, record[f'{prefix}p_exp'][[t]], cam, 64, bucket=1)[0]

  x_t = np.asarray(fields['x_drive'])[0, ..., -3:]
  np.testing.assert_allclose(x_t, render('frame_', record['frame_p_id'][[t]]), atol=1e-5)  # eq. 1 on the device
  shared = render('', record['p_id'])
  assert np.abs(x_t - shared).max() > 1e-3  # Each frame's own identity is not the clip's.
  per_clip = pipeline.host_dataset(src, pipeline_config(demo_build, **{'face3d.train_identity': 'per_clip'}), 0, 1,
                                   None, ds.audio_stats)[3]
  assert int(per_clip['t']) == t
  fields = pipeline.Assembler(c, two_device_mesh(), ds, 2)({k: np.stack([per_clip[k], other[k]]) for k in
                                                           pipeline.HOST_FIELDS})
  np.testing.assert_allclose(np.asarray(fields['x_drive'])[0, ..., -3:], shared, atol=1e-5)
  # D_m's box where the tracker put it (its side follows config.disc.mouth_size: compare the centres).
  side, stored_side = batch_lib.mouth_box_size(c), batch_lib.mouth_box_size(dataset_config_module.get_config())
  centre = np.asarray(fields['mouth'])[0] + side / 2
  assert np.abs(centre - (record['mouth'][t] + stored_side / 2)).max() <= 1


def test_pipeline_references_come_from_every_sequence_of_the_video(demo_build):
  """data.reference 'pose_set': over many examples, the references of one video's records lie in several of its
  sequences (not only the example's own) and are always among the stored 8; 'sequence': always the own record."""
  from headgan_jax.data import pipeline
  c = pipeline_config(demo_build)
  ds = pipeline.open_dataset(c)
  src = ds.split('train')
  hd = pipeline.host_dataset(src, c, 0, 1, None, ds.audio_stats)
  own, other = 0, 0
  for i in range(10 * len(src)):
    ex = hd[i]
    record = src[int(ex['record_index'])]
    ref = int(ex['ref'])
    assert ref in record['ref_index'].tolist()
    inside = int(record['start']) <= ref < int(record['start']) + len(record['frames'])
    own, other = own + inside, other + (not inside)
  assert other > own > 0  # The video has several sequences: most references lie in another one.
  seq = pipeline.host_dataset(src, pipeline_config(demo_build, **{'data.reference': 'sequence'}), 0, 1, None,
                              ds.audio_stats)
  for i in range(len(src)):
    ex = seq[i]
    record = src[int(ex['record_index'])]
    assert int(record['start']) <= int(ex['ref']) < int(record['start']) + len(record['frames'])
  with pytest.raises(errors.ConfigError, match='config.data.reference'):
    pipeline.host_dataset(src, pipeline_config(demo_build, **{'data.reference': 'any'}), 0, 1, None, ds.audio_stats)


def test_pipeline_pads_past_frames_only_when_asked(demo_build):
  """data.pad_past_frames False (the authors'): targets t >= k + 1 only; True: any t with t-1 tracked."""
  from headgan_jax.data import pipeline
  valid = np.ones(6, bool)
  np.testing.assert_array_equal(pipeline.target_frames(valid, 2, False), [3, 4, 5])
  np.testing.assert_array_equal(pipeline.target_frames(valid, 2, True), [1, 2, 3, 4, 5])
  c = pipeline_config(demo_build, **{'data.pad_past_frames': True})
  ds = pipeline.open_dataset(c)
  hd = pipeline.host_dataset(ds.split('train'), c, 0, 1, None, ds.audio_stats)
  assert min(int(hd[i]['t']) for i in range(40)) < c.model.num_past_frames + 1


def test_landmarks_conditioning_draws_the_stored_landmarks(demo_build):
  """data.conditioning 'landmarks' (Table 1): x_{t-k:t} and x_ref are the drawn 2-D landmarks the dataset stores
  (driving frames and reference), not the 3D face; the rest of the batch is the same."""
  from headgan_jax.data import pipeline
  from headgan_jax.face3d import landmarks_image
  c = pipeline_config(demo_build)
  lm = pipeline_config(demo_build, **{'data.conditioning': 'landmarks'})
  ds = pipeline.open_dataset(c)
  src = ds.split('train')
  hd = pipeline.host_dataset(src, c, 0, 1, None, ds.audio_stats)
  host = {k: np.stack([hd[3][k], hd[4][k]]) for k in pipeline.HOST_FIELDS}
  face = pipeline.Assembler(c, two_device_mesh(), ds, 2)(host)
  drawn = pipeline.Assembler(lm, two_device_mesh(), ds, 2)(host)
  record = src[int(hd[3]['record_index'])]
  t = int(hd[3]['t'])
  j = record['ref_index'].tolist().index(int(hd[3]['ref']))
  want = np.asarray(landmarks_image.draw_landmarks(record['landmarks'][t - 2:t + 1], 64, 64))  # frames t-2 .. t
  got = np.asarray(drawn['x_drive'])[0].reshape(64, 64, 3, 3).transpose(2, 0, 1, 3)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(np.asarray(drawn['x_ref'])[0],
                                np.asarray(landmarks_image.draw_landmarks(record['ref_landmarks'][j], 64, 64)))
  assert np.abs(np.asarray(drawn['x_drive']) - np.asarray(face['x_drive'])).mean() > 0.05
  for name in ('y', 'y_ref', 'audio', 'mouth', 'foreground'):
    np.testing.assert_array_equal(np.asarray(drawn[name]), np.asarray(face[name]))


def test_fast_source_records_equal_tfds_records(demo_build):
  """records.FastSource (float lists read as bytes) decodes every record of every split of the demo build exactly
  as TFDS's data source does: same fields, dtypes, shapes and values; also after pickling (grain's workers)."""
  import pickle
  from headgan_jax.data import pipeline, records
  ds = pipeline.open_dataset(pipeline_config(demo_build))
  assert ds.sources and all(isinstance(s, records.FastSource) for s in ds.sources.values())

  def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
      if isinstance(a[key], dict):
        assert_same(a[key], b[key])
      elif isinstance(a[key], np.ndarray):
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
      else:
        assert type(a[key]) is type(b[key]) and a[key] == b[key], key

  for fast in ds.sources.values():
    for i in range(len(fast)):
      assert_same(fast[i], fast.source[i])
  fast = pickle.loads(pickle.dumps(ds.sources['train']))
  assert_same(fast[0], ds.sources['train'].source[0])
  lists = {'packed': np.float32([1.5, -2.25, 3e-8]), 'empty': np.zeros(0, np.float32)}
  from tensorflow_datasets.proto import tf_example_pb2
  example = tf_example_pb2.Example()
  for name, values in lists.items():
    example.features.feature[name].float_list.value.extend(values.tolist())
    np.testing.assert_array_equal(records.packed_floats(example.features.feature[name].float_list), values)


@pytest.fixture(scope='module')
def reference_batches(demo_build):
  """The first 4 batches of the in-process pipeline (tiny config, seed 0), as numpy leaves."""
  from headgan_jax.data import pipeline
  it = pipeline.TrainIterator(pipeline_config(demo_build), two_device_mesh())
  return [leaves(it.next_fields()) for _ in range(4)]


def assert_batches(it, want) -> None:
  """The next batches of `it` are `want` (lists of leaves), bit for bit."""
  for batch in want:
    for a, b in zip(batch, leaves(it.next_fields())):
      np.testing.assert_array_equal(a, b)


def test_pipeline_same_seed_same_batches_and_exact_resume(demo_build, reference_batches):
  import json as json_lib
  from headgan_jax.data import pipeline
  c = pipeline_config(demo_build)
  mesh = two_device_mesh()
  reference = reference_batches
  second = pipeline.TrainIterator(c, mesh)
  assert_batches(second, reference[:2])
  state = json_lib.loads(json_lib.dumps(second.get_state()))  # JSON, saved with a checkpoint.
  resumed = pipeline.TrainIterator(c, mesh)
  resumed.set_state(state)
  assert_batches(resumed, reference[2:])
  other = pipeline.TrainIterator(pipeline_config(demo_build, seed=1), mesh)
  assert not all(np.array_equal(a, b) for a, b in zip(reference[0], leaves(other.next_fields())))
  with pytest.raises(errors.DatasetError, match='next_index'):
    resumed.set_state({'step': 3})


def test_pipeline_worker_processes_same_batches_and_exact_resume(demo_build, reference_batches):
  """data.num_workers = 2 (grain worker processes) hands out the in-process pipeline's batches, bit for bit; its
  state (JSON, after K batches, with batches assembled ahead) resumes a fresh 2-worker iterator exactly at batch K,
  and the in-process pipeline too (the state does not depend on the number of workers)."""
  import json as json_lib
  from headgan_jax.data import pipeline
  k = 2
  mesh = two_device_mesh()
  workers = pipeline_config(demo_build, **{'data.num_workers': 2})
  first = pipeline.TrainIterator(workers, mesh)
  assert_batches(first, reference_batches[:k])
  state = json_lib.loads(json_lib.dumps(first.get_state()))  # JSON, saved with a checkpoint.
  assert state == {'next_index': k}  # Batches assembled ahead (data.prefetch) are not counted.
  assert_batches(first, reference_batches[k:])
  first.close()
  resumed = pipeline.TrainIterator(workers, mesh)
  resumed.set_state(state)
  assert_batches(resumed, reference_batches[k:])
  resumed.close()
  in_process = pipeline.TrainIterator(pipeline_config(demo_build), mesh)
  in_process.set_state(state)
  assert_batches(in_process, reference_batches[k:k + 1])


def test_pipeline_hosts_get_disjoint_shards_covering_the_split(demo_build):
  from headgan_jax.data import pipeline
  c = pipeline_config(demo_build)
  ds = pipeline.open_dataset(c)
  src = ds.split('train')
  n = len(src)
  seen = []
  for host in range(2):
    hd = pipeline.host_dataset(src, c, host, 2, None, ds.audio_stats)
    per_epoch = len(range(host, n, 2))
    epoch = [int(hd[i]['record_index']) for i in range(per_epoch)]
    assert sorted(epoch) == list(range(host, n, 2))  # Each record once per epoch, reshuffled the next epoch.
    assert sorted(int(hd[i]['record_index']) for i in range(per_epoch, 2 * per_epoch)) == sorted(epoch)
    seen.append(set(epoch))
  assert n >= 4 and not seen[0] & seen[1] and seen[0] | seen[1] == set(range(n))


def test_pipeline_downsamples_a_larger_build(demo_build):
  from headgan_jax.data import pipeline
  from headgan_jax.data import batch as batch_lib
  c = pipeline_config(demo_build, image_size=32, **{'data.stored_size': 64, 'disc.mouth_size': 16})
  fields = pipeline.TrainIterator(c, two_device_mesh()).next_fields()
  batch_lib.check_batch(pipeline.to_batch(fields), c)
  box = batch_lib.mouth_box_size(c)
  assert np.asarray(fields['foreground']).shape == (2, 32, 32, 1)
  assert 0 <= np.asarray(fields['mouth']).min() and np.asarray(fields['mouth']).max() <= 32 - box


def test_eval_batches_are_fixed_and_use_the_middle_reference(demo_build):
  """Held-out batches: the same every time; the reference of the self-reenactment protocol is the middle one of
  the held-out video's pose-sorted reference set (the authors' test reference), with the clip's shared fit."""
  import ml_collections
  from headgan_jax.data import pipeline
  c = pipeline_config(demo_build)
  mesh = two_device_mesh()
  spec = ml_collections.ConfigDict(dict(num_batches=2, identities='unseen'))
  ev = pipeline.EvalBatches(c, mesh, 'test', spec)
  assert len(ev) == 2 and ev.reference == 'middle' == c.data.test_reference
  src = ev.dataset.split('test')
  assert {src[i]['identity'] for i, _ in ev.items} == {b'talk-05'}  # never trained on
  for i in {i for i, _ in ev.items}:
    record, ref = src[i], ev.references[i]
    middle = int(record['ref_index'][4]) - int(record['start'])
    assert ref['frame'] == record['frames'][middle] and bool(record['valid'][middle])
    np.testing.assert_array_equal(ref['p_exp'], record['p_exp'][middle])
    np.testing.assert_array_equal(ref['p_id'], record['p_id'])
  a = [leaves(f) for f in ev.iter_fields()]
  b = [leaves(f) for f in ev.iter_fields()]
  for x, y in zip(a, b):
    for u, v in zip(x, y):
      np.testing.assert_array_equal(u, v)
  seen = pipeline.EvalBatches(c, mesh, 'test', ml_collections.ConfigDict(dict(num_batches=0, identities='seen')))
  assert {src[i]['identity'] for i, _ in seen.items} == {b'driving'}
  first = pipeline.EvalBatches(pipeline_config(demo_build, **{'data.test_reference': 'first'}), mesh, 'test', spec)
  for i in {i for i, _ in first.items}:
    assert first.references[i]['frame'] == src[i]['frames'][int(np.flatnonzero(src[i]['valid'])[0])]


def test_eval_batches_clip_start_reference_padding_and_train_size(demo_build):
  """reference='clip_start': every held-out frame of the training identity is driven from its clip's first frame
  (in the train split); pad=True fills the last batch by repeating the last frame and counts the real ones."""
  import ml_collections
  from headgan_jax.data import pipeline, sources
  c = pipeline_config(demo_build, **{'train.batch_size': 4, 'train.steps_per_epoch': 0})
  mesh = two_device_mesh()
  plain = pipeline.EvalBatches(c, mesh, 'test', ml_collections.ConfigDict(dict(num_batches=0, identities='seen',
                                                                                pad=True)))
  ev = pipeline.EvalBatches(c, mesh, 'test', ml_collections.ConfigDict(dict(num_batches=0, identities='seen',
                                                                             pad=True, reference='clip_start')))
  assert ev.num_frames == plain.num_frames == 3 and len(ev.items) == 4 and ev.items[3] == ev.items[2]
  train = ev.dataset.split('train')
  first = min((train[i] for i in range(len(train))), key=lambda r: int(r['start']))
  assert first['clip'] == b'driving' and int(first['start']) == 0
  assert all(ev.references[i]['frame'] == first['frames'][0] for i, _ in ev.items)
  fields = next(ev.iter_fields())
  want = (clips_lib.decode_image(first['frames'][0]).astype(np.float32) - 127.5) / 127.5
  np.testing.assert_allclose(np.asarray(fields['y_ref'])[0], want, atol=1e-6)  # The clip's first frame.
  other = np.asarray(next(plain.iter_fields())['y_ref'])[0]  # The held-out video's middle reference differs.
  assert np.abs(other - want).mean() > 1e-3
  with pytest.raises(errors.ConfigError, match="reference = 'last'"):
    pipeline.EvalBatches(c, mesh, 'test', ml_collections.ConfigDict(dict(identities='seen', pad=True, reference='last')))
  counts = ev.dataset.metadata['counts']['train']
  assert sources.train_size(c) == counts['usable_frames'] > 0  # The epoch of the schedule (steps_per_epoch 0).
