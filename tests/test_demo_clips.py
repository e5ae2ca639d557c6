"""The demo set's clips and split (building.DEMO_HELD_OUT, DEMO_MAX_FRAMES) and the tracker's learned default 3DMM
(headgan_jax/tracking/learned_face_model.npz, scripts/learn_face_model.py)."""
import hashlib
import importlib.util
import json
import os
import pathlib

import numpy as np
import pytest

from configs import paper
from headgan_jax import errors
from headgan_jax.data import building, clips as clips_lib
from headgan_jax.tracking import face_model
from headgan_jax.tracking import facemesh as fm
from headgan_jax.face3d import morphable

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load_script(name: str):
  """scripts/<name>.py as a module (scripts/ is not a package: its files run as commands)."""
  spec = importlib.util.spec_from_file_location(name, REPO / 'scripts' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


learn_face_model = _load_script('learn_face_model')

needs_models = pytest.mark.skipif(bool(fm._missing_files(fm.default_models_dir())),
                                  reason='MediaPipe model files not fetched (scripts/setup.sh)')


def _fake_folder(root: pathlib.Path, names: dict[str, list[str]]) -> pathlib.Path:
  """Empty video files (listing reads names only): {'': [...], 'demo': [...], 'extra': [...]}."""
  for sub, files in names.items():
    (root / sub).mkdir(parents=True, exist_ok=True)
    for n in files:
      (root / sub / n).write_bytes(b'')
  return root


def _fixture_like(root: pathlib.Path) -> pathlib.Path:
  extra = [f'{n}.mp4' for n in building.DEMO_HELD_OUT if not n.startswith('talk-')] + ['a.mp4', 'b.mp4']
  return _fake_folder(root, {'': ['driving.mp4'], 'demo': [f'talk-0{i}.mp4' for i in range(1, 6)], 'extra': extra})


def test_held_out_identities_are_never_trained_on(tmp_path):
  """Every DEMO_HELD_OUT clip is split whole into 'test'; every other clip gives one 50-frame training sequence of
  its DEMO_MAX_FRAMES frames and holds out the rest; held-out clips give no train record."""
  items = building.demo_items(_fixture_like(tmp_path), 'talk-05', 0.2)
  ids = {c.identity for c, _ in items}
  assert len(ids) == 11 and set(building.DEMO_HELD_OUT) <= ids
  assert all(c.max_frames == building.DEMO_MAX_FRAMES == 63 for c, _ in items)
  for clip, parts_of in items:
    parts = building.demo_parts(clip.max_frames, parts_of.test_identity, parts_of.test_fraction)
    if clip.identity in building.DEMO_HELD_OUT:
      assert parts == [('test', 0, 63)], clip.identity
    else:
      assert parts == [('train', 0, 50), ('test', 50, 63)], clip.identity
  held = next(c for c, p in items if p.test_identity)
  result = clips_lib.ClipResult(held, 'ok', frames=[b''] * 63, masks=[b''] * 63, arrays=dict(
      valid=np.ones(63, bool), rotation=np.random.default_rng(0).normal(size=(63, 6)).astype(np.float32),
      translation=np.zeros((63, 2), np.float32), scale=np.ones(63, np.float32),
      **{k: np.zeros((63, 1), np.float32) for k in clips_lib.REFERENCE_ARRAYS
         if k not in ('rotation', 'translation', 'scale')}))
  recs = list(clips_lib.records_from_clip(result, [('test', 0, 63)], 50, 10))
  assert [split for split, _, _ in recs] == ['test']


def test_small_folders_and_bad_plans(tmp_path):
  """A folder of a few clips (the tests' demo_build: driving + talk-05) holds out the listed ones it has; a folder
  of held-out clips only, or a test identity it lacks, is refused in one message."""
  small = _fake_folder(tmp_path / 'small', {'': ['driving.mp4'], 'demo': ['talk-05.mp4']})
  items = building.demo_items(small, 'talk-05', 0.2)
  assert [(c.identity, p.test_identity) for c, p in items] == [('driving', False), ('talk-05', True)]
  only_held = _fake_folder(tmp_path / 'held', {'': ['may.mp4'], 'demo': ['talk-05.mp4']})
  with pytest.raises(errors.DatasetError, match='none is left to train on'):
    building.demo_items(only_held, 'talk-05', 0.2)
  with pytest.raises(errors.DatasetError, match="demo_test_identity = 'talk-09'"):
    building.demo_items(small, 'talk-09', 0.2)
  assert all(c.max_frames == 0 for c, _ in building.demo_items(small, 'talk-05', 0.2, max_frames=0))
  cut, whole = (clips_lib.Clip('p', 'x', 'x', 'x', m) for m in (63, 0))
  assert clips_lib.cache_name(cut) != clips_lib.cache_name(whole)  # A cut is cached apart from the whole clip.


def test_the_fixtures_demo_split(fixtures_dir):
  """On ../shared/fixtures: 39 clips, the four held-out people among them (one from each kind of footage), 35
  training identities, every clip cut to its first 63 frames."""
  if not (fixtures_dir / 'extra').is_dir():
    pytest.skip(f'{fixtures_dir}/extra not found')
  items = building.demo_items(fixtures_dir, paper.get_config().data.demo_test_identity, 0.2)
  held = sorted(c.identity for c, p in items if p.test_identity)
  assert held == sorted(building.DEMO_HELD_OUT) and len(items) == 39
  assert len({c.identity for c, p in items if not p.test_identity}) == 35


def test_read_clip_frames_stops_after_max_frames(fixtures_dir):
  from headgan_jax.tracking import video as video_lib
  frames, fps = clips_lib.read_clip_frames(str(fixtures_dir / 'driving.mp4'), 10)
  whole, fps_whole = video_lib.read_video(fixtures_dir / 'driving.mp4')
  assert frames.shape == (10,) + whole.shape[1:] and fps == fps_whole
  np.testing.assert_array_equal(frames, whole[:10])


def test_learned_model_file_is_what_the_script_records(fixtures_dir):
  """The committed .npz is the one its .json describes (sha256), small, learned from the script's selection: no
  held-out person, no non-commercial clip."""
  data = pathlib.Path(face_model.LEARNED_MODEL).read_bytes()
  info = json.loads(pathlib.Path(face_model.LEARNED_MODEL_INFO).read_text())
  assert hashlib.sha256(data).hexdigest() == info['sha256'], 'stale: run scripts/learn_face_model.py'
  assert len(data) < 2_000_000
  model = morphable.load(face_model.LEARNED_MODEL)
  assert model.num_landmarks == fm.NUM_POINTS and model.num_exp == info['num_exp'] == 40
  used = {os.path.splitext(c['file'])[0] for c in info['clips']}
  assert not used & set(building.DEMO_HELD_OUT)
  assert not [c for c in info['clips'] if 'non-commercial' in c['licence'].lower()]
  if (fixtures_dir / 'extra' / 'README.md').exists():
    chosen = {r['file'] for r in learn_face_model.learning_clips(str(fixtures_dir))}
    assert chosen == {c['file'] for c in info['clips']} | {c['file'] for c in info['skipped']}
  arrays = morphable.to_arrays(model)
  assert learn_face_model.npz_bytes(arrays) == learn_face_model.npz_bytes(dict(arrays))  # Byte-reproducible.


def test_track_defaults_to_the_learned_model():
  from headgan_jax.tracking import track
  config = paper.get_config()
  assert config.face3d.model == ''
  model, points = track.load_tracking_model(config, None)  # The learned default needs no detector.
  learned = morphable.to_arrays(morphable.load(face_model.LEARNED_MODEL))
  for name, value in morphable.to_arrays(model).items():
    np.testing.assert_array_equal(value, learned[name])
  np.testing.assert_array_equal(points, np.arange(fm.NUM_POINTS))
  assert face_model.model_fingerprint('').startswith('learned:')
  other = config.copy_and_resolve_references()
  other.face3d.model = 'data_free'
  assert clips_lib.settings_digest(other) != clips_lib.settings_digest(config)


def _closed_form_rms(model: morphable.MorphableModel, points: np.ndarray, iterations: int = 4) -> float:
  """Median over frames of the 3-D RMS (crop px) of a similarity-aligned, unbounded least-squares fit of the model's
  shape to the detector's 3-D points (T, 468, 3) (image y down -> model y up)."""
  mean = np.asarray(model.mean, np.float64)
  basis = np.concatenate([np.asarray(model.id_basis) * np.asarray(model.id_std)[:, None, None],
                          np.asarray(model.exp_basis) * np.asarray(model.exp_std)[:, None, None]]).reshape(
                              -1, mean.size).T.astype(np.float64)
  out = []
  for y in points.astype(np.float64) * np.array([1.0, -1.0, 1.0]):
    shape = mean
    for _ in range(iterations):  # Umeyama similarity of shape onto y, then the coefficients in the model frame.
      mx, my = shape.mean(0), y.mean(0)
      u, s, vt = np.linalg.svd((y - my).T @ (shape - mx))
      d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
      rot = u @ d @ vt
      scale = np.trace(np.diag(s) @ d) / ((shape - mx) ** 2).sum()
      in_model = ((y - my) @ rot) / scale + mx
      coef = np.linalg.lstsq(basis, (in_model - mean).ravel(), rcond=None)[0]
      shape = mean + (basis @ coef).reshape(mean.shape)
    fitted = scale * (shape - shape.mean(0)) @ rot.T + my
    out.append(np.sqrt(((fitted - y) ** 2).sum(-1).mean()))
  return float(np.median(out))


@needs_models
def test_learned_default_fits_a_held_out_person_better(fixtures_dir):
  """On a held-out person's frames (may.mp4, not among the model's clips) the learned default fits the detector's
  points more closely than the data-free model."""
  from headgan_jax.tracking import track
  path = fixtures_dir / 'extra' / 'may.mp4'
  if not path.exists():
    pytest.skip(f'{path} not found')
  config = paper.get_config()
  tracker = track.Tracker(config)
  frames, _ = clips_lib.read_clip_frames(str(path), 12)
  loc = tracker.locate(frames, str(path))
  assert loc.rejected is None
  learned = _closed_form_rms(tracker.model, loc.points)
  data_free = _closed_form_rms(face_model.detector_default_model(tracker.mesh), loc.points)
  assert learned < 0.7 * data_free, (learned, data_free)
