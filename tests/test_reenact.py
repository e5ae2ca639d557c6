"""reenact.py on the real fixtures with a checkpoint train.py wrote (the README main job's: 1 step of configs/demo.py
at 64 px on cuts of the fixture clips, tests/main_job_run.py): frame count, fps, sound and frame size of the mp4;
--audio; frames without a face; a video without sound; bad reference / checkpoint refused with one message; peak
memory of a long video vs a short one.

Driving clips are the fixture's driving.mp4 at 5 fps and 128x128 (25 frames for its 5 s), so that the 20-second
video of the memory test (the 5 s looped 4 times, 100 frames) stays affordable on 2 CPU cores."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import reenact_helpers as rh
from headgan_jax import errors, reenact
from headgan_jax.commands import reenact as reenact_command

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='session')
def workdir(main_job):
  """A training work folder: the README main job's (conftest.py's `main_job`: config.json, assets and the
  checkpoint of 1 train step of configs/demo.py at 64 px, written by train.py), trained once per test run."""
  return main_job.workdir


@pytest.fixture(scope='session')
def reenactor(workdir):
  r, ckpt = reenact.reenactor_from_checkpoint(str(workdir), batch_size=8)
  assert ckpt.step == 1
  return r


@pytest.fixture(scope='session')
def clips(tmp_path_factory, fixtures_dir):
  d = tmp_path_factory.mktemp('driving')
  return dict(talk=rh.small_driving(fixtures_dir, d / 'talk.mp4'),
              gaps=rh.small_driving(fixtures_dir, d / 'gaps.mp4', black=(7, 8, 9), audio=False))


def test_output_has_every_frame_the_fps_the_sound_and_the_size(reenactor, clips, fixtures_dir, tmp_path):
  out, side, grid = tmp_path / 'out.mp4', tmp_path / 'side.mp4', tmp_path / 'grid.png'
  s = reenactor.run(str(fixtures_dir / 'reference.png'), str(clips['talk']), str(out), side_by_side_out=str(side),
                    grid_out=str(grid), progress=False)
  p = rh.probe(out)
  assert p['frames'] == s.num_frames == 25 and p['fps'] == 5.0
  assert (p['height'], p['width']) == (64, 64)  # config.image_size of the checkpoint.
  assert abs(p['audio_seconds'] - 25 / 5.0) <= 1 / 5.0
  src = rh.probe(clips['talk'])['audio']  # The driving clip's own sound, at its 16 kHz.
  assert p['audio_rate'] == reenact.OUTPUT_AUDIO_RATE and np.abs(p['audio']).max() > 0.05
  assert abs(np.sqrt(np.mean(p['audio'] ** 2)) - np.sqrt(np.mean(src ** 2))) < 0.3 * np.sqrt(np.mean(src ** 2))
  q = rh.probe(side)
  assert (q['frames'], q['height'], q['width']) == (25, 64, 192) and q['audio_seconds'] == p['audio_seconds']
  from headgan_jax.tracking import video as video_lib
  g = video_lib.read_image(grid)
  assert g.shape == (4 * 64, 4 * 64, 3)  # reference | driving | x_t | generated, 4 frames.
  assert s.no_face_frames == 0 and not os.listdir(tmp_path).count('.tmp')


def test_other_audio_drives_the_mouth_and_the_sound(reenactor, clips, fixtures_dir, tmp_path, make_speech):
  import soundfile as sf
  speech, rate = make_speech('hello, this is another voice')
  wav = tmp_path / 'speech.wav'
  sf.write(wav, speech, rate)
  assert abs(len(speech) / rate - 5.0) > 0.5  # Another length than the 5 s video.
  out = tmp_path / 'out.mp4'
  s = reenactor.run(str(fixtures_dir / 'reference.png'), str(clips['talk']), str(out), audio=str(wav),
                    progress=False)
  p = rh.probe(out)
  assert p['frames'] == 25 and abs(p['audio_seconds'] - 5.0) <= 0.2 and s.audio == str(wav)
  # The sound is the new speech (resampled to 44.1 kHz), silence after it ends, not the driving clip's.
  import librosa
  want = librosa.resample(speech.astype(np.float32), orig_sr=rate, target_sr=p['audio_rate'])
  got, n = p['audio'], min(len(want), len(p['audio'])) - 2048
  seg = want[4096:n - 2048]
  lag = int(np.argmax(np.correlate(got[2048:n], seg, 'valid'))) - 2048  # The AAC delay left, if any.
  corr = np.corrcoef(got[4096 + lag:n - 2048 + lag], seg)[0, 1]
  assert np.abs(got[len(want) + 4096:]).max() < 0.02  # Silence after the speech.
  assert corr > 0.9, (corr, lag)


def test_frames_without_a_face_and_a_silent_video(reenactor, clips, fixtures_dir, tmp_path):
  said = []
  s = reenactor.run(str(fixtures_dir / 'reference.png'), str(clips['gaps']), str(tmp_path / 'o.mp4'),
                    progress=False, say=said.append)
  assert s.no_face_frames == 3 and s.no_face_first == [7, 8, 9]
  assert len(said) == 1 and 'has no audio stream' in said[0] and s.audio is None
  p = rh.probe(tmp_path / 'o.mp4')
  assert p['frames'] == 25 and p['audio'] is None


def test_keep_last_good_and_windows():
  class T:  # The fields keep_last_good reads from a ClipTrack.
    valid = np.array([False, True, False, False, True])
    p_exp = np.arange(5, dtype=np.float32)[:, None]
    rotation, translation, scale = np.zeros((5, 6)), np.zeros((5, 2)), np.arange(5.0)
    landmarks = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((1, 468, 2))  # The landmarks ablation's.
  arrays, bad, last = reenact.keep_last_good(T, None)
  assert arrays['p_exp'][:, 0].tolist() == [1, 1, 1, 1, 4] and bad.tolist() == [1, 0, 1, 1, 0]
  assert arrays['landmarks'][:, 0, 0].tolist() == [1, 1, 1, 1, 4]
  T.valid = np.array([False, False, True, True, True])
  arrays, _, _ = reenact.keep_last_good(T, last)  # The next chunk starts with the last good frame of this one.
  assert arrays['p_exp'][:, 0].tolist() == [4, 4, 2, 3, 4]
  x = np.arange(4, dtype=np.float32).reshape(4, 1, 1, 1) * np.ones((1, 1, 1, 3))
  w = reenact.drive_windows(x, np.repeat(x[:1], 2, 0))
  assert w.shape == (4, 1, 1, 9) and w[:, 0, 0, ::3].tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3]]


def _cli(*args):
  return subprocess.run([sys.executable, str(REPO / 'reenact.py'), *map(str, args), '--no-progress'],
                        capture_output=True, text=True, cwd=REPO, timeout=600)


def test_reference_without_a_face_is_refused(reenactor, clips, tmp_path, capsys):
  noise = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
  from headgan_jax.tracking import video as video_lib
  video_lib.write_image(tmp_path / 'noise.png', noise)
  with pytest.raises(errors.NoFaceFoundError, match='noise.png'):
    reenactor.run(str(tmp_path / 'noise.png'), str(clips['talk']), str(tmp_path / 'o.mp4'), progress=False)
  assert not (tmp_path / 'o.mp4').exists()


def test_checkpoint_of_another_config_is_refused(workdir, fixtures_dir, tmp_path, capsys):
  folder, config_json, step = reenact.find_checkpoint(workdir / 'checkpoints' / '1')  # One checkpoint's folder.
  assert (step, config_json) == (1, str(workdir / 'config.json'))
  other = tmp_path / 'other'
  shutil.copytree(workdir / 'checkpoints', other / 'checkpoints')
  config = json.loads((workdir / 'config.json').read_text())
  config['model']['ngf'] = 16
  (other / 'config.json').write_text(json.dumps(config))
  inputs = ['--reference', str(fixtures_dir / 'reference.png'), '--driving', str(fixtures_dir / 'driving.mp4')]
  code = reenact_command.main(['--checkpoint', str(other), *inputs, '--out', str(tmp_path / 'o.mp4')])
  err = capsys.readouterr().err
  assert code == 2 and 'written for another config' in err and 'Traceback' not in err
  assert reenact_command.main(['--checkpoint', str(tmp_path / 'none'), *inputs, '--out', str(tmp_path / 'o.mp4')]) == 2
  assert 'no such folder' in capsys.readouterr().err
  # Missing inputs are refused before the checkpoint is read (one line naming the file).
  assert reenact_command.main(['--checkpoint', str(other), '--reference', 'r.png', '--driving', 'd.mp4', '--out',
                       str(tmp_path / 'o.mp4')]) == 2
  assert 'r.png: file not found (the reference image).' in capsys.readouterr().err


@pytest.mark.slow
def test_peak_memory_of_a_long_video_stays_near_a_short_ones(workdir, fixtures_dir, tmp_path):
  """5 s and 20 s of driving video (5 fps, 128 px: 25 and 100 frames; 1 and 2 tracking chunks of 64 frames)
  reenacted in one subprocess, short first: peak RSS after each (ru_maxrss never goes down, so the long run may only
  add what it needs beyond the short). (60 s until 2026-12-03 afternoon, then 30 s: the peak RSS ratio was 1.00x at
  12x and at 6x the short video's length; 4x, two chunks, shows streaming as well at two thirds of 6x's cost.)"""
  short = rh.small_driving(fixtures_dir, tmp_path / 'short.mp4')
  long = rh.small_driving(fixtures_dir, tmp_path / 'long.mp4', loops=4)
  code = (
      'import json, resource, sys\n'
      'from headgan_jax import compilation_cache, reenact\n'
      'compilation_cache.enable()\n'
      f'r, _ = reenact.reenactor_from_checkpoint({str(workdir)!r})\n'
      'peaks = []\n'
      f'for d in ({str(short)!r}, {str(long)!r}):\n'
      f'  s = r.run({str(fixtures_dir / "reference.png")!r}, d, d + ".out.mp4", progress=False)\n'
      '  peaks.append((s.num_frames, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n'
      'print(json.dumps(peaks))\n')
  # The test process's environment (its 8 fake CPU devices too; reenact.py uses one): the persistent compile cache
  # keys programs by the client's device count, so this way the subprocess and the test workers share their
  # compiled tracker fits, renderer and G.
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO, timeout=900,
                        env={**os.environ, 'PYTHONPATH': str(REPO)})
  assert proc.returncode == 0, proc.stderr[-3000:]
  (n_short, rss_short), (n_long, rss_long) = json.loads(proc.stdout.strip().splitlines()[-1])
  assert (n_short, n_long) == (25, 100)
  print(f'peak RSS: 5 s video {rss_short / 1024:.0f} MiB, 20 s video {rss_long / 1024:.0f} MiB '
        f'({rss_long / rss_short:.2f}x)')
  assert rss_long <= 1.5 * rss_short
