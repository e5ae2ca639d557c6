"""Character-class features h^(aH) per audio part (headgan_jax/audio/asr.py)."""

import numpy as np
import pytest

from configs import paper
from headgan_jax.audio import asr
from headgan_jax.errors import ConfigError, WeightFileError

LETTERS = 'abcdefghijklmnopqrstuvwxyz'


def test_char_classes():
  assert [asr.char_class(c) for c in 'azAZ'] == [0, 25, 0, 25]
  assert [asr.char_class(c) for c in " '9-"] == [asr.BLANK] * 4
  assert asr.NUM_CHARS == 27 and asr.BLANK == 26


def test_words_to_parts_exact_timing():
  words = [('<s>', 0.0, 0.1), ('hi', 0.2, 0.4), ('<sil>', 0.4, 0.5), ('was(2)', 0.5, 0.8), ('[NOISE]', 0.8, 1.0)]
  seg = asr.words_to_chars(words)
  assert [LETTERS[c] for c in seg.classes] == list('hiwas')
  np.testing.assert_allclose(seg.starts, [0.2, 0.3, 0.5, 0.6, 0.7])
  np.testing.assert_allclose(seg.ends, [0.3, 0.4, 0.6, 0.7, 0.8])
  parts = asr.segments_to_parts(seg, fps=10, num_frames=12)
  assert parts.shape == (12, 27) and parts.dtype == np.float32
  np.testing.assert_array_equal(parts.sum(-1), 1)
  decoded = ''.join((LETTERS + '_')[i] for i in parts.argmax(-1))
  assert decoded == '__hi_was____'
  soft = asr.segments_to_parts(seg, fps=5, num_frames=3, soft=True)
  np.testing.assert_allclose(soft[1, [asr.char_class('h'), asr.char_class('i')]], [0.5, 0.5])
  np.testing.assert_allclose(soft.sum(-1), 1, rtol=1e-6)
  empty = asr.segments_to_parts(asr.words_to_chars([]), fps=25, num_frames=4)
  np.testing.assert_array_equal(empty.argmax(-1), asr.BLANK)


def test_deepspeech_logits_mapping():
  logits = np.full((5, 29), -10.0)
  for row, col in enumerate([0, 1, 26, 27, 28]):  # ' ', 'a', 'z', "'", CTC blank.
    logits[row, col] = 10.0
  probs = asr.deepspeech_to_chars(logits)
  assert probs.shape == (5, 27)
  np.testing.assert_allclose(probs.sum(-1), 1, rtol=1e-9)
  np.testing.assert_array_equal(probs.argmax(-1), [asr.BLANK, 0, 25, asr.BLANK, asr.BLANK])
  # BLANK collects space + apostrophe + CTC blank.
  uniform = asr.deepspeech_to_chars(np.zeros((1, 29)))
  np.testing.assert_allclose(uniform[0, asr.BLANK], 3 / 29)
  np.testing.assert_allclose(uniform[0, :26], 1 / 29)
  with pytest.raises(ValueError):
    asr.deepspeech_to_chars(np.zeros((3, 28)))


def test_steps_to_parts_alignment():
  # 50 steps per second over 1 s, classes cycling a, b, c, ...; at 25 fps each part covers two steps.
  probs = np.eye(27)[np.arange(50) // 2 % 26]
  parts = asr.steps_to_parts(probs, duration_s=1.0, fps=25, num_frames=27)
  np.testing.assert_array_equal(parts.argmax(-1)[:25], np.arange(25) % 26)
  np.testing.assert_array_equal(parts.argmax(-1)[25:], asr.BLANK)  # After the audio ends.
  soft = asr.steps_to_parts(np.eye(27)[np.arange(50) % 2], 1.0, 25, 25, soft=True)
  np.testing.assert_allclose(soft[:, :2], 0.5)


def _write_energy_model(path):
  """A TorchScript acoustic model: 20 ms steps, 'a' where the step is loud, CTC blank where it is quiet."""
  torch = pytest.importorskip('torch')

  class Energy(torch.nn.Module):

    def forward(self, x):
      steps = x.shape[1] // 320
      e = (x[:, :steps * 320].reshape(x.shape[0], steps, 320) ** 2).mean(-1, keepdim=True)
      loud = (e > 1e-3).float()
      logits = torch.zeros(x.shape[0], steps, 29)
      logits[:, :, 1:2] = 20 * loud
      logits[:, :, 28:29] = 20 * (1 - loud)
      return logits

  torch.jit.script(Energy()).save(str(path))


def test_char_model_backend_torchscript(tmp_path):
  path = tmp_path / 'energy.pt'
  _write_energy_model(path)
  backend = asr.CharModelBackend(str(path))
  assert isinstance(backend, asr.AsrBackend)
  sr = 8000  # Resampled to 16 kHz for the model.
  t = np.arange(sr) / sr
  x = np.where(t >= 0.5, 0.5 * np.sin(2 * np.pi * 440 * t), 0.0).astype(np.float32)
  parts = backend.part_chars(x, sr, fps=10, num_frames=10)
  np.testing.assert_array_equal(parts.argmax(-1), [asr.BLANK] * 5 + [0] * 5)


def test_char_model_backend_errors(tmp_path):
  with pytest.raises(WeightFileError, match='asr_model'):
    asr.CharModelBackend('')
  with pytest.raises(WeightFileError, match='missing.pt.*not found'):
    asr.CharModelBackend(str(tmp_path / 'missing.pt'))
  for name in ('bad.pt', 'bad.onnx', 'model.pbmm'):
    (tmp_path / name).write_bytes(b'not a model' * 10)
    with pytest.raises(WeightFileError, match=name):
      asr.CharModelBackend(str(tmp_path / name))
  torch = pytest.importorskip('torch')
  torch.jit.script(torch.nn.Identity()).save(str(tmp_path / 'identity.pt'))
  backend = asr.CharModelBackend(str(tmp_path / 'identity.pt'))
  with pytest.raises(WeightFileError, match=r'identity.pt.*shape \(1, 16000\)'):
    backend.part_chars(np.zeros(16000, np.float32), 16000, 25, 25)


def test_make_backend():
  c = paper.get_config()
  assert isinstance(asr.make_backend(c), asr.PocketSphinxBackend)
  c.audio.asr_backend = 'deepspeech'
  with pytest.raises(WeightFileError, match='asr_model'):
    asr.make_backend(c)
  c.audio.asr_backend = 'whisper'
  with pytest.raises(ConfigError, match='asr_backend'):
    asr.make_backend(c)


@pytest.fixture(scope='module')
def espeak_speech(make_speech):
  return make_speech('hello world')


def test_pocketsphinx_speech_and_silence(espeak_speech):
  x, sr = espeak_speech
  backend = asr.PocketSphinxBackend()
  words = backend.transcribe(x, sr)
  spoken = [w for w, _, _ in words if not w.startswith(('<', '['))]
  assert spoken, words
  assert all(0 <= s < e <= len(x) / sr + 0.05 for _, s, e in words)
  num_frames = int(len(x) / sr * 25)
  parts = backend.part_chars(x, sr, 25, num_frames)
  assert parts.shape == (num_frames, 27)
  np.testing.assert_array_equal(parts.sum(-1), 1)
  letters = parts.argmax(-1)
  assert np.sum(letters != asr.BLANK) >= 5
  silence = backend.part_chars(np.zeros(sr, np.float32), sr, 25, 25)
  np.testing.assert_array_equal(silence.argmax(-1), asr.BLANK)


def test_silence_gate_threshold():
  sr, fps = 16000, 25
  t = np.arange(sr) / sr
  quiet = 10 ** (-70 / 20) * np.sqrt(2) * np.sin(2 * np.pi * 200 * t)  # RMS -70 dBFS.
  loud = 10 ** (-50 / 20) * np.sqrt(2) * np.sin(2 * np.pi * 200 * t)  # RMS -50 dBFS.
  x = np.concatenate([quiet, loud])
  silent = asr.silent_parts(x, sr, fps, 60)  # 10 parts past the audio's end.
  np.testing.assert_array_equal(silent, [True] * 25 + [False] * 25 + [True] * 10)
  parts = asr.gate_silence(np.eye(27, dtype=np.float32)[np.zeros(60, int)], silent)
  np.testing.assert_array_equal(parts.argmax(-1), np.where(silent, asr.BLANK, 0))


def test_pocketsphinx_gap_between_words(espeak_speech):
  x, sr = espeak_speech
  gap = np.zeros(sr, np.float32)
  y = np.concatenate([x, gap, x])
  fps = 25
  num_frames = int(len(y) / sr * fps)
  classes = asr.PocketSphinxBackend().part_chars(y, sr, fps, num_frames).argmax(-1)
  first, second = int(len(x) / sr * fps), int((len(x) + sr) / sr * fps)
  np.testing.assert_array_equal(classes[first + 1:second - 1], asr.BLANK)
  assert np.sum(classes[:first] != asr.BLANK) >= 5 and np.sum(classes[second:] != asr.BLANK) >= 5
