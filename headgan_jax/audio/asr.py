"""Speech-content features h^(aH): one 27-class character vector per audio part a_t (Section 3.2).

The paper takes character-level logits from DeepSpeech [14]; the authors' code turns DeepSpeech's transcript (one
token per character, with start times) into a one-hot character per video frame. Classes follow the authors:
'a'..'z' -> 0..25 and everything else (space, silence, CTC blank, apostrophe, digits) -> 26 = BLANK.

Backends (all satisfy `AsrBackend`):
- `PocketSphinxBackend` (default, offline, embedded model of `pocketsphinx`): word timings from its decoder; each
  word's letters share its duration equally, gaps / silences / fillers are BLANK. Stands in for DeepSpeech, whose
  model cannot be had here.
- `CharModelBackend` (`config.audio.asr_backend = 'deepspeech'`): runs a user-supplied acoustic model with a
  DeepSpeech-style output, (steps, 29) character logits over DeepSpeech's alphabet [' ', 'a'..'z', "'", CTC blank],
  the steps spread evenly over the input. Contract: input float32 waveform (1, N) at 16 kHz in [-1, 1]; output
  (1, steps, 29) or (steps, 29). Files: TorchScript (.pt / .pth / .ts / .torchscript, run with torch) or ONNX (.onnx,
  needs onnxruntime). The `deepspeech` / `stt` packages have no wheels for Python 3.11, so their .pbmm / .tflite files
  need wrapping (their MFCC front end included) into one of these.

Parts whose RMS is below SILENCE_DB dBFS (digital or near-digital silence) are BLANK whatever the model says:
recognisers hallucinate words in silence.

Per part, classes are sampled at SUBSAMPLES evenly spaced instants inside the part and averaged (soft), or the most
frequent class is taken (one-hot, the default, as the authors'): every output row sums to 1.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Protocol, runtime_checkable

import numpy as np

from headgan_jax.audio import io as audio_io
from headgan_jax.errors import ConfigError, WeightFileError

NUM_CHARS = 27
BLANK = 26
SUBSAMPLES = 16  # Instants per part at which classes are sampled.
ASR_SAMPLE_RATE = 16_000  # Both pocketsphinx's en-us model and DeepSpeech want 16 kHz.
SILENCE_DB = -60.0  # Part RMS (dB re full scale 1.0) below which a part is silence.
DEEPSPEECH_ALPHABET = (' ',) + tuple('abcdefghijklmnopqrstuvwxyz') + ("'", '<blank>')


@runtime_checkable
class AsrBackend(Protocol):
  """Character content of speech: (T, 27) per-part class scores for the parts a_1:T of a waveform."""

  def part_chars(self, waveform: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
    ...


@dataclasses.dataclass(frozen=True)
class CharSegments:
  """Characters with time spans in seconds: starts, ends (C,) float64, classes (C,) int32; sorted, disjoint."""
  starts: np.ndarray
  ends: np.ndarray
  classes: np.ndarray


def char_class(ch: str) -> int:
  """'a'..'z' (any case) -> 0..25, anything else -> BLANK."""
  o = ord(ch.lower()) if len(ch) == 1 else -1
  return o - ord('a') if ord('a') <= o <= ord('z') else BLANK


def words_to_chars(words: list[tuple[str, float, float]]) -> CharSegments:
  """Word spans -> character spans; each word's letters split its span equally. Fillers ('<sil>', '[NOISE]') and
  words with no letter are dropped (their time is BLANK)."""
  starts, ends, classes = [], [], []
  for word, start, end in words:
    if word.startswith(('<', '[')):
      continue
    spelling = re.sub(r'\(\d+\)$', '', word)  # pocketsphinx marks alternate pronunciations "was(2)".
    letters = [char_class(c) for c in spelling]
    if not any(c != BLANK for c in letters) or end <= start:
      continue
    edges = np.linspace(start, end, len(letters) + 1)
    starts.extend(edges[:-1])
    ends.extend(edges[1:])
    classes.extend(letters)
  return CharSegments(np.asarray(starts, np.float64), np.asarray(ends, np.float64), np.asarray(classes, np.int32))


def sample_times(fps: float, num_frames: int) -> np.ndarray:
  """(T, SUBSAMPLES) instants in seconds, evenly spaced inside each part [t / fps, (t + 1) / fps)."""
  offsets = (np.arange(SUBSAMPLES) + 0.5) / SUBSAMPLES
  return (np.arange(num_frames)[:, None] + offsets[None, :]) / fps


def segments_to_parts(segments: CharSegments, fps: float, num_frames: int, soft: bool = False) -> np.ndarray:
  """(T, 27) float32: share of each part's instants that fall in each class (soft), or the one-hot majority."""
  times = sample_times(fps, num_frames)
  # Latest segment starting at or before each instant; BLANK when that segment has already ended.
  idx = np.searchsorted(segments.starts, times, side='right') - 1
  safe = np.clip(idx, 0, max(len(segments.starts) - 1, 0))
  inside = (idx >= 0) & (len(segments.starts) > 0)
  if len(segments.starts):
    inside &= times < segments.ends[safe]
    classes = np.where(inside, segments.classes[safe], BLANK)
  else:
    classes = np.full(times.shape, BLANK)
  return _classes_to_parts(np.eye(NUM_CHARS, dtype=np.float32)[classes], soft)


def _classes_to_parts(probs: np.ndarray, soft: bool) -> np.ndarray:
  """(T, SUBSAMPLES, 27) class probabilities at each instant -> (T, 27) mean, or its one-hot argmax."""
  mean = probs.mean(axis=1)
  if soft:
    return mean.astype(np.float32)
  return np.eye(NUM_CHARS, dtype=np.float32)[np.argmax(mean, axis=-1)]


def silent_parts(waveform: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
  """(T,) bool: parts a_t of a mono waveform whose RMS is below SILENCE_DB (audio past the end counts as silent)."""
  x = audio_io.clip_to_frames(waveform, fps, num_frames, sample_rate).astype(np.float64)
  bounds = audio_io.part_bounds(fps, num_frames, sample_rate)
  energy = np.add.reduceat(x ** 2, bounds[:-1]) if x.size else np.zeros(num_frames)
  energy = np.where(np.diff(bounds) > 0, energy, 0.0)  # reduceat returns x[i] for empty parts.
  mean_sq = energy / np.maximum(np.diff(bounds), 1)
  return mean_sq < 10 ** (SILENCE_DB / 10)


def gate_silence(parts: np.ndarray, silent: np.ndarray) -> np.ndarray:
  """Sets silent parts to BLANK (one-hot)."""
  blank = np.eye(NUM_CHARS, dtype=parts.dtype)[BLANK]
  return np.where(silent[:, None], blank[None], parts)


def deepspeech_to_chars(logits: np.ndarray) -> np.ndarray:
  """(steps, 29) logits over DeepSpeech's alphabet -> (steps, 27) probabilities over our classes.

  Letters keep their probability; space, apostrophe and the CTC blank are summed into BLANK.
  """
  logits = np.asarray(logits, np.float64)
  if logits.ndim != 2 or logits.shape[-1] != len(DEEPSPEECH_ALPHABET):
    raise ValueError(f'expected (steps, {len(DEEPSPEECH_ALPHABET)}) logits, got {logits.shape}')
  z = logits - logits.max(axis=-1, keepdims=True)
  p = np.exp(z)
  p /= p.sum(axis=-1, keepdims=True)
  return np.concatenate([p[:, 1:27], p[:, [0, 27, 28]].sum(axis=-1, keepdims=True)], axis=-1)


def steps_to_parts(step_probs: np.ndarray, duration_s: float, fps: float, num_frames: int,
                   soft: bool = False) -> np.ndarray:
  """(steps, 27) probabilities of evenly spaced model steps covering `duration_s` -> (T, 27) per part.

  Each instant of a part takes the step that covers it; instants after the audio's end are BLANK.
  """
  times = sample_times(fps, num_frames)
  steps = step_probs.shape[0]
  step_idx = np.floor(times / duration_s * steps).astype(np.int64)
  valid = (step_idx < steps) & (steps > 0)
  blank = np.eye(NUM_CHARS, dtype=np.float32)[BLANK]
  padded = np.concatenate([np.asarray(step_probs, np.float32), blank[None]])
  probs = padded[np.where(valid, step_idx, steps)]
  return _classes_to_parts(probs, soft)


class PocketSphinxBackend:
  """Character classes from pocketsphinx's word timings (embedded en-us model, offline).

  The decoder (about 1 s to load its language model) is built on first use and kept by this object: reuse one
  backend for many clips. `decoder_options` go to `pocketsphinx.Decoder` (e.g. fwdflat=False, bestpath=False
  decodes about twice as fast for a slightly worse transcript); the default is pocketsphinx's own, most accurate.
  """

  def __init__(self, soft: bool = False, **decoder_options):
    self.soft = soft
    self.decoder_options = decoder_options
    self._decoder = None

  def _get_decoder(self):
    if self._decoder is None:
      from pocketsphinx import Decoder  # pylint: disable=g-import-not-at-top
      self._decoder = Decoder(samprate=ASR_SAMPLE_RATE, loglevel='FATAL', **self.decoder_options)
    return self._decoder

  def transcribe(self, waveform: np.ndarray, sample_rate: int) -> list[tuple[str, float, float]]:
    """Words with start and end time in seconds (fillers such as '<sil>' included)."""
    x = audio_io.resample(waveform, sample_rate, ASR_SAMPLE_RATE)
    pcm = (np.clip(x, -1.0, 1.0) * 32767).astype('<i2').tobytes()
    decoder = self._get_decoder()
    frame_s = 1.0 / float(decoder.config['frate'])
    # The feature extractor's CMN state carries over from the last utterance: reset it, so a clip's transcript
    # depends on the clip alone (not on which clips this backend decoded before; a resumed dataset build needs it).
    decoder.reinit_feat()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    if decoder.hyp() is None:  # Nothing recognised (e.g. a clip shorter than the model's context).
      return []
    return [(s.word, s.start_frame * frame_s, (s.end_frame + 1) * frame_s) for s in decoder.seg() or []]

  def part_chars(self, waveform: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
    silent = silent_parts(waveform, sample_rate, fps, num_frames)
    if silent.all():
      return gate_silence(np.zeros((num_frames, NUM_CHARS), np.float32), silent)
    parts = segments_to_parts(words_to_chars(self.transcribe(waveform, sample_rate)), fps, num_frames, self.soft)
    return gate_silence(parts, silent)


_TORCH_EXT = ('.pt', '.pth', '.ts', '.torchscript')


class CharModelBackend:
  """A user-supplied DeepSpeech-style acoustic model (TorchScript or ONNX; contract in the module docstring)."""

  def __init__(self, model_path: str, soft: bool = False):
    self.model_path = os.fspath(model_path)
    self.soft = soft
    if not self.model_path:
      raise WeightFileError("config.audio.asr_backend = 'deepspeech' needs config.audio.asr_model: the path of a "
                            'TorchScript or ONNX acoustic model with DeepSpeech-style (steps, 29) logits.')
    if not os.path.isfile(self.model_path):
      raise WeightFileError(f'{self.model_path}: acoustic model file not found.')
    ext = os.path.splitext(self.model_path)[1].lower()
    if ext in _TORCH_EXT:
      self._run = self._load_torch()
    elif ext == '.onnx':
      self._run = self._load_onnx()
    else:
      raise WeightFileError(f'{self.model_path}: unknown model format {ext!r}; expected one of '
                            f'{", ".join(_TORCH_EXT)} (TorchScript) or .onnx.')

  def _load_torch(self):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise WeightFileError(f'{self.model_path}: running a TorchScript model needs torch (pip install torch).') from e
    try:
      module = torch.jit.load(self.model_path, map_location='cpu').eval()
    except Exception as e:  # torch raises RuntimeError / ValueError / pickle errors on a bad file.
      raise WeightFileError(f'{self.model_path}: not a loadable TorchScript model: {e}') from e

    def run(x: np.ndarray) -> np.ndarray:
      with torch.inference_mode():
        return module(torch.from_numpy(x[None])).cpu().numpy()
    return run

  def _load_onnx(self):
    try:
      import onnxruntime  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise WeightFileError(f'{self.model_path}: running an ONNX model needs onnxruntime '
                            '(pip install onnxruntime), which is not installed.') from e
    try:
      session = onnxruntime.InferenceSession(self.model_path, providers=['CPUExecutionProvider'])
    except Exception as e:  # onnxruntime raises its own Fail / InvalidProtobuf types.
      raise WeightFileError(f'{self.model_path}: not a loadable ONNX model: {e}') from e
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x[None]})[0]

  def logits(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """(steps, 29) logits of the model for a waveform at any sample rate."""
    x = audio_io.resample(waveform, sample_rate, ASR_SAMPLE_RATE)
    out = np.asarray(self._run(x.astype(np.float32)))
    if out.ndim == 3 and out.shape[0] == 1:
      out = out[0]
    if out.ndim != 2 or out.shape[-1] != len(DEEPSPEECH_ALPHABET):
      raise WeightFileError(f'{self.model_path}: the model returned shape {out.shape}; expected (1, steps, '
                            f'{len(DEEPSPEECH_ALPHABET)}) or (steps, {len(DEEPSPEECH_ALPHABET)}) DeepSpeech logits.')
    if not np.all(np.isfinite(out)):
      raise WeightFileError(f'{self.model_path}: the model returned NaN or infinite logits.')
    return out

  def part_chars(self, waveform: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
    duration = np.asarray(waveform).shape[0] / float(sample_rate)
    probs = deepspeech_to_chars(self.logits(waveform, sample_rate))
    parts = steps_to_parts(probs, duration, fps, num_frames, self.soft)
    return gate_silence(parts, silent_parts(waveform, sample_rate, fps, num_frames))


def make_backend(config) -> AsrBackend:
  """The backend named by config.audio.asr_backend."""
  name = config.audio.asr_backend
  if name == 'pocketsphinx':
    return PocketSphinxBackend()
  if name == 'deepspeech':
    return CharModelBackend(config.audio.asr_model)
  raise ConfigError(f"config.audio.asr_backend = {name!r}: expected 'pocketsphinx' or 'deepspeech'.")
