"""The dataset tests' config (also given to the build command by file): paper settings at 64 px, short sequences."""
import ml_collections

from configs import paper


def get_config() -> ml_collections.ConfigDict:
  c = paper.get_config()
  c.image_size = 64
  c.data.demo_test_identity = 'talk-05'
  c.train.sequence_length = 4  # Several train records from a 0.7 s cut.
  c.data.min_sequence_length = 3
  c.track.fit_bucket = 32  # Short clips: pad the fit to 32 frames, not 64.
  c.data.num_workers = 0  # In-process reading: no worker start-up in tests.
  return c
