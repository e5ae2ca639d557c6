"""A tiny configuration for tests: 64x64 images, channel widths / 8, small discriminators."""
import ml_collections

from configs import paper


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """paper.py's config (its variants too: configs/tiny.py:ablation=no_flow) at the test size, synthetic data."""
  c = paper.get_config(arg)
  c.image_size = 64
  c.model.ngf = 4  # 4 -> 16 -> 64 channels.
  c.model.blocks.spade_hidden = 32
  c.disc.ndf = 8
  c.disc.max_channels = 64
  c.disc.mouth_size = 32
  c.train.batch_size = 2
  c.train.steps_per_epoch = 10
  c.train.log_every = 1
  c.train.checkpoint_every = 5
  c.train.image_every = 10
  c.train.image_examples = 2
  c.loss.use_vgg = False
  c.data.source = 'synthetic'
  c.data.num_workers = 0  # In-process reading: no worker start-up in tests.
  return c
