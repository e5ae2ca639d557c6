"""headgan_demo: the demo set of HeadGAN, from a folder of short real talking-head clips (one person per file).

Default folder: config.data.demo_dir (../shared/fixtures: driving.mp4, demo/talk-01..05.mp4 and extra/*.mp4, 39
identities), every clip cut to its first building.DEMO_MAX_FRAMES frames (the `max_frames` argument; 0 = whole clips).
Held-out protocol: the identities of building.DEMO_HELD_OUT (talk-05, pcavs-00473-bald-older-man, grid-woman-pink-top,
may) and config.data.demo_test_identity are never seen in training (their whole clip is 'test', for unseen- and
cross-identity reenactment); of every other clip the first 1 - config.data.test_fraction of the frames are 'train'
(cut into config.data.sequence_length-frame records) and the rest 'test' (self-reenactment on unseen frames). A
folder holding fewer clips (any subset, e.g. the tests' two short cuts) holds out those of them that are listed.

  python -m headgan_jax.data.build demo --image_size 64 [--data_dir DIR] [--clips_dir FOLDER]
"""
from __future__ import annotations

from headgan_jax.data import building  # The project is installed (scripts/setup.sh: pip install -e .).

_, _Base = building.builder_base()


class Builder(_Base):
  """HeadGAN demo set: real talking heads with speech, held-out identities and held-out frames."""

  def __init__(self, *, clips_dir: str | None = None, max_frames: int = building.DEMO_MAX_FRAMES, **kwargs):
    self._clips_dir = clips_dir
    self._max_frames = int(max_frames)
    super().__init__(**kwargs)

  def _split_generators(self, dl_manager):
    del dl_manager
    c = self.project_config
    folder = self._clips_dir or c.data.demo_dir
    items = building.demo_items(folder, c.data.demo_test_identity, float(c.data.test_fraction), self._max_frames)
    by_split = building.generate_in_process(self, items)
    return {split: self._generate_examples(records) for split, records in by_split.items() if records}

  def _generate_examples(self, records):
    yield from records
