"""Reads a few frames of a fixture video for the metric tests (PyAV decode, PIL resize); test-only helper."""
from __future__ import annotations

import av
import numpy as np
from PIL import Image


def read_frames(path, count: int, size: int | None = None, start: int = 0, step: int = 1) -> np.ndarray:
  """(count, size, size, 3) uint8 RGB frames start, start + step, ... of a video (resized when size is given)."""
  wanted = set(range(start, start + count * step, step))
  frames = []
  with av.open(str(path)) as container:
    for i, frame in enumerate(container.decode(video=0)):
      if i in wanted:
        img = frame.to_image()
        if size is not None:
          img = img.resize((size, size), Image.BILINEAR)
        frames.append(np.asarray(img.convert('RGB')))
      if len(frames) == count:
        break
  if len(frames) < count:
    raise ValueError(f'{path} has fewer than {start + count * step} frames')
  return np.ascontiguousarray(np.stack(frames))
