"""One exception type per family of bad input, each with a message a user can act on.

Catch `HeadGANError` to handle any of them; command-line entry points print the message and exit non-zero
instead of showing a traceback.
"""
from __future__ import annotations


class HeadGANError(Exception):
  """Base class of every error this project raises on bad input or bad configuration."""


class ConfigError(HeadGANError, ValueError):
  """A config field holds a value that cannot work (names the field and the value)."""


class DataError(HeadGANError, ValueError):
  """Input data (a training batch, a network input) has the wrong shape, dtype or values (names the field)."""


class WeightFileError(HeadGANError):
  """A weight file (VGG19, InceptionV3, I3D, ArcFace, DeepSpeech) is missing, corrupt or of the wrong layout."""


class FaceModelError(HeadGANError):
  """A 3DMM file is missing, corrupt, or its arrays have inconsistent shapes."""


class LandmarkError(HeadGANError, ValueError):
  """Landmarks of the wrong shape, with NaN/inf values, or not matching the 3DMM's landmark count."""


class AudioError(HeadGANError):
  """An audio or video file has no readable audio: empty, no audio stream, corrupt header, or silence only."""


class VideoError(HeadGANError):
  """A video file cannot be decoded, or has no frames."""


class NoFaceFoundError(HeadGANError):
  """No face was detected in a frame of a video (or in an image)."""

  def __init__(self, path: str, frame: int | None = None):
    where = f'{path}' if frame is None else f'{path}, frame {frame}'
    super().__init__(f'No face found in {where}.')
    self.path = path
    self.frame = frame


class MetricInputError(HeadGANError, ValueError):
  """Arrays given to a metric or an evaluator have the wrong shape, range or values (names the array and why)."""


class NonFiniteLossError(HeadGANError, FloatingPointError):
  """Training produced a NaN or inf loss term (names the step, the terms and the last good checkpoint)."""


class DatasetError(HeadGANError):
  """A prepared dataset (TFDS builder output, clip cache, statistics) is missing, corrupt or built with other
  settings than the config asks for."""


class CheckpointError(HeadGANError):
  """A checkpoint is missing, unreadable, or was written for another config than the one saved beside it."""


class WorkdirBusyError(HeadGANError):
  """A work folder is in use by another live training run (names its process id, host and start time)."""
