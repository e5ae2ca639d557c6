"""TensorBoard logging without TensorFlow: scalars, images, hparams and text through tensorboardX, and a reader.

clu's metric writers were considered first: its `SummaryWriter` imports TensorFlow, and `clu.metric_writers` itself
imports that module, so it cannot even be imported without TensorFlow; its Torch writer needs torch's tensorboard
glue. tensorboardX writes the same event files with protobuf only.

One process writes (jax.process_index() == 0); on the others `MetricWriter` does nothing, so the training loop calls
it everywhere without branching. `read_events` reads event files back (tests, and users without TensorBoard).
"""
from __future__ import annotations

import glob
import io
import os
import struct
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from headgan_jax import config_files

SCALAR_PREFIX = 'train/'


class MetricWriter:
  """Writes TensorBoard event files under `logdir` when `enabled` (process 0), else does nothing."""

  def __init__(self, logdir: str | os.PathLike, enabled: bool = True):
    self._writer = None
    if enabled:
      import tensorboardX  # pylint: disable=import-outside-toplevel
      self._writer = tensorboardX.SummaryWriter(logdir=os.fspath(logdir), flush_secs=30)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._writer is not None:
      for tag, value in scalars.items():
        self._writer.add_scalar(tag, float(value), global_step=step)

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """images: tag -> (H, W, 3) uint8."""
    if self._writer is not None:
      for tag, image in images.items():
        self._writer.add_image(tag, np.asarray(image), global_step=step, dataformats='HWC')

  def write_hparams(self, config: ml_collections.ConfigDict, metric_tags: tuple[str, ...]) -> None:
    """The flattened config as TensorBoard hparams (linked to `metric_tags`) and as text."""
    if self._writer is None:
      return
    from tensorboardX.summary import hparams  # pylint: disable=import-outside-toplevel
    exp, ssi, sei = hparams(config_files.flatten(config), {tag: 0.0 for tag in metric_tags})
    for summary in (exp, ssi, sei):
      self._writer.file_writer.add_summary(summary)
    self._writer.add_text('config', '```\n' + str(config) + '\n```', global_step=0)

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def __enter__(self) -> 'MetricWriter':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _records(path: str):
  """Payloads of a TFRecord file (length, length CRC, data, data CRC; CRCs not checked)."""
  with open(path, 'rb') as f:
    while True:
      header = f.read(12)
      if len(header) < 12:
        return
      (length,) = struct.unpack('<Q', header[:8])
      payload = f.read(length)
      f.read(4)
      if len(payload) < length:
        return
      yield payload


def read_events(logdir: str | os.PathLike) -> dict[str, Any]:
  """Everything the event files directly under `logdir` hold, as
  {'scalars': {tag: [(step, value), ...]}, 'images': {tag: [(step, (H, W, C) uint8), ...]},
   'texts': {tag: [...]}, 'hparams': {name: value}}."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from tensorboardX.proto import event_pb2, plugin_hparams_pb2  # pylint: disable=import-outside-toplevel
  out: dict[str, Any] = {'scalars': {}, 'images': {}, 'texts': {}, 'hparams': {}}
  for path in sorted(glob.glob(os.path.join(os.fspath(logdir), 'events.out.tfevents.*'))):
    for payload in _records(path):
      event = event_pb2.Event.FromString(payload)
      for value in event.summary.value:
        kind = value.WhichOneof('value')
        if kind == 'simple_value':
          out['scalars'].setdefault(value.tag, []).append((event.step, value.simple_value))
        elif kind == 'image':
          image = np.asarray(Image.open(io.BytesIO(value.image.encoded_image_string)))
          out['images'].setdefault(value.tag, []).append((event.step, image))
        elif value.metadata.plugin_data.plugin_name == 'hparams':
          data = plugin_hparams_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
          if data.WhichOneof('data') == 'session_start_info':
            for name, v in data.session_start_info.hparams.items():
              out['hparams'][name] = getattr(v, v.WhichOneof('kind'))
        elif value.metadata.plugin_data.plugin_name == 'text':
          out['texts'].setdefault(value.tag, []).append(b''.join(value.tensor.string_val).decode())
  return out
