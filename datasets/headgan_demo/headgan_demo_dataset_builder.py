"""headgan_demo: the demo set of HeadGAN, from a folder of short real talking-head clips (one person per file).

Default folder: config.data.demo_dir (../shared/fixtures: driving.mp4 and demo/talk-01..05.mp4, six identities).
Held-out protocol: the identity config.data.demo_test_identity is never seen in training (its whole clip is 'test',
for cross-identity reenactment); of every other clip the first 1 - config.data.test_fraction of the frames are
'train' (cut into config.data.sequence_length-frame records) and the rest 'test' (self-reenactment on unseen frames).

  python -m headgan_jax.data.build demo --image_size 64 [--data_dir DIR] [--clips_dir FOLDER]
"""
from __future__ import annotations

import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _REPO not in sys.path:  # Loaded by file path (TFDS tooling, headgan_jax.data.build): find the project.
  sys.path.insert(0, _REPO)

from headgan_jax import errors  # noqa: E402
from headgan_jax.data import building  # noqa: E402

_, _Base = building.builder_base()


class Builder(_Base):
  """HeadGAN demo set: real talking heads with speech, a held-out identity and held-out frames."""

  def __init__(self, *, clips_dir: str | None = None, **kwargs):
    self._clips_dir = clips_dir
    super().__init__(**kwargs)

  def _split_generators(self, dl_manager):
    del dl_manager
    c = self.project_config
    folder = self._clips_dir or c.data.demo_dir
    clips = building.list_demo_clips(folder)
    test_id = c.data.demo_test_identity
    if test_id not in {clip.identity for clip in clips}:
      raise errors.DatasetError(f'config.data.demo_test_identity = {test_id!r} is not a clip of {folder} '
                                f'({", ".join(clip.identity for clip in clips)}).')
    items = [(clip, building.Parts('demo', clip.identity == test_id, float(c.data.test_fraction))) for clip in clips]
    by_split = building.generate_in_process(self, items)
    return {split: self._generate_examples(records) for split, records in by_split.items() if records}

  def _generate_examples(self, records):
    yield from records
