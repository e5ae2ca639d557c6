"""The loss-curve export (train/curves.py): resumed runs' repeated steps, smoothing, the PNG from real event files."""
import numpy as np
from PIL import Image
from tensorboardX import SummaryWriter

from headgan_jax.commands import curves as curves_command
from headgan_jax.train import curves
from headgan_jax.train.metric_writer import read_events


def test_a_resumed_runs_repeated_steps_take_the_newest_value():
  steps, values = curves.series([(0, 5.0), (20, 4.0), (40, 3.0), (20, 9.0), (40, 8.0), (60, 7.0)])
  np.testing.assert_array_equal(steps, [0, 20, 40, 60])
  np.testing.assert_array_equal(values, [5.0, 9.0, 8.0, 7.0])


def test_smoothing_is_a_centred_mean_that_shrinks_at_the_ends():
  np.testing.assert_allclose(curves.smoothed(np.array([0.0, 3.0, 6.0, 9.0]), 3), [1.5, 3.0, 6.0, 7.5])
  np.testing.assert_allclose(curves.smoothed(np.array([1.0, 2.0, 3.0]), 25), [1.5, 2.0, 2.5])  # window longer than the data


def test_curves_png_from_event_files_of_a_resumed_run(tmp_path):
  logdir = tmp_path / 'run' / 'tensorboard'
  for start in (0, 40):  # the second writer is the resumed run, repeating steps 40-60
    with SummaryWriter(str(logdir), filename_suffix='.b' if start else '') as w:  # names sort oldest first
      for step in range(start, 100 if start else 61, 20):
        w.add_scalar('train/g_l1', 1.0 / (1 + step), step)
        w.add_scalar('train/d_total', 2.0 + (start > 0), step)
  scalars = read_events(logdir)['scalars']
  _, d_total = curves.series(scalars['train/d_total'])
  np.testing.assert_array_equal(d_total, [2.0, 2.0, 3.0, 3.0, 3.0])
  out = tmp_path / 'curves.png'
  assert curves_command.main(['--workdir', str(tmp_path / 'run'), '--out', str(out), '--smooth', '3']) == 0
  assert sorted(curves.plot(scalars, str(out))) == ['train/d_total', 'train/g_l1']
  with Image.open(out) as image:
    assert image.size[0] > 500 and image.size[1] > 200


def test_a_folder_without_event_files_is_one_clear_error(tmp_path, capsys):
  assert curves_command.main(['--workdir', str(tmp_path), '--out', str(tmp_path / 'c.png')]) == 2
  assert 'tensorboard does not exist' in capsys.readouterr().err
  (tmp_path / 'tensorboard').mkdir()
  assert curves_command.main(['--workdir', str(tmp_path), '--out', str(tmp_path / 'c.png')]) == 2
  assert 'no train/* scalars' in capsys.readouterr().err
